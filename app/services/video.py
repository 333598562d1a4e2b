"""A video as scenes: decode with PyAV, cut with PySceneDetect, keep a few small frames per scene.

One streaming pass over the decoded frames, so memory does not grow with the video: each frame
is shrunk to ``DETECT_WIDTH`` pixels for PySceneDetect's content detector (HSV and edge
differences between consecutive frames; a cut where the difference passes the threshold) and,
at a bounded rate, to the model's input size for embedding (at most ``MAX_SAMPLES`` kept). The
full-size frame is dropped as soon as it is shrunk. Shots shorter than the minimum scene length
are merged into the scene before them (the first into the next), so a montage of quick cuts
gets one song rather than one each.

Every reason a video cannot be used is a ``VideoError`` with a ``reason`` app.api.errors maps to
a status: too large or too long (413), an unsupported container or codec (415), no video
stream, too many shots or all-black frames (422), a corrupt or truncated file (400). The limits
are checked from the headers first and again while decoding, since headers can lie.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import av
import av.error
import numpy as np
from av.video.reformatter import VideoReformatter
from PIL import Image
from scenedetect.detectors import ContentDetector
from scenedetect.scene_detector import FlashFilter


class VideoErrorReason(enum.Enum):
    """Why a video cannot be used (app.api.errors maps each to a status)."""

    TOO_LARGE = "too_large"  # frames over 8K
    TOO_LONG = "too_long"  # longer than the limit
    TOO_MANY_SHOTS = "too_many_shots"
    UNSUPPORTED = "unsupported"  # container or codec not taken
    NO_VIDEO = "no_video"  # no video stream
    CORRUPT = "corrupt"  # truncated or broken
    BLACK = "black"  # every frame black


# Containers as FFmpeg's demuxers name them; codecs as its decoders do.
CONTAINERS = {"mov,mp4,m4a,3gp,3g2,mj2": "MP4/MOV", "matroska,webm": "MKV/WebM"}
CODECS = {
    "h264": "H.264",
    "hevc": "HEVC",
    "vp8": "VP8",
    "vp9": "VP9",
    "av1": "AV1",
    "mpeg4": "MPEG-4 Part 2",
    "mjpeg": "Motion JPEG",
    "prores": "ProRes",
}
SUPPORTED_VIDEO = "MP4, MOV, MKV or WebM with H.264, HEVC, VP8, VP9, AV1, MPEG-4, Motion JPEG or ProRes video"
DETECT_WIDTH = 256  # frames are compared at this width: cuts survive, decoding noise and cost do not
CUT_THRESHOLD = 27.0  # PySceneDetect's default content threshold
MIN_SHOT_SECONDS = 0.25  # the detector ignores a second cut closer than this to the previous one
SAMPLE_RATE_HZ = 2.0  # embedding samples per second of video, at most
MAX_SAMPLES = 240  # embedding samples kept for a whole video (the rate falls for long videos)
FRAMES_PER_SCENE = 3  # samples embedded and averaged per scene
BLACK_LEVEL = 10.0  # a frame whose mean pixel value (0-255) is below this is black
MAX_PIXELS = 8192 * 4320  # one frame: 8K at most
MAX_FPS = 240.0  # frames a second counted against the limits (a higher declared rate is suspect)
TRUNCATED_SLACK = 1.0  # seconds the decoded frames may fall short of the declared duration


class VideoError(ValueError):
    """A video that cannot be used; ``reason`` says why (the HTTP shell maps it to a status)."""

    def __init__(self, reason: VideoErrorReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class VideoLimits:
    """What one analysis may cost: the settings of ``POST /soundtrack``."""

    max_seconds: float = 300.0
    max_shots: int = 200
    min_scene_seconds: float = 3.0
    sample_size: int = 224  # short side of the frames kept for embedding (the model's input size)


@dataclass
class Scene:
    """A stretch of the video that gets one song's segment: one shot or several merged."""

    index: int
    start: float  # seconds into the video
    end: float
    first_frame: int
    last_frame: int  # inclusive
    shots: int  # shots merged into it
    samples: list[Image.Image] = field(default_factory=list, repr=False)  # frames to embed
    keyframe: Image.Image | None = field(default=None, repr=False)  # the middle sample

    @property
    def duration(self) -> float:
        return max(0.0, self.end - self.start)


@dataclass
class VideoAnalysis:
    """The video's facts and its scenes."""

    duration: float
    fps: float
    width: int
    height: int
    frames: int
    codec: str
    container: str
    cuts: list[int]  # frame index of each detected cut (the first frame of the new shot)
    cut_times: list[float]
    scenes: list[Scene]


def _signature_known(head: bytes) -> bool:
    """Whether the bytes start like a container we take (then a failure is corruption, not type)."""
    return head[4:8] == b"ftyp" or head[:4] == b"\x1a\x45\xdf\xa3" or head[4:8] in (b"moov", b"mdat", b"wide")


