"""Decoding (model.audio) and the 193 x 87 clip features (model.features), on real components."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf

from model.audio import (
    CLIP_FRAMES,
    SAMPLE_RATE,
    AudioDecodeError,
    load_audio,
    probe_duration,
)
from model.features import (
    N_FEATURES,
    FeatureStats,
    clip_frame_starts,
    cut_clips,
    feature_rows,
    frame_features,
)

SR = SAMPLE_RATE


def tone(freq: float, seconds: float, amp: float = 0.5, sr: int = SR) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def dominant_hz(y: np.ndarray, sr: int = SR) -> float:
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return float(np.fft.rfftfreq(len(y), 1 / sr)[np.argmax(spec)])


# ---------------------------------------------------------------- decoding

FORMATS = {
    # extension: (soundfile format, subtype, native rate)
    "wav": ("WAV", "PCM_16", 44100),
    "flac": ("FLAC", "PCM_16", 44100),
    "ogg": ("OGG", "VORBIS", 44100),
    "opus": ("OGG", "OPUS", 48000),
    "mp3": ("MP3", "MPEG_LAYER_III", 44100),
}


def _stereo_tone(rate: int, seconds: float = 3.0) -> np.ndarray:
    """Left: 440 Hz at 0.5; right: silent. A channel mean gives amplitude 0.25."""
    left = tone(440.0, seconds, 0.5, rate)
    return np.stack([left, np.zeros_like(left)], axis=1)


@pytest.mark.parametrize("ext", list(FORMATS))
def test_decode_formats_to_mono_22k(ext: str, tmp_path: Path) -> None:
    fmt, subtype, rate = FORMATS[ext]
    path = tmp_path / f"tone.{ext}"
    sf.write(path, _stereo_tone(rate), rate, format=fmt, subtype=subtype)

    for source in (path, path.read_bytes()):
        y = load_audio(source)
        assert y.dtype == np.float32 and y.ndim == 1
        # Lossy codecs add encoder delay/padding of a few ms, never tenths of a second.
        assert abs(len(y) / SR - 3.0) < 0.1, len(y) / SR
        assert abs(dominant_hz(y) - 440.0) < 3.0
        peak = float(np.percentile(np.abs(y), 99.9))
        assert 0.2 < peak < 0.32, peak  # averaged channels, not summed or left-only
    assert probe_duration(path) == pytest.approx(3.0, abs=0.1)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")
def test_decode_m4a_through_ffmpeg(tmp_path: Path) -> None:
    wav, m4a = tmp_path / "in.wav", tmp_path / "in.m4a"
    sf.write(wav, _stereo_tone(44100), 44100)
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(wav), "-c:a", "aac", str(m4a)],
        check=True,
    )
    with pytest.raises(sf.LibsndfileError):  # proves this goes through the fallback
        sf.info(str(m4a))
    for source in (m4a, m4a.read_bytes()):
        y = load_audio(source)
        assert y.dtype == np.float32 and y.ndim == 1
        assert abs(len(y) / SR - 3.0) < 0.1
        assert abs(dominant_hz(y) - 440.0) < 3.0
        assert 0.2 < float(np.percentile(np.abs(y), 99.9)) < 0.32
    assert probe_duration(m4a) == pytest.approx(3.0, abs=0.1)


def test_resamples_to_22050(tmp_path: Path) -> None:
    path = tmp_path / "8k.wav"
    sf.write(path, tone(1000.0, 2.0, sr=8000), 8000)
    y = load_audio(path)
    assert len(y) == 2 * SR
    assert abs(dominant_hz(y) - 1000.0) < 3.0


@pytest.mark.parametrize(
    "data",
    [
        np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        b"RIFF\x10\x00\x00\x00WAVEfmt garbage follows",
        b"<html><body>not audio</body></html>",
    ],
    ids=["random", "broken-wav-header", "html"],
)
def test_corrupt_bytes_rejected(data: bytes) -> None:
    with pytest.raises(AudioDecodeError) as err:
        load_audio(data)
    assert "\n" not in str(err.value) and str(err.value)
    assert probe_duration(data) is None


def test_empty_inputs_rejected(tmp_path: Path) -> None:
    with pytest.raises(AudioDecodeError, match="empty"):
        load_audio(b"")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioDecodeError, match="empty"):
        load_audio(empty)
    no_frames = io.BytesIO()
    sf.write(no_frames, np.zeros((0, 1), np.float32), SR, format="WAV")
    with pytest.raises(AudioDecodeError, match="no samples"):
        load_audio(no_frames.getvalue())


def test_missing_file_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_audio(tmp_path / "nope.wav")


def test_max_seconds(tmp_path: Path) -> None:
    path = tmp_path / "five.flac"
    sf.write(path, tone(440.0, 5.0), SR)
    assert probe_duration(path) == pytest.approx(5.0)
    with pytest.raises(AudioDecodeError, match="too long"):
        load_audio(path, max_seconds=2.0)
    with pytest.raises(AudioDecodeError, match="too long"):
        load_audio(path.read_bytes(), max_seconds=2.0)
    assert len(load_audio(path, max_seconds=6.0)) == 5 * SR


# ---------------------------------------------------------------- features


def test_feature_rows_cover_193() -> None:
    rows = feature_rows()
    assert list(rows) == ["mfcc", "chroma", "contrast", "tonnetz", "logmel"]
    sizes = [s.stop - s.start for s in rows.values()]
    assert sizes == [40, 12, 7, 6, 128]
    assert rows["mfcc"].start == 0 and rows["logmel"].stop == N_FEATURES == 193
    blocks = list(rows.values())
    assert all(a.stop == b.start for a, b in zip(blocks, blocks[1:], strict=False))


def test_clip_shape_and_count() -> None:
    y = tone(440.0, 10.0) + tone(660.0, 10.0, 0.2)
    clips = cut_clips(y)
    # Clip starts every round(2 * 22050 / 512) = 86 frames: 0, 86, ..., 344 (ends 9.99 s).
    assert clips.features.shape == (5, N_FEATURES, CLIP_FRAMES) == (5, 193, 87)
    assert clips.features.dtype == np.float32 and np.isfinite(clips.features).all()
    np.testing.assert_allclose(clips.starts, np.arange(5) * 86 * 512 / SR)
    np.testing.assert_allclose(clips.ends - clips.starts, 2.0)
    assert clips.n_silent == 0 and clips.n_short == 1  # the last 12 ms are dropped


@pytest.mark.parametrize(("hop", "expected"), [(0.5, 16), (1.0, 9), (2.0, 5), (4.0, 3)])
def test_hop_changes_clip_count(hop: float, expected: int) -> None:
    y = tone(440.0, 10.0)
    clips = cut_clips(y, hop_seconds=hop)
    assert len(clips) == expected
    step = round(hop * SR / 512) * 512 / SR
    np.testing.assert_allclose(np.diff(clips.starts), step)


def test_short_tail_policy() -> None:
    # 3.5 s: one full clip, 1.5 s uncovered (>= 1 s) -> one extra clip aligned to the end.
    clips = cut_clips(tone(440.0, 3.5))
    assert len(clips) == 2 and clips.n_short == 0
    assert 3.5 - 512 / SR < clips.ends[-1] <= 3.5  # its last frame is the signal's last
    assert clips.starts[-1] == pytest.approx((1 + int(3.5 * SR) // 512 - 87) * 512 / SR)
    # 2.5 s: 0.5 s uncovered is dropped and counted.
    clips = cut_clips(tone(440.0, 2.5))
    assert len(clips) == 1 and clips.n_short == 1
    # Shorter than one clip: nothing, and the caller learns why.
    clips = cut_clips(tone(440.0, 1.5))
    assert clips.features.shape == (0, 193, 87) and clips.n_short == 1
    with pytest.raises(ValueError):
        clip_frame_starts(SR * 10, hop_seconds=0)


def test_tone_chroma_peaks_at_a() -> None:
    chroma = cut_clips(tone(440.0, 4.0)).features[:, feature_rows()["chroma"], :]
    profile = chroma.mean(axis=(0, 2))
    assert int(np.argmax(profile)) == 9  # C=0 ... A=9
    assert profile[9] > 2 * np.delete(profile, 9).max()


def test_c_major_triad_chroma() -> None:
    y = tone(261.63, 4.0, 0.3) + tone(329.63, 4.0, 0.3) + tone(392.0, 4.0, 0.3)
    profile = cut_clips(y).features[:, feature_rows()["chroma"], :].mean(axis=(0, 2))
    assert set(np.argsort(profile)[-3:].tolist()) == {0, 4, 7}  # C, E, G


def test_silence_skipped_and_counted() -> None:
    clips = cut_clips(np.zeros(10 * SR, np.float32))
    assert len(clips) == 0 and clips.n_silent == 5
    assert clips.features.shape == (0, 193, 87)
    # Noise at about -70 dBFS is silence; at about -50 dBFS it is not.
    rng = np.random.default_rng(1)
    quiet = (rng.standard_normal(10 * SR) * 10 ** (-70 / 20)).astype(np.float32)
    assert cut_clips(quiet).n_silent == 5
    soft = (rng.standard_normal(10 * SR) * 10 ** (-50 / 20)).astype(np.float32)
    assert len(cut_clips(soft)) == 5


def test_tone_then_silence() -> None:
    rng = np.random.default_rng(2)
    y = (rng.standard_normal(10 * SR) * 1e-4).astype(np.float32)  # -80 dBFS floor
    y[: 3 * SR] += tone(440.0, 3.0)
    clips = cut_clips(y)
    # Clips start at 0, 2.0, 4.0, 6.0, 8.0 s (approximately): two hold the tone.
    assert len(clips) == 2 and clips.n_silent == 3
    np.testing.assert_allclose(clips.starts, [0.0, 86 * 512 / SR])


def test_frame_features_equal_librosa_whole_signal() -> None:
    rng = np.random.default_rng(3)
    y = tone(440.0, 5.0) + tone(523.25, 5.0, 0.2) + 0.01 * rng.standard_normal(5 * SR)
    y = y.astype(np.float32)
    feats = frame_features(y)
    assert feats.shape == (193, 1 + len(y) // 512)
    chroma = librosa.feature.chroma_stft(y=y, sr=SR, tuning=0.0)  # fixed A440 by design
    ref = {
        "mfcc": librosa.feature.mfcc(y=y, sr=SR, n_mfcc=40),
        "chroma": chroma,
        "contrast": librosa.feature.spectral_contrast(y=y, sr=SR),
        "tonnetz": librosa.feature.tonnetz(sr=SR, chroma=chroma),
        "logmel": librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=SR)),
    }
    for name, rows in feature_rows().items():
        scale = max(1.0, float(np.abs(ref[name]).max()))
        np.testing.assert_allclose(feats[rows], ref[name], atol=1e-4 * scale, err_msg=name)


def test_clip_features_independent_of_rest_of_track() -> None:
    """A quiet clip's features match librosa on that clip alone even if the track is loud."""
    rng = np.random.default_rng(4)
    quiet = tone(440.0, 2.2, 0.01)  # the first clip's frames all lie inside it
    loud = (0.9 * rng.standard_normal(4 * SR)).astype(np.float32)
    track = cut_clips(np.concatenate([quiet, loud])).features[0]
    alone = quiet[: 2 * SR]
    ref = np.concatenate(
        [
            librosa.feature.mfcc(y=alone, sr=SR, n_mfcc=40),
            librosa.feature.spectral_contrast(y=alone, sr=SR),
            librosa.power_to_db(librosa.feature.melspectrogram(y=alone, sr=SR)),
        ]
    )
    rows = feature_rows()
    ours = np.concatenate([track[rows["mfcc"]], track[rows["contrast"]], track[rows["logmel"]]])
    # Edge frames differ (librosa zero-pads a lone clip; we see the neighbouring audio).
    np.testing.assert_allclose(ours[:, 4:80], ref[:, 4:80], atol=0.05)


