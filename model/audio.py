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

import enum
import io
import math
import os
import shutil
import struct
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import IO, TYPE_CHECKING

import librosa
import numpy as np
import soundfile as sf

from app.core.errors import one_line

if TYPE_CHECKING:  # imported where used: only long high-rate signals need the streaming resampler
    import soxr

SAMPLE_RATE = 22050
HOP_LENGTH = 512
N_FFT = 2048
CLIP_FRAMES = 87
CLIP_SECONDS = 2.0
#: File extensions of audio the decoders take (the indexer's scan and the data loaders use them).
AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".opus", ".mp3", ".m4a"})
#: The same formats as users are told (the API's texts).
SUPPORTED_AUDIO = "WAV, FLAC, Ogg Vorbis, Opus, MP3 or M4A"

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

# Decoded-memory bounds. The duration limit alone does not bound memory: a FLAC may carry
# 655,350 Hz x 8 channels, 5.2 M samples a second. So (1) frames x channels at the native rate
# are capped (from the header before decoding, and by counting while decoding, for headers that
# lie), (2) decoding reads blocks of at most _BLOCK_SAMPLES samples and downmixes each block at
# once, and (3) signals whose mono native-rate copy would exceed _ONE_SHOT_FRAMES are resampled
# block by block (soxr's streaming resampler, same quality) instead of in one call; its output
# is cut or padded to the one-shot length, and was measured bit-identical to it.
DEFAULT_MAX_SAMPLES = 400_000_000  # e.g. 1,800 s of 96 kHz stereo; 60 s of 655,350 Hz x 8 ch
_BLOCK_SAMPLES = 1 << 21  # 8 MiB of float32 per decoded block, whatever the channel count
_ONE_SHOT_FRAMES = 1 << 22  # 16 MiB of mono float32 at the native rate


class AudioErrorReason(enum.Enum):
    """Why an input is not usable audio (what callers branch on; never the message)."""

    EMPTY = "empty"  # zero bytes
    UNDECODABLE = "undecodable"  # no decoder reads it: an unknown format or a broken file
    UNSUPPORTED = "unsupported"  # known not to be audio (set by callers that sniffed the bytes)
    CORRUPT = "corrupt"  # the header is readable but invalid
    NO_SAMPLES = "no_samples"  # decoding gave no samples at all
    TIMEOUT = "timeout"  # the ffmpeg decoder ran out of time
    TOO_LONG = "too_long"  # over max_seconds
    TOO_LARGE = "too_large"  # over max_samples (frames x channels), or out of memory
    TOO_SHORT = "too_short"  # decoded, but shorter than a caller's minimum (one clip)
    NO_CLIPS = "no_clips"  # decoded, but no usable clip (all silent or too short)


class AudioDecodeError(ValueError):
    """The input is not usable audio; ``reason`` says why, the message says it in one line.

    ``reason`` defaults to CORRUPT only for callers outside this module that do not name one.
    """

    def __init__(self, message: str, reason: AudioErrorReason = AudioErrorReason.CORRUPT) -> None:
        super().__init__(message)
        self.reason = reason


def _as_file(source: AudioSource) -> str | IO[bytes]:
    if isinstance(source, bytes | bytearray | memoryview):
        return io.BytesIO(bytes(source))
    return str(source)


def _check_source(source: AudioSource) -> None:
    if isinstance(source, bytes | bytearray | memoryview):
        if len(source) == 0:
            raise AudioDecodeError("audio input is empty (0 bytes)", AudioErrorReason.EMPTY)
        return
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"no such audio file: {path}")
    if path.stat().st_size == 0:
        raise AudioDecodeError(f"audio file is empty (0 bytes): {path.name}", AudioErrorReason.EMPTY)