def _open(source: IO[bytes] | Path) -> av.container.InputContainer:
    head = b""
    if isinstance(source, Path):
        with source.open("rb") as f:
            head = f.read(16)
    else:
        source.seek(0)
        head = source.read(16)
        source.seek(0)
    if not head:
        raise VideoError(VideoErrorReason.CORRUPT, "the uploaded file is empty")
    try:
        return av.open(source if isinstance(source, Path) else source, mode="r", metadata_errors="ignore")
    except (av.error.FFmpegError, ValueError, OSError, EOFError) as exc:
        if _signature_known(head):
            raise VideoError(VideoErrorReason.CORRUPT, f"the file is truncated or corrupt ({_reason(exc)})") from None
        raise VideoError(VideoErrorReason.UNSUPPORTED, f"not a supported video; send {SUPPORTED_VIDEO}") from None


def _reason(exc: Exception) -> str:
    """FFmpeg's own words for a failure, without paths or addresses."""
    text = getattr(exc, "strerror", None) or str(exc)
    return str(text).split(":")[0].strip()[:120] or type(exc).__name__


def _size(width: int, height: int, short: int) -> tuple[int, int]:
    """(w, h) with the short side ``short`` and the aspect kept, both even."""
    scale = short / min(width, height)
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def analyse_video(source: IO[bytes] | Path, limits: VideoLimits) -> VideoAnalysis:
    """The scenes of a video (raises ``VideoError``); time and memory bounded by ``limits``."""
    container = _open(source)
    try:
        return _analyse(container, limits)
    finally:
        container.close()


def _analyse(container: av.container.InputContainer, limits: VideoLimits) -> VideoAnalysis:
    fmt = container.format.name
    if fmt not in CONTAINERS:
        raise VideoError(
            VideoErrorReason.UNSUPPORTED, f"not a supported video container ({fmt}); send {SUPPORTED_VIDEO}"
        )
    if not container.streams.video:
        raise VideoError(VideoErrorReason.NO_VIDEO, "the file has no video stream (audio only?); send a video")
    stream = container.streams.video[0]
    codec = stream.codec_context.name
    if codec not in CODECS:
        raise VideoError(VideoErrorReason.UNSUPPORTED, f"unsupported video codec {codec!r}; send {SUPPORTED_VIDEO}")
    width, height = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
    if width <= 0 or height <= 0:
        raise VideoError(VideoErrorReason.CORRUPT, "the video stream declares no frame size: the file is corrupt")
    if width * height > MAX_PIXELS:
        raise VideoError(
            VideoErrorReason.TOO_LARGE, f"frames of {width}x{height} are too large (at most 8K, {MAX_PIXELS:,} pixels)"
        )
    declared = _declared_duration(container, stream)
    if declared is not None and declared > limits.max_seconds:
        raise VideoError(
            VideoErrorReason.TOO_LONG,
            f"the video is {declared:.1f} s long; the limit is {limits.max_seconds:g} s (PHOTOSCORE_MAX_VIDEO_SECONDS)",
        )
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else 25.0
    if not math.isfinite(fps) or fps <= 0 or fps > MAX_FPS:
        fps = min(MAX_FPS, 25.0 if not math.isfinite(fps) or fps <= 0 else fps)
    max_frames = int(limits.max_seconds * MAX_FPS) + 1
    stream.thread_type = "AUTO"  # frame threads: 1080p H.264 decodes several times faster

    dw, dh = DETECT_WIDTH, max(2, round(height * DETECT_WIDTH / width / 2) * 2)
    sw, sh = _size(width, height, limits.sample_size)
    min_len = max(1, round(MIN_SHOT_SECONDS * fps))
    detector = ContentDetector(threshold=CUT_THRESHOLD, min_scene_len=min_len, filter_mode=FlashFilter.Mode.SUPPRESS)
    expected = declared if declared is not None else limits.max_seconds
    every = max(1.0 / SAMPLE_RATE_HZ, expected / MAX_SAMPLES)  # seconds between samples

    shrink, thumb = VideoReformatter(), VideoReformatter()  # one scaler each, reused (20x cheaper per frame)
    times: list[float] = []
    cuts: list[int] = []
    samples: list[tuple[float, Image.Image]] = []
    next_sample = 0.0
    brightest = 0.0
    t0: float | None = None
    n = 0
    failure: str | None = None
    try:
        for frame in container.decode(stream):
            t = frame.time if frame.time is not None else n / fps
            if t0 is None:
                t0 = t
            t = max(0.0, t - t0)
            if t > limits.max_seconds or n >= max_frames:
                raise VideoError(
                    VideoErrorReason.TOO_LONG,
                    f"the video runs past {limits.max_seconds:g} s, the limit (PHOTOSCORE_MAX_VIDEO_SECONDS)",
                )
            small = shrink.reformat(frame, width=dw, height=dh, format="bgr24", interpolation="AREA").to_ndarray()
            brightest = max(brightest, float(small.mean()))
            for cut in detector.process_frame(n, small):
                if cut > 0:
                    cuts.append(cut)
                    if len(cuts) + 1 > limits.max_shots:
                        raise VideoError(
                            VideoErrorReason.TOO_MANY_SHOTS,
                            f"the video has more than {limits.max_shots} shots (PHOTOSCORE_MAX_VIDEO_SHOTS); "
                            "send a shorter clip",
                        )
            if t >= next_sample and len(samples) < MAX_SAMPLES:
                rgb = thumb.reformat(frame, width=sw, height=sh, format="rgb24", interpolation="AREA").to_ndarray()
                samples.append((t, Image.fromarray(rgb)))
                next_sample = t + every
            times.append(t)
            n += 1
    except VideoError:
        raise
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        failure = _reason(exc)
    if n == 0:
        detail = f" ({failure})" if failure else ""
        raise VideoError(
            VideoErrorReason.CORRUPT, f"no frame could be decoded: the file is truncated or corrupt{detail}"
        )
    step = 1.0 / fps
    duration = times[-1] + step
    if failure is not None or (declared is not None and duration < declared - max(TRUNCATED_SLACK, 0.05 * declared)):
        shown = f"{declared:.1f}" if declared is not None else "?"
        raise VideoError(
            VideoErrorReason.CORRUPT,
            f"the file is truncated: frames stop at {duration:.1f} s of the {shown} s it declares"
            + (f" ({failure})" if failure else ""),
        )
    if brightest < BLACK_LEVEL:
        raise VideoError(VideoErrorReason.BLACK, "every frame of the video is black: there is nothing to score")
    scenes = _scenes(cuts, times, duration, limits.min_scene_seconds)
    _attach_samples(scenes, samples)
    return VideoAnalysis(
        duration=round(duration, 3),
        fps=round(fps, 3),
        width=width,
        height=height,
        frames=n,
        codec=codec,
        container=CONTAINERS[fmt],
        cuts=cuts,
        cut_times=[round(times[c], 3) for c in cuts],
        scenes=scenes,
    )