def test_feature_stats_standardise() -> None:
    rng = np.random.default_rng(5)
    scale = rng.uniform(0.1, 100.0, N_FEATURES)[None, :, None]
    shift = rng.uniform(-50, 50, N_FEATURES)[None, :, None]
    feats = (rng.standard_normal((20, N_FEATURES, 87)) * scale + shift).astype(np.float32)
    feats[:, 7, :] = 3.0  # a constant row must not divide by zero
    stats = FeatureStats.fit(feats)
    assert stats.mean.shape == stats.std.shape == (N_FEATURES,)
    assert stats.std[7] == pytest.approx(1e-6)
    x = stats.to_network_input(feats)
    assert x.shape == (20, 3, N_FEATURES, 87) and x.dtype == np.float32
    assert np.isfinite(x).all()
    keep = np.arange(N_FEATURES) != 7
    np.testing.assert_allclose(x[:, 0].mean(axis=(0, 2))[keep], 0.0, atol=1e-3)
    np.testing.assert_allclose(x[:, 0].std(axis=(0, 2))[keep], 1.0, atol=1e-3)
    # Chunked fitting gives the same statistics.
    chunked = FeatureStats.fit([feats[:7], feats[7:]])
    np.testing.assert_allclose(chunked.mean, stats.mean, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(chunked.std, stats.std, rtol=1e-5)


def test_deltas_follow_time() -> None:
    stats = FeatureStats(mean=np.zeros(N_FEATURES, np.float32), std=np.ones(N_FEATURES, np.float32))
    ramp = np.tile(np.arange(87, dtype=np.float32), (1, N_FEATURES, 1))  # +1 per frame
    x = stats.to_network_input(ramp)
    np.testing.assert_allclose(x[0, 1], 1.0, atol=1e-4)  # slope
    np.testing.assert_allclose(x[0, 2], 0.0, atol=1e-4)  # no curvature


def test_feature_stats_dict_round_trip() -> None:
    rng = np.random.default_rng(6)
    stats = FeatureStats.fit(rng.standard_normal((3, N_FEATURES, 87)).astype(np.float32))
    data = json.loads(json.dumps(stats.to_dict()))
    assert isinstance(data["mean"], list) and len(data["std"]) == N_FEATURES
    back = FeatureStats.from_dict(data)
    np.testing.assert_array_equal(back.mean, stats.mean)
    np.testing.assert_array_equal(back.std, stats.std)
    assert back.delta_width == stats.delta_width
    with pytest.raises(ValueError):
        FeatureStats.from_dict({"mean": [0.0] * 10, "std": [1.0] * 10})


# ---------------------------------------------------------------- real data


@pytest.mark.data
def test_real_panda4q_clip(dataset_dir: Path) -> None:
    folder = dataset_dir / "panda4q" / "audio" / "Q1"
    files = sorted(folder.glob("*.ogg"))
    assert files, f"no Panda-4Q audio in {folder}: set PHOTOSCORE_DATASET_DIR to the data root"
    path = files[0]
    duration = probe_duration(path)
    assert duration is not None and 20.0 < duration < 40.0
    y = load_audio(path)
    assert y.dtype == np.float32 and abs(len(y) / SR - duration) < 0.1
    clips = cut_clips(y)
    assert len(clips) + clips.n_silent >= int(duration // 2) - 1
    assert len(clips) >= 5
    assert np.isfinite(clips.features).all()
    assert clips.features.shape[1:] == (193, 87)


def test_block_analysis_equals_the_whole_signal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Clip features and tagger windows are analysed a block of frames at a time (memory flat in
    the song's length); blocks must give exactly what one whole-signal analysis gives."""
    import model.features as features
    import model.tagger_input as tagger_input
    from tests.support.songs import real_music

    y = real_music(47.0, 0)
    y[int(SR * 19.5) : SR * 24] = 0.0  # a silent clip in the middle: kept clips are not contiguous
    whole = features.cut_clips(y, tagger=True)
    monkeypatch.setattr(features, "FRAME_BLOCK", 200)  # several clips per block, several blocks
    monkeypatch.setattr(tagger_input, "TAGGER_FRAME_BLOCK", 400)
    blocked = features.cut_clips(y, tagger=True)
    assert whole.n_silent >= 1 and len(whole) >= 20
    assert np.array_equal(whole.starts, blocked.starts)
    # float32 rounding may differ between one STFT and several (seen: 6e-5 on values of ~250)
    np.testing.assert_allclose(blocked.features, whole.features, rtol=1e-5, atol=1e-3)
    assert whole.tagger is not None and blocked.tagger is not None
    np.testing.assert_allclose(blocked.tagger, whole.tagger, rtol=1e-5, atol=1e-3)
