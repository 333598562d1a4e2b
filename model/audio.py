"""Audio decoding to the one signal format the model knows: mono float32 at 22,050 Hz.

libsndfile (via soundfile) decodes wav/flac/ogg-vorbis/opus/mp3 in-process, so it is tried
first; anything it refuses (m4a/aac, wma, ...) goes to the ``ffmpeg`` command line when it is
installed. Both paths stop reading after ``max_seconds`` so a long or hostile file cannot make
us decode hours of audio, and both downmix by averaging channels and resample with soxr (HQ)
so features do not depend on which decoder ran.

I/O problems (missing file, permissions) propagate as ``OSError``; only problems with the
content itself become :class:`AudioDecodeError`.
"""

from __future__ import annotations

import io
import math
import os
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path
from typing import BinaryIO

import librosa
import numpy as np
import soundfile as sf

SAMPLE_RATE = 22050
HOP_LENGTH = 512
N_FFT = 2048
CLIP_FRAMES = 87
CLIP_SECONDS = 2.0

AudioSource = str | Path | bytes

# ffmpeg is only the fallback; these demuxers cover m4a/aac/wma/webm/aiff/caf. Playlists (hls,
# concat) are deliberately absent: they could make ffmpeg read other files or URLs.
_FFMPEG_FORMATS = (
    "mov,mp4,m4a,3gp,3g2,mj2,aac,mp3,ogg,matroska,webm,wav,w64,flac,asf,aiff,caf,au,"
    "ape,wv,tta,amr,ac3,eac3,dts,mpc,mpc8"
)
_FFMPEG_TIMEOUT_S = 300.0
# Header durations can be a frame or two off the decoded length (mp3 padding, opus pre-skip).
_DURATION_SLACK_S = 0.5


class AudioDecodeError(ValueError):
    """The input is not decodable audio; the message says why in one line."""


def _one_line(text: str, limit: int = 200) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _as_file(source: AudioSource) -> str | BinaryIO:
    if isinstance(source, bytes | bytearray | memoryview):
        return io.BytesIO(bytes(source))
    return str(source)


def _check_source(source: AudioSource) -> None:
    if isinstance(source, bytes | bytearray | memoryview):
        if len(source) == 0:
            raise AudioDecodeError("audio input is empty (0 bytes)")
        return
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"no such audio file: {path}")
    if path.stat().st_size == 0:
        raise AudioDecodeError(f"audio file is empty (0 bytes): {path.name}")


def probe_duration(source: AudioSource) -> float | None:
    """Duration in seconds read from the headers (no decoding), or None when unknown."""
    try:
        _check_source(source)
    except (AudioDecodeError, OSError):
        return None
    try:
        info = sf.info(_as_file(source))
        if info.frames > 0 and info.samplerate > 0:
            return float(info.frames) / float(info.samplerate)
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError):
        pass
    try:
        import mutagen

        meta = mutagen.File(_as_file(source))
        length = getattr(getattr(meta, "info", None), "length", None)
        if length and math.isfinite(length) and length > 0:
            return float(length)
    except Exception:  # mutagen raises many types on odd input; "unknown" is the answer
        pass
    return None


def _too_long(seconds: float, max_seconds: float) -> AudioDecodeError:
    return AudioDecodeError(f"audio is too long: {seconds:.1f} s exceeds the limit of {max_seconds:g} s")


def _finish(data: np.ndarray, sr: int, max_seconds: float | None) -> np.ndarray:
    """Downmix [frames, channels] by averaging, enforce limits, resample to SAMPLE_RATE."""
    if data.size == 0 or data.shape[0] == 0:
        raise AudioDecodeError("audio contains no samples")
    if sr <= 0:
        raise AudioDecodeError(f"invalid sample rate {sr}")
    if max_seconds is not None and data.shape[0] / sr > max_seconds + _DURATION_SLACK_S:
        raise _too_long(data.shape[0] / sr, max_seconds)
    y = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    y = np.nan_to_num(np.asarray(y, dtype=np.float32), nan=0.0, posinf=1.0, neginf=-1.0)
    if sr != SAMPLE_RATE:
        y = librosa.resample(y, orig_sr=sr, target_sr=SAMPLE_RATE, res_type="soxr_hq")
    return np.ascontiguousarray(y, dtype=np.float32)