def probe_duration(source: AudioSource) -> float | None:
    """Duration in seconds read from the headers (no decoding), or None when unknown."""
    try:
        _check_source(source)
    except (AudioDecodeError, OSError):
        return None
    try:
        info = sf.info(_as_file(source))
        if 0 < info.frames < 1 << 62 and info.samplerate > 0:  # SF_COUNT_MAX: length unknown (FLAC total 0)
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
    return AudioDecodeError(
        f"audio is too long: {seconds:.1f} s exceeds the limit of {max_seconds:g} s", AudioErrorReason.TOO_LONG
    )


def _too_many(samples: int, sr: int, channels: int, max_samples: int, *, while_decoding: bool) -> AudioDecodeError:
    seen = "decoding passed" if while_decoding else "the header declares"
    return AudioDecodeError(
        f"audio is too large to decode: {seen} {samples:,} samples ({sr:,} Hz x {channels} channels), "
        f"over the limit of {max_samples:,} samples (too many samples for its sample rate and channels)",
        AudioErrorReason.TOO_LARGE,
    )


def _check_samples(frames: int, sr: int, channels: int, max_samples: int | None, *, while_decoding: bool) -> None:
    if max_samples is not None and 0 < frames < 1 << 62 and frames * channels > max_samples:
        raise _too_many(frames * channels, sr, channels, max_samples, while_decoding=while_decoding)


class _MonoSink:
    """Collects downmixed blocks and resamples them to SAMPLE_RATE with bounded memory.

    Up to ``_ONE_SHOT_FRAMES`` native-rate frames are kept and resampled in one call (the exact
    result of a whole-file ``librosa.resample``); past that, what was kept goes into soxr's
    streaming resampler and every later block follows, so only the 22,050 Hz output grows.
    """

    def __init__(self, sr: int) -> None:
        self.sr = sr
        self.frames = 0
        self._kept: list[np.ndarray] = []
        self._out: list[np.ndarray] = []
        self._stream: soxr.ResampleStream | None = None

    def add(self, mono: np.ndarray) -> None:
        self.frames += len(mono)
        if self._stream is None:
            self._kept.append(mono)
            if self.sr != SAMPLE_RATE and self.frames > _ONE_SHOT_FRAMES:
                import soxr

                self._stream = soxr.ResampleStream(self.sr, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
                kept, self._kept = self._kept, []
                for part in kept:
                    self._push(part, last=False)
        else:
            self._push(mono, last=False)

    def _push(self, mono: np.ndarray, *, last: bool) -> None:
        assert self._stream is not None  # only called once the stream exists
        out = self._stream.resample_chunk(mono, last=last)
        if len(out):
            self._out.append(np.asarray(out, dtype=np.float32))

    def finish(self) -> np.ndarray:
        if self._stream is not None:
            self._push(np.zeros(0, np.float32), last=True)
            y = np.concatenate(self._out) if self._out else np.zeros(0, np.float32)
            self._out = []
            # The length librosa.resample gives (ceil(n * ratio), zero-padded): then the samples
            # equal the one-shot path's (measured bit-identical from 8 kHz to 655,350 Hz).
            y = librosa.util.fix_length(y, size=int(math.ceil(self.frames * SAMPLE_RATE / self.sr)))
            return np.ascontiguousarray(y, dtype=np.float32)
        y = np.concatenate(self._kept) if len(self._kept) != 1 else self._kept[0]
        self._kept = []
        if self.sr != SAMPLE_RATE and len(y):
            y = librosa.resample(y, orig_sr=self.sr, target_sr=SAMPLE_RATE, res_type="soxr_hq")
        return np.ascontiguousarray(y, dtype=np.float32)


def _downmix(block: np.ndarray) -> np.ndarray:
    """[frames, channels] -> mono by averaging; NaN and infinities made finite."""
    y = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0].copy()
    return np.nan_to_num(np.asarray(y, dtype=np.float32), nan=0.0, posinf=1.0, neginf=-1.0)