def _declared_duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        value = float(stream.duration * stream.time_base)
        if value > 0 and math.isfinite(value):
            return value
    if container.duration is not None and container.duration > 0:
        return float(container.duration) / av.time_base
    return None


def _scenes(cuts: list[int], times: list[float], duration: float, min_seconds: float) -> list[Scene]:
    """Shots from the cuts, short ones merged: a scene grows shot by shot until it lasts
    ``min_seconds``; a short tail joins the scene before it."""
    bounds = [0, *cuts, len(times)]
    shots = [(bounds[i], bounds[i + 1] - 1) for i in range(len(bounds) - 1) if bounds[i + 1] > bounds[i]]

    def start_of(frame: int) -> float:
        return times[frame]

    def end_of(last: int) -> float:
        return times[last + 1] if last + 1 < len(times) else duration

    groups: list[list[tuple[int, int]]] = []
    current: list[tuple[int, int]] = []
    for shot in shots:
        current.append(shot)
        if end_of(current[-1][1]) - start_of(current[0][0]) >= min_seconds - 1e-6:
            groups.append(current)
            current = []
    if current:
        if groups:
            groups[-1].extend(current)
        else:
            groups.append(current)
    return [
        Scene(
            index=i,
            start=round(start_of(g[0][0]), 3),
            end=round(end_of(g[-1][1]), 3),
            first_frame=g[0][0],
            last_frame=g[-1][1],
            shots=len(g),
        )
        for i, g in enumerate(groups)
    ]


def _attach_samples(scenes: list[Scene], samples: list[tuple[float, Image.Image]]) -> None:
    """Up to ``FRAMES_PER_SCENE`` samples per scene, spread over it (the nearest sample when the
    sampling rate left a short scene none); the middle one is its keyframe."""
    if not samples:
        return
    times = np.array([t for t, _ in samples])
    for scene in scenes:
        inside = np.flatnonzero((times >= scene.start) & (times < scene.end))
        if len(inside) == 0:
            inside = np.array([int(np.argmin(np.abs(times - (scene.start + scene.end) / 2)))])
        picks = np.unique(np.linspace(0, len(inside) - 1, min(FRAMES_PER_SCENE + 2, len(inside))).round().astype(int))
        if len(picks) > FRAMES_PER_SCENE:  # drop the two ends: frames at a cut can blend shots
            picks = picks[1:-1][:FRAMES_PER_SCENE]
        chosen = [samples[int(inside[p])][1] for p in picks]
        scene.samples = chosen
        scene.keyframe = chosen[len(chosen) // 2]