def _read_soundfile(source: AudioSource, max_seconds: float | None) -> np.ndarray:
    with sf.SoundFile(_as_file(source)) as f:
        sr = int(f.samplerate)
        frames = -1
        if max_seconds is not None:
            if f.frames > 0 and f.frames / sr > max_seconds + _DURATION_SLACK_S:
                raise _too_long(f.frames / sr, max_seconds)
            # Read one second past the limit at most: enough to prove the file is too long.
            frames = int(math.ceil((max_seconds + _DURATION_SLACK_S + 1.0) * sr))
        data = f.read(frames=frames, dtype="float32", always_2d=True)
    return _finish(data, sr, max_seconds)


def _parse_wav(buf: bytes) -> tuple[np.ndarray, int]:
    """[frames, channels] float32 from ffmpeg's pcm_f32le WAV on a pipe (sizes unknown)."""
    if len(buf) < 12 or buf[:4] != b"RIFF" or buf[8:12] != b"WAVE":
        raise AudioDecodeError("ffmpeg produced no audio")
    pos, channels, sr = 12, 0, 0
    while pos + 8 <= len(buf):
        cid, size = buf[pos : pos + 4], struct.unpack("<I", buf[pos + 4 : pos + 8])[0]
        body = pos + 8
        if cid == b"fmt ":
            _, channels, sr = struct.unpack("<HHI", buf[body : body + 8])
        elif cid == b"data":
            end = len(buf) if size in (0, 0xFFFFFFFF) else min(len(buf), body + size)
            if channels <= 0:
                break
            n = (end - body) // (4 * channels)
            data = np.frombuffer(buf, dtype="<f4", count=n * channels, offset=body)
            return data.reshape(n, channels), sr
        pos = body + size + (size & 1)
    raise AudioDecodeError("ffmpeg produced no audio")


def _read_ffmpeg(source: AudioSource, max_seconds: float | None, why: str) -> np.ndarray:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise AudioDecodeError(f"unsupported or corrupt audio ({why}; ffmpeg is not installed)")
    tmp: str | None = None
    try:
        if isinstance(source, bytes | bytearray | memoryview):
            # A real file, not a pipe: mp4/m4a often keep their index at the end (needs seeking).
            fd, tmp = tempfile.mkstemp(prefix="photoscore-", suffix=".audio")
            with os.fdopen(fd, "wb") as fh:
                fh.write(bytes(source))
            path = tmp
        else:
            path = str(source)
        cmd = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error"]
        cmd += ["-protocol_whitelist", "file,pipe", "-format_whitelist", _FFMPEG_FORMATS]
        cmd += ["-i", f"file:{path}"]
        if max_seconds is not None:
            cmd += ["-t", f"{max_seconds + _DURATION_SLACK_S + 1.0:.3f}"]
        # Resample in ffmpeg with soxr (as the soundfile path does), keep channels and
        # average them here: ffmpeg's own downmix is +3 dB louder than a mean for stereo.
        cmd += ["-map", "0:a:0", "-vn", "-af", "aresample=resampler=soxr:precision=20"]
        cmd += ["-ar", str(SAMPLE_RATE), "-c:a", "pcm_f32le", "-f", "wav", "pipe:1"]
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=_FFMPEG_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as exc:
            raise AudioDecodeError(f"decoding timed out after {_FFMPEG_TIMEOUT_S:g} s") from exc
        if proc.returncode != 0:
            err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            reason = err[-1] if err else f"ffmpeg exited with {proc.returncode}"
            if any("matches no streams" in line for line in err):  # the last line is only ffmpeg's hint
                reason = "the file has no audio stream"
            if tmp is not None:  # ffmpeg names its input: never echo the server's temp path to a client
                reason = reason.replace(f"file:{tmp}", "input").replace(tmp, "input")
            raise AudioDecodeError(f"unsupported or corrupt audio: {_one_line(reason)}")
        data, sr = _parse_wav(proc.stdout)
        return _finish(data, sr, max_seconds)
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def load_audio(source: AudioSource, max_seconds: float | None = None) -> np.ndarray:
    """Decode ``source`` (path or bytes) to mono float32 at 22,050 Hz.

    Raises AudioDecodeError for empty, corrupt, unsupported or too-long (``max_seconds``)
    input; the header duration is checked before decoding when the container has one.
    """
    _check_source(source)
    if max_seconds is not None:
        if max_seconds <= 0:
            raise ValueError("max_seconds must be positive")
        duration = probe_duration(source)
        if duration is not None and duration > max_seconds + _DURATION_SLACK_S:
            raise _too_long(duration, max_seconds)
    try:
        return _read_soundfile(source, max_seconds)
    except AudioDecodeError:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        why = _one_line(getattr(exc, "error_string", None) or exc)
    return _read_ffmpeg(source, max_seconds, why)
