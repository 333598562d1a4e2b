"""Upload bytes made here: photo-like images, synthetic audio, and hostile media (bombs,
polyglots, lying headers, three-hour files)."""

from __future__ import annotations

import io
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np


# ------------------------------------------------------------------------------------- images
def photo_bytes(kind: str = "warm", size: tuple[int, int] = (320, 240), fmt: str = "JPEG", blur: float = 0.0) -> bytes:
    """A photo-like image (gradient sky, sun, hill) made with Pillow; `blur` softens it
    (a Gaussian radius in pixels)."""
    from PIL import Image, ImageDraw, ImageFilter

    w, h = size
    top, bottom = {
        "warm": ((255, 170, 60), (200, 60, 80)),
        "cold": ((30, 50, 110), (10, 20, 40)),
        "green": ((150, 210, 120), (40, 110, 50)),
    }[kind]
    t = (np.arange(h, dtype=np.float32) / max(1, h - 1))[:, None, None]
    arr = (np.array(top) * (1 - t) + np.array(bottom) * t).astype(np.uint8)
    img = Image.fromarray(np.broadcast_to(arr, (h, w, 3)).copy(), "RGB")
    draw = ImageDraw.Draw(img)
    draw.ellipse([w * 0.6, h * 0.15, w * 0.8, h * 0.15 + w * 0.2], fill=(255, 240, 200))
    draw.polygon([(0, h), (w * 0.35, h * 0.55), (w * 0.7, h)], fill=(60, 40, 50))
    if blur:
        img = img.filter(ImageFilter.GaussianBlur(blur))
    buf = io.BytesIO()
    if fmt == "GIF":
        img.save(buf, fmt, save_all=True, append_images=[img.rotate(90)])
    else:
        img.save(buf, fmt)
    return buf.getvalue()


def png_bomb(width: int = 50_000, height: int = 50_000) -> bytes:
    """A tiny PNG whose header claims width x height pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# -------------------------------------------------------------------------------------- audio
def wav_bytes(seconds: float, sr: int = 8000, silent: bool = False, seed: int = 0) -> bytes:
    """A 16-bit WAV: a 440 Hz tone with a little noise, or silence."""
    import soundfile as sf

    n = int(seconds * sr)
    t = np.arange(n) / sr
    y = np.zeros(n, np.float32) if silent else (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    if not silent:
        y += 0.05 * np.random.default_rng(seed).standard_normal(n).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, y, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def wav_header(claimed_seconds: float, data: bytes = b"", sr: int = 8000, fmt_tag: int = 1) -> bytes:
    """A mono 16-bit WAV whose header claims ``claimed_seconds``, followed by ``data``."""
    claimed = int(claimed_seconds * sr) * 2
    fmt = struct.pack("<IHHIIHH", 16, fmt_tag, 1, sr, sr * 2, 2, 16)
    head = b"RIFF" + struct.pack("<I", 36 + claimed) + b"WAVE" + b"fmt " + fmt
    return head + b"data" + struct.pack("<I", claimed) + data


def tone_pcm16(seconds: float, sr: int = 8000, freq: float = 440.0) -> bytes:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t) * 32767).astype("<i2").tobytes()


def three_hour_flac(sr: int = 8000) -> bytes:
    """A real 3-hour FLAC (mostly silence, a tone every 10 minutes): ~0.3 MB, ~2 s to make."""
    import soundfile as sf

    buf = io.BytesIO()
    block = np.zeros(sr * 600, np.float32)
    block[: sr * 5] = 0.3 * np.sin(2 * np.pi * 440 * np.arange(sr * 5) / sr)
    with sf.SoundFile(buf, "w", sr, 1, format="FLAC", subtype="PCM_16") as f:
        for _ in range(18):
            f.write(block)
    return buf.getvalue()


def sparse_three_hour_wav(path: Path, sr: int = 8000) -> Path:
    """A real 3-hour 16-bit WAV (173 MB of silence) made as a sparse file: no disk, no time."""
    frames = 3 * 3600 * sr
    path.write_bytes(wav_header(3 * 3600, sr=sr))
    with path.open("r+b") as fh:
        fh.truncate(44 + frames * 2)
    return path


def midi_bytes() -> bytes:
    import mido

    mid = mido.MidiFile()
    track = mido.MidiTrack()
    mid.tracks.append(track)
    for note in (60, 64, 67, 72) * 8:
        track.append(mido.Message("note_on", note=note, velocity=80, time=0))
        track.append(mido.Message("note_off", note=note, velocity=0, time=240))
    buf = io.BytesIO()
    mid.save(file=buf)
    return buf.getvalue()


def video_only_mp4(folder: Path) -> bytes:
    """An MP4 with one video stream and no audio (ffmpeg's test pattern, 3 s)."""
    out = folder / "video-only.mp4"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=64x64:rate=5",
         "-t", "3", "-c:v", "mpeg4", str(out)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return out.read_bytes()


# ------------------------------------------------------------------------------ hostile media
def truncated(data: bytes, keep: float = 0.5) -> bytes:
    return data[: max(16, int(len(data) * keep))]


SVG = (
    b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="4000" height="4000">'
    b'<script>alert(document.cookie)</script><rect width="100%" height="100%" fill="red"/></svg>\n'
)
HTML = b"<!DOCTYPE html><html><body><img src=x onerror=alert(1)><script>fetch('/tracks')</script></body></html>"
SCRIPT = b"#!/bin/sh\nrm -rf / --no-preserve-root\n"
JS_AS_GIF = b"GIF89a/*\x01\x00\x01\x00*/=1;alert(document.domain)//"  # a GIF/JS polyglot header, no image
