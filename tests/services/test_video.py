"""A video as scenes (app/services/video.py) and the soundtrack's pure rules (app/services/soundtrack.py).

Videos are encoded here with PyAV from real labelled photos (Emotion6, ../shared/data) with known
cut frames: every cut must be found within two frames, and nothing else cut. Broken videos get
a ``VideoError`` whose ``reason`` says why.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.services.soundtrack import PreviewPiece, encode_opus, fit_segment, group_scenes, render_preview
from app.services.video import FRAMES_PER_SCENE, VideoError, VideoErrorReason, VideoLimits, analyse_video
from tests.support.video import audio_only_mkv, encode_video

TOLERANCE = 2  # frames


def _photos(dataset_dir: Path, count: int) -> list[Image.Image]:
    files = sorted((dataset_dir / "emotion6" / "images").glob("*/*.jpg"))
    assert len(files) >= count, "Emotion6 photos are missing from the data root"
    step = len(files) // count
    return [Image.open(files[i * step]).convert("RGB") for i in range(count)]


@pytest.mark.parametrize(("suffix", "fps"), [(".mp4", 25), (".mkv", 30), (".webm", 24)])
def test_every_cut_is_found_within_two_frames(dataset_dir: Path, tmp_path: Path, suffix: str, fps: int) -> None:
    seconds = [1.5, 2.0, 0.8, 2.5, 1.2, 3.0, 1.0, 1.7]
    path = tmp_path / f"cuts{suffix}"
    kw = {"bit_rate": 1_500_000} if suffix == ".webm" else {}
    cuts = encode_video(path, list(zip(_photos(dataset_dir, len(seconds)), seconds, strict=True)), fps=fps, **kw)
    found = analyse_video(path, VideoLimits(min_scene_seconds=0.5)).cuts
    assert len(found) == len(cuts), f"expected cuts at {cuts}, found {found}"
    for want, got in zip(cuts, found, strict=True):
        assert abs(want - got) <= TOLERANCE, f"cut at frame {want} found at {got}"


def test_scenes_merge_short_shots_and_carry_samples(dataset_dir: Path, tmp_path: Path) -> None:
    seconds = [1.0, 1.0, 1.2, 4.0, 0.6, 0.8]
    path = tmp_path / "merge.mp4"
    encode_video(path, list(zip(_photos(dataset_dir, len(seconds)), seconds, strict=True)), fps=25)
    a = analyse_video(path, VideoLimits(min_scene_seconds=3.0, sample_size=64))
    assert [s.shots for s in a.scenes] == [3, 3], "1+1+1.2 s reach 3 s; the 1.4-s tail joins the scene before"
    assert a.scenes[0].start == 0.0 and a.scenes[-1].end == pytest.approx(8.6, abs=0.05)
    assert a.scenes[0].end == a.scenes[1].start == pytest.approx(3.2, abs=0.05)
    for scene in a.scenes:
        assert 1 <= len(scene.samples) <= FRAMES_PER_SCENE
        assert min(scene.samples[0].size) == 64 and scene.keyframe is not None
    assert (a.width, a.height, a.frames, a.codec) == (320, 180, 215, "h264")


BAD: dict[str, tuple[str, str]] = {
    "zero bytes": ("corrupt", "empty"),
    "text": ("unsupported", "not a supported video"),
    "ffv1 codec": ("unsupported", "unsupported video codec 'ffv1'"),
    "audio only": ("no_video", "no video stream"),
    "truncated mp4": ("corrupt", "truncated"),
    "truncated webm": ("corrupt", "truncated"),
    "all black": ("black", "black"),
    "too long": ("too_long", "PHOTOSCORE_MAX_VIDEO_SECONDS"),
    "too many shots": ("too_many_shots", "PHOTOSCORE_MAX_VIDEO_SHOTS"),
}


def _bad(case: str, folder: Path) -> bytes:
    # differ in brightness and saturation, not only hue: the content detector weighs all three
    colours = [(200, 30, 30), (20, 20, 60), (240, 240, 200), (30, 120, 30), (150, 150, 150)]
    if case == "zero bytes":
        return b""
    if case == "text":
        return b"this is not a video\n" * 100
    if case == "ffv1 codec":
        encode_video(folder / "v.mkv", [((200, 30, 30), 1.0)], codec="ffv1")
        return (folder / "v.mkv").read_bytes()
    if case == "audio only":
        return audio_only_mkv(folder / "a.mkv")
    if case.startswith("truncated"):
        path = folder / ("t.mp4" if "mp4" in case else "t.webm")
        encode_video(path, [(c, 1.0) for c in colours])
        data = path.read_bytes()
        return data[: len(data) // 2]
    if case == "all black":
        encode_video(folder / "b.mp4", [((0, 0, 0), 2.0)])
        return (folder / "b.mp4").read_bytes()
    if case == "too long":
        encode_video(folder / "l.mp4", [((120, 120, 120), 12.0)], fps=5)
        return (folder / "l.mp4").read_bytes()
    encode_video(folder / "s.mp4", [(c, 0.5) for c in colours * 2], fps=10)
    return (folder / "s.mp4").read_bytes()


@pytest.mark.parametrize("case", list(BAD))
def test_broken_videos_name_the_reason(tmp_path: Path, case: str) -> None:
    kind, words = BAD[case]
    limits = VideoLimits(max_seconds=10.0, max_shots=4, min_scene_seconds=0.5)
    with pytest.raises(VideoError) as info:
        analyse_video(io.BytesIO(_bad(case, tmp_path)), limits)
    assert info.value.reason is VideoErrorReason(kind) and words in str(info.value), str(info.value)


def test_group_scenes_merges_calm_neighbours_first() -> None:
    vas = [(0.7, 0.2), (0.72, 0.22), (0.3, 0.9), (0.8, 0.85)]
    assert group_scenes(vas, [3, 3, 3, 3], None) == [[0], [1], [2], [3]]
    assert group_scenes(vas, [3, 3, 3, 3], 3) == [[0, 1], [2], [3]]
    # equal VA gaps: the calm pair merges before the lively one
    even = [(0.5, 0.1), (0.5, 0.2), (0.5, 0.8), (0.5, 0.9)]
    assert group_scenes(even, [1, 1, 1, 1], 3) == [[0, 1], [2], [3]]
    assert group_scenes(even, [1, 1, 1, 1], 1) == [[0, 1, 2, 3]]


def test_fit_segment_keeps_the_scene_length_inside_the_song() -> None:
    assert fit_segment(10.0, 14.0, 5.5, 180.0) == (10.0, 15.5)
    assert fit_segment(176.0, 180.0, 5.5, 180.0) == (174.5, 180.0), "moved earlier at the song's end"
    assert fit_segment(2.0, 6.0, 40.0, 30.0) == (0.0, 30.0), "a song shorter than the scene plays whole"


def test_preview_places_segments_and_fades(tmp_path: Path) -> None:
    """Two synthetic 'songs' (a constant level each) laid at 0 and 2 s of a 4-s timeline."""
    sr = 22050
    levels = {Path("a"): 0.2, Path("b"): -0.4}

    def load(path: Path, start: float, end: float) -> np.ndarray:
        return np.full(int(round((end - start) * sr)), levels[path], np.float32)

    pieces = [PreviewPiece(Path("a"), 5.0, 7.0, 0.0, 2.0), PreviewPiece(Path("b"), 1.0, 3.0, 2.0, 4.0)]
    captured: dict[str, np.ndarray] = {}
    import app.services.soundtrack as st

    real = st.encode_opus
    st.encode_opus = lambda y, rate: captured.setdefault("y", y.copy()) is None or b""  # type: ignore[assignment]
    try:
        render_preview(pieces, 4.0, crossfade=0.5, load=load)
    finally:
        st.encode_opus = real
    y = captured["y"]
    assert len(y) == 4 * sr
    assert y[int(1.0 * sr)] == pytest.approx(0.2) and y[int(3.0 * sr)] == pytest.approx(-0.4)
    assert abs(y[int(2.0 * sr)]) < 0.2, "the crossfade mixes both at the cut"
    assert len(encode_opus(y, sr)) <= 48_000 / 8 * 4 * 1.2
