"""app.services.ingest: the rules every song meets, whichever way it comes (upload or indexer)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from app.services.ingest import AudioRules, UnusableAudio, decode_song, prepare_song
from model.audio import SAMPLE_RATE, AudioDecodeError, AudioErrorReason


def wav(seconds: float, *, silent: bool = False) -> bytes:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    y = np.zeros_like(t) if silent else 0.3 * np.sin(2 * np.pi * 440.0 * t)
    buf = io.BytesIO()
    sf.write(buf, y.astype(np.float32), SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("data", "rules", "reason"),
    [
        (b"GIF89a definitely not audio" * 10, AudioRules(), AudioErrorReason.UNSUPPORTED),
        (b"OggS" + b"\x00garbage" * 200, AudioRules(), AudioErrorReason.UNDECODABLE),
        (wav(4.0), AudioRules(max_seconds=2.0), AudioErrorReason.TOO_LONG),
        (wav(1.0), AudioRules(), AudioErrorReason.TOO_SHORT),
        (wav(5.0, silent=True), AudioRules(), AudioErrorReason.NO_CLIPS),
    ],
    ids=["not-audio", "corrupt-ogg", "too-long", "too-short", "silent"],
)
def test_refusals_name_the_reason(data: bytes, rules: AudioRules, reason: AudioErrorReason) -> None:
    with pytest.raises(AudioDecodeError) as err:
        prepare_song(data, rules, tagger=False)
    assert err.value.reason is reason, str(err.value)


def test_bytes_and_files_meet_the_same_rules(tmp_path: Path) -> None:
    path = tmp_path / "short.wav"
    path.write_bytes(wav(0.5))
    for source in (path, path.read_bytes()):
        with pytest.raises(UnusableAudio) as err:
            decode_song(source, AudioRules())
        assert err.value.reason is AudioErrorReason.TOO_SHORT and round(err.value.duration, 2) == 0.5
    song = prepare_song(wav(5.0), AudioRules(hop_seconds=1.0), tagger=False)
    assert len(song.starts) == len(song.features) >= 3 and song.duration == pytest.approx(5.0, abs=0.01)