def _read_soundfile(source: AudioSource, max_seconds: float | None, max_samples: int | None) -> np.ndarray:
    """Decode in blocks, downmixing each one, never holding more than one block of all channels."""
    with sf.SoundFile(_as_file(source)) as f:
        sr, channels = int(f.samplerate), int(f.channels)
        if sr <= 0 or channels <= 0:
            raise AudioDecodeError(f"invalid audio header ({sr} Hz, {channels} channels)", AudioErrorReason.CORRUPT)
        if max_seconds is not None and 0 < f.frames < 1 << 62 and f.frames / sr > max_seconds + _DURATION_SLACK_S:
            raise _too_long(f.frames / sr, max_seconds)
        _check_samples(int(f.frames), sr, channels, max_samples, while_decoding=False)
        limit = -1
        if max_seconds is not None:
            # Read one second past the limit at most: enough to prove the file is too long.
            limit = int(math.ceil((max_seconds + _DURATION_SLACK_S + 1.0) * sr))
        if max_samples is not None:
            # One block past the sample budget at most: enough to prove a lying header.
            over = max_samples // channels + 1
            limit = over if limit < 0 else min(limit, over)
        block = np.empty((max(1, _BLOCK_SAMPLES // channels), channels), dtype=np.float32)
        sink = _MonoSink(sr)
        while limit < 0 or sink.frames < limit:
            want = len(block) if limit < 0 else min(len(block), limit - sink.frames)
            data = f.read(frames=want, dtype="float32", always_2d=True, out=block[:want])
            if len(data) == 0:
                break
            sink.add(_downmix(data))
            _check_samples(sink.frames, sr, channels, max_samples, while_decoding=True)
            if max_seconds is not None and sink.frames / sr > max_seconds + _DURATION_SLACK_S:
                raise _too_long(sink.frames / sr, max_seconds)
            if len(data) < want:
                break
    if sink.frames == 0:
        raise AudioDecodeError("audio contains no samples", AudioErrorReason.NO_SAMPLES)
    return sink.finish()


def _wav_header(stream: IO[bytes]) -> tuple[int, int, bytes]:
    """(channels, rate, bytes already read past the header) of ffmpeg's pcm_f32le WAV on a pipe."""
    buf = b""
    while len(buf) < 1 << 16:
        chunk = stream.read(4096)
        if not chunk:
            break
        buf += chunk
        if len(buf) < 12:
            continue
        if buf[:4] != b"RIFF" or buf[8:12] != b"WAVE":
            break
        pos, channels, sr = 12, 0, 0
        while pos + 8 <= len(buf):
            cid, size = buf[pos : pos + 4], struct.unpack("<I", buf[pos + 4 : pos + 8])[0]
            body = pos + 8
            if cid == b"fmt ":
                if body + 8 > len(buf):
                    break
                _, channels, sr = struct.unpack("<HHI", buf[body : body + 8])
            elif cid == b"data":
                if channels <= 0 or sr <= 0:
                    raise AudioDecodeError("ffmpeg produced no audio", AudioErrorReason.NO_SAMPLES)
                return channels, sr, buf[body:]
            pos = body + size + (size & 1)
    raise AudioDecodeError("ffmpeg produced no audio", AudioErrorReason.NO_SAMPLES)


def _stream_wav(stream: IO[bytes], max_seconds: float | None, max_samples: int | None) -> tuple[np.ndarray, int]:
    """Mono samples from ffmpeg's WAV pipe, downmixed block by block (never all channels at once)."""
    channels, sr, rest = _wav_header(stream)
    frame_bytes = 4 * channels
    block_bytes = max(1, _BLOCK_SAMPLES // channels) * frame_bytes
    sink = _MonoSink(sr)
    while True:
        chunk = rest + stream.read(block_bytes)
        if len(chunk) < frame_bytes:
            break
        n = len(chunk) // frame_bytes
        rest = chunk[n * frame_bytes :]
        block = np.frombuffer(chunk, dtype="<f4", count=n * channels).reshape(n, channels)
        sink.add(_downmix(block))
        _check_samples(sink.frames, sr, channels, max_samples, while_decoding=True)
        if max_seconds is not None and sink.frames / sr > max_seconds + _DURATION_SLACK_S:
            raise _too_long(sink.frames / sr, max_seconds)
    if sink.frames == 0:
        raise AudioDecodeError("audio contains no samples", AudioErrorReason.NO_SAMPLES)
    return sink.finish(), sr


def _read_ffmpeg(source: AudioSource, max_seconds: float | None, max_samples: int | None, why: str) -> np.ndarray:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise AudioDecodeError(
            f"unsupported or corrupt audio ({why}; ffmpeg is not installed)", AudioErrorReason.UNDECODABLE
        )
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
        with tempfile.TemporaryFile() as errors:
            # Read the pipe as it comes (bounded memory); a timer ends a decoder that hangs.
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors)
            fired = threading.Event()

            def stop() -> None:
                fired.set()
                proc.kill()

            timer = threading.Timer(_FFMPEG_TIMEOUT_S, stop)
            timer.start()
            y: np.ndarray | None = None
            failure: AudioDecodeError | None = None
            try:
                assert proc.stdout is not None
                try:
                    y, _ = _stream_wav(proc.stdout, max_seconds, max_samples)
                except AudioDecodeError as exc:
                    failure = exc
                    proc.kill()  # past a limit, or nothing usable: stop decoding now
            finally:
                timer.cancel()
                if proc.stdout is not None:
                    proc.stdout.close()
                returncode = proc.wait()
            if fired.is_set():
                raise AudioDecodeError(f"decoding timed out after {_FFMPEG_TIMEOUT_S:g} s", AudioErrorReason.TIMEOUT)
            if failure is not None and failure.reason in (AudioErrorReason.TOO_LONG, AudioErrorReason.TOO_LARGE):
                raise failure
            if returncode != 0:
                errors.seek(0)
                err = errors.read(1 << 16).decode("utf-8", "replace").strip().splitlines()
                reason = err[-1] if err else f"ffmpeg exited with {returncode}"
                if any("matches no streams" in line for line in err):  # the last line is only ffmpeg's hint
                    reason = "the file has no audio stream"
                if tmp is not None:  # ffmpeg names its input: never echo the server's temp path to a client
                    reason = reason.replace(f"file:{tmp}", "input").replace(tmp, "input")
                raise AudioDecodeError(
                    f"unsupported or corrupt audio: {one_line(reason)}", AudioErrorReason.UNDECODABLE
                )
            if failure is not None:
                raise failure
            assert y is not None
            return y
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def load_audio(
    source: AudioSource, max_seconds: float | None = None, max_samples: int | None = DEFAULT_MAX_SAMPLES
) -> np.ndarray:
    """Decode ``source`` (path or bytes) to mono float32 at 22,050 Hz.

    Raises AudioDecodeError for empty, corrupt, unsupported, too-long (``max_seconds``) or
    too-large (``max_samples``: frames x channels at the native rate) input; both are checked
    from the header before decoding when the container has one, and again while decoding.
    Peak memory is about one 8 MiB block, at most 16 MiB of native-rate mono and the output.
    """
    _check_source(source)
    if max_seconds is not None:
        if max_seconds <= 0:
            raise ValueError("max_seconds must be positive")
        duration = probe_duration(source)
        if duration is not None and duration > max_seconds + _DURATION_SLACK_S:
            raise _too_long(duration, max_seconds)
    if max_samples is not None and max_samples <= 0:
        raise ValueError("max_samples must be positive")
    try:
        return _read_soundfile(source, max_seconds, max_samples)
    except AudioDecodeError:
        raise
    except MemoryError as exc:  # the bounds above make this unlikely; never let it become a 500
        raise AudioDecodeError("audio is too large to decode (out of memory)", AudioErrorReason.TOO_LARGE) from exc
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        why = one_line(getattr(exc, "error_string", None) or exc)
    return _read_ffmpeg(source, max_seconds, max_samples, why)
