"""`photoscore soundtrack VIDEO --url SERVER` against a real `photoscore serve` (real songs)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import av
import pytest

from app.cli import main
from tests.support import REPO
from tests.support.servers import LiveServer
from tests.support.video import encode_video

COLOURS = [(200, 30, 30), (20, 20, 60), (240, 240, 200)]


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli-video") / "clip.mp4"
    encode_video(path, [(c, 3.0) for c in COLOURS])
    return path


def test_prints_the_cue_sheet_and_writes_the_preview(
    live_server: LiveServer, video: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ogg = tmp_path / "soundtrack.ogg"
    code = main(["soundtrack", str(video), "--url", live_server.url, "--max-songs", "2", "--preview", str(ogg)])
    out, err = capsys.readouterr()
    assert code == 0, err
    sheet = json.loads(out)
    assert sheet["format"] == "photoscore-cue-sheet" and sheet["video"]["shots"] == 3
    assert len(sheet["cues"]) == 2 and sheet["video"]["filename"] == "clip.mp4"
    with av.open(io.BytesIO(ogg.read_bytes())) as container:
        assert container.streams.audio[0].codec_context.name == "opus"
        assert float(container.duration or 0) / 1e6 == pytest.approx(9.0, abs=0.2)


def test_m3u8_and_errors(live_server: LiveServer, video: Path, tmp_path: Path) -> None:
    run = [str(Path(sys.executable).parent / "photoscore"), "soundtrack"]  # the installed console script
    done = subprocess.run([*run, str(video), "--url", live_server.url, "--format", "m3u8"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("#EXTM3U") and done.stdout.count("#EXTINF") == 3
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n" * 100)
    done = subprocess.run([*run, str(text), "--url", live_server.url], cwd=REPO, capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 1 and "415" in done.stderr and "not a supported video" in done.stderr
    done = subprocess.run([*run, str(video), "--url", "http://127.0.0.1:9"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2 and "cannot reach" in done.stderr
