"""Videos made with PyAV for the soundtrack tests and the video benchmark: shots of photos or
plain colours with known cut frames, and the broken files the hostile-input tests send.

Each shot pans slowly across its picture (a few pixels a frame), so consecutive frames of one
shot differ as filmed footage does and only the cuts are abrupt.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

Picture = Image.Image | tuple[int, int, int]

CODEC_BY_SUFFIX = {".mp4": "h264", ".mov": "h264", ".mkv": "h264", ".webm": "libvpx"}


def _canvas(picture: Picture, size: tuple[int, int], margin: int) -> np.ndarray:
    """The picture covering ``size`` plus a margin to pan across (uint8 RGB)."""
    w, h = size[0] + margin, size[1] + margin
    if isinstance(picture, tuple):
        rgb = np.empty((h, w, 3), np.uint8)
        rgb[:] = picture
        # a soft gradient so a plain colour still has texture to pan across
        rgb = np.clip(rgb.astype(np.int16) + (np.arange(w)[None, :, None] % 32 - 16) // 2, 0, 255).astype(np.uint8)
        return rgb
    img = picture.convert("RGB")
    scale = max(w / img.width, h / img.height)
    img = img.resize((max(w, round(img.width * scale)), max(h, round(img.height * scale))), Image.Resampling.BILINEAR)
    left, top = (img.width - w) // 2, (img.height - h) // 2
    return np.asarray(img.crop((left, top, left + w, top + h)))


def encode_video(
    path: Path,
    shots: Sequence[tuple[Picture, float]],
    *,
    size: tuple[int, int] = (320, 180),
    fps: int = 25,
    codec: str | None = None,
    bit_rate: int | None = None,
    audio: bool = False,
) -> list[int]:
    """Write ``shots`` (picture, seconds) as one video; returns the frame index of each cut."""
    codec = codec or CODEC_BY_SUFFIX.get(path.suffix.lower(), "h264")
    cuts: list[int] = []
    margin = 24
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p" if codec not in ("ffv1",) else "yuv444p"
        if bit_rate:
            stream.bit_rate = bit_rate
        if codec in ("h264", "libx264"):
            stream.options = {"preset": "ultrafast", "g": str(fps * 2)}
        elif codec == "libvpx":
            stream.options = {"deadline": "realtime", "cpu-used": "8"}
        astream = out.add_stream("libopus", rate=48000) if audio else None
        n = 0
        for picture, seconds in shots:
            if n:
                cuts.append(n)
            canvas = _canvas(picture, size, margin)
            count = max(1, round(seconds * fps))
            for i in range(count):
                dx = int(margin * i / max(1, count - 1))
                frame = av.VideoFrame.from_ndarray(
                    np.ascontiguousarray(canvas[margin // 2 : margin // 2 + size[1], dx : dx + size[0]]), format="rgb24"
                )
                frame.pts = n
                frame.time_base = Fraction(1, fps)
                for packet in stream.encode(frame):
                    out.mux(packet)
                n += 1
        for packet in stream.encode():
            out.mux(packet)
        if astream is not None:
            _tone(out, astream, n / fps)
    return cuts


def _tone(out: av.container.OutputContainer, stream: av.audio.stream.AudioStream, seconds: float) -> None:
    t = np.arange(int(seconds * 48000)) / 48000
    y = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    for at in range(0, len(y), 960):
        chunk = y[at : at + 960]
        if len(chunk) < 960:
            chunk = np.pad(chunk, (0, 960 - len(chunk)))
        frame = av.AudioFrame.from_ndarray(chunk[None, :], format="flt", layout="mono")
        frame.sample_rate = 48000
        frame.pts = at
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)


def audio_only_mkv(path: Path, seconds: float = 2.0) -> bytes:
    """A Matroska file with one Opus stream and no video."""
    with av.open(str(path), mode="w", format="matroska") as out:
        _tone(out, out.add_stream("libopus", rate=48000), seconds)
    return path.read_bytes()


def video_bytes(path: Path, shots: Sequence[tuple[Picture, float]], **kw: object) -> bytes:
    encode_video(path, shots, **kw)  # type: ignore[arg-type]
    return path.read_bytes()


def first_frame_png(data: bytes) -> bytes:
    """The first frame of a video as PNG (what a test compares a keyframe with)."""
    with av.open(io.BytesIO(data)) as container:
        frame = next(container.decode(video=0))
        buf = io.BytesIO()
        frame.to_image().save(buf, "PNG")
        return buf.getvalue()
