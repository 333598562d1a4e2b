"""CDCML's 193 x 87 hand-crafted feature matrix per 2-second clip, computed fast.

Rows (see :func:`feature_rows`): 40 MFCC, 12 chroma, 7 spectral contrast, 6 tonnetz,
128 log-mel, all at n_fft=2048, hop 512, 22,050 Hz (87 frames = 2 s).

Speed: one STFT per signal; mel, chroma and contrast are derived from it, tonnetz from the
chroma (not from a CQT, which would cost more than everything else together), and clips are
windows into the whole-signal frames instead of re-running librosa per clip.

Clip independence: librosa's per-call ``power_to_db(top_db=80)`` floors (in log-mel, hence
MFCC, and in spectral contrast) are relative to the loudest value *of the array it is given*.
We keep the un-floored dB values per frame and apply the 80 dB floor per clip, so a clip's
features equal librosa run on that clip alone (bar the edge frames, which see the neighbouring
audio instead of zero padding) and do not depend on how loud the rest of the track is
(30-second training previews and full indexed tracks give the same clip features).

Chroma uses a fixed A440 reference (``tuning=0``) instead of librosa's per-call estimate.
The estimate is noise on real music: on 113 Panda-4Q previews, estimating from every 4th frame
instead of every frame moved it by more than 0.1 semitone for 20% of tracks (up to 0.47). It
would also make a clip depend on the rest of the signal, and it cost 40% of extraction time.

Clip policy (:func:`cut_clips`): clips start every ``round(hop_seconds * 22050 / 512)`` frames
and span 87 frames (2 s of samples). After the last full clip, audio of at least 1 s that no
clip covers gets one extra clip aligned to the end of the signal (real frames, no padding);
a shorter uncovered tail is dropped and counted in ``n_short``. A signal shorter than 2 s
gives no clips and ``n_short == 1``. A clip whose RMS (over its samples) is below -60 dBFS
(full scale = 1.0) is skipped and counted in ``n_silent``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import librosa
import numpy as np
import scipy.fft

from model.audio import CLIP_FRAMES, CLIP_SECONDS, HOP_LENGTH, N_FFT, SAMPLE_RATE

N_MFCC = 40
N_CHROMA = 12
N_CONTRAST = 7
N_TONNETZ = 6
N_MELS = 128
N_FEATURES = N_MFCC + N_CHROMA + N_CONTRAST + N_TONNETZ + N_MELS  # 193

TOP_DB = 80.0  # librosa's power_to_db default, applied per clip
CHROMA_TUNING = 0.0  # A440 reference; see the module docstring
SILENCE_DBFS = -60.0
MIN_TAIL_SECONDS = 1.0
DELTA_WIDTH = 9  # librosa.feature.delta default: +-4 frames (~93 ms each side)
STD_FLOOR = 1e-6
CLIP_SAMPLES = int(round(CLIP_SECONDS * SAMPLE_RATE))  # 44,100 samples -> 87 centred frames
# Frames analysed at once by cut_clips (~95 s): a 10-minute song's whole-signal STFT alone took
# ~400 MB; in blocks the analysis stays near 100 MB whatever the length, with identical features.
FRAME_BLOCK = 4096

_BLOCKS = (
    ("mfcc", N_MFCC),
    ("chroma", N_CHROMA),
    ("contrast", N_CONTRAST),
    ("tonnetz", N_TONNETZ),
    ("logmel", N_MELS),
)


def feature_rows() -> dict[str, slice]:
    """Row slices of the five blocks in the 193-row matrix, in order."""
    rows, start = {}, 0
    for name, n in _BLOCKS:
        rows[name] = slice(start, start + n)
        start += n
    return rows


_ROWS = feature_rows()


@dataclass
class ClipSet:
    """Features of the kept clips of one signal, with their time spans and skip counts."""

    features: np.ndarray  # [n, 193, 87] float32
    starts: np.ndarray  # [n] seconds
    ends: np.ndarray  # [n] seconds
    n_silent: int = 0
    n_short: int = 0
    tagger: np.ndarray | None = None  # [n, 187, 96] music-tagger log-mel windows, when asked for

    def __len__(self) -> int:
        return int(self.features.shape[0])


@dataclass
class _Parts:
    """Per-frame quantities before the dB floors; the floors are applied per window."""

    logmel: np.ndarray  # [128, T] power_to_db(mel, top_db=None)
    chroma: np.ndarray  # [12, T]
    tonnetz: np.ndarray  # [6, T]
    peak_db: np.ndarray  # [7, T] power_to_db(contrast peak, top_db=None)
    valley_db: np.ndarray  # [7, T]

    @property
    def n_frames(self) -> int:
        return int(self.logmel.shape[-1])


def _contrast_peak_valley(
    S: np.ndarray, freq: np.ndarray, fmin: float = 200.0, n_bands: int = 6, quantile: float = 0.02
) -> tuple[np.ndarray, np.ndarray]:
    """librosa.feature.spectral_contrast's peak and valley (same bands and quantile).

    Split out so the dB floor can be applied per clip; np.partition replaces the full sort.
    """
    octa = np.zeros(n_bands + 2)
    octa[1:] = fmin * (2.0 ** np.arange(0, n_bands + 1))
    peak = np.zeros((n_bands + 1, S.shape[-1]))
    valley = np.zeros_like(peak)
    for k, (f_low, f_high) in enumerate(zip(octa[:-1], octa[1:], strict=True)):
        band = np.logical_and(freq >= f_low, freq <= f_high)
        idx = np.flatnonzero(band)
        if k > 0:
            band[idx[0] - 1] = True
        if k == n_bands:
            band[idx[-1] + 1 :] = True
        sub = S[band, :]
        if k < n_bands:
            sub = sub[:-1, :]
        q = max(int(np.rint(quantile * np.sum(band))), 1)
        rows = sub.shape[0]
        part = np.partition(sub, (q - 1, rows - q), axis=0) if 2 * q <= rows else np.sort(sub, axis=0)
        valley[k] = part[:q].mean(axis=0)
        peak[k] = part[-q:].mean(axis=0)
    return peak, valley


def _signal(y: np.ndarray) -> np.ndarray:
    y = np.ascontiguousarray(y, dtype=np.float32)
    if y.ndim != 1:
        raise ValueError(f"expected a mono 1-D signal, got shape {y.shape}")
    if not np.isfinite(y).all():
        raise ValueError("signal contains NaN or infinite samples")
    return y


def centred_segment(y: np.ndarray, start: int, stop: int, n_fft: int, hop: int) -> np.ndarray:
    """The samples that frames [start, stop) of librosa's centred, zero-padded STFT of ``y`` see:
    an STFT of this segment with ``center=False`` gives exactly those frames, so a long signal
    can be analysed in blocks of frames with memory bounded by the block, not the signal."""
    lo = start * hop - n_fft // 2
    hi = (stop - 1) * hop + n_fft - n_fft // 2
    seg = y[min(max(lo, 0), len(y)) : max(min(hi, len(y)), 0)]
    left = max(0, -lo)
    return np.pad(seg, (left, (hi - lo) - left - len(seg)))


def _parts(y: np.ndarray, sr: int, start: int = 0, stop: int | None = None) -> _Parts:
    """Per-frame quantities of frames [start, stop) (default: all ``1 + len(y) // HOP_LENGTH``),
    equal to librosa's on the whole signal: centred frames, zero padding at the edges, Hann window."""
    stop = 1 + len(y) // HOP_LENGTH if stop is None else stop
    seg = centred_segment(y, start, stop, N_FFT, HOP_LENGTH)
    mag = np.abs(librosa.stft(seg, n_fft=N_FFT, hop_length=HOP_LENGTH, center=False))
    power = mag**2
    mel = librosa.feature.melspectrogram(S=power, sr=sr, n_fft=N_FFT, n_mels=N_MELS)
    logmel = librosa.power_to_db(mel, top_db=None)
    chroma = librosa.feature.chroma_stft(S=power, sr=sr, n_fft=N_FFT, tuning=CHROMA_TUNING)
    tonnetz = librosa.feature.tonnetz(sr=sr, chroma=chroma)
    freq = librosa.fft_frequencies(sr=sr, n_fft=N_FFT)
    peak, valley = _contrast_peak_valley(mag, freq)
    return _Parts(
        logmel=logmel,
        chroma=chroma,
        tonnetz=tonnetz,
        peak_db=librosa.power_to_db(peak, top_db=None),
        valley_db=librosa.power_to_db(valley, top_db=None),
    )


def _floor(db: np.ndarray) -> np.ndarray:
    """power_to_db's top_db floor over the last two axes (one floor per window)."""
    return np.maximum(db, db.max(axis=(-2, -1), keepdims=True) - TOP_DB)


def _assemble(p: _Parts, index: np.ndarray | None = None) -> np.ndarray:
    """[..., 193, F] features for windows ``index`` ([n, F] frame indices) or the whole signal."""

    def take(a: np.ndarray) -> np.ndarray:
        return a if index is None else np.moveaxis(a[:, index], 0, 1)  # [n, rows, F]

    logmel = _floor(take(p.logmel))
    mfcc = scipy.fft.dct(logmel, type=2, norm="ortho", axis=-2)[..., :N_MFCC, :]
    contrast = _floor(take(p.peak_db)) - _floor(take(p.valley_db))
    out = np.empty(logmel.shape[:-2] + (N_FEATURES, logmel.shape[-1]), dtype=np.float32)
    out[..., _ROWS["mfcc"], :] = mfcc
    out[..., _ROWS["chroma"], :] = take(p.chroma)
    out[..., _ROWS["contrast"], :] = contrast
    out[..., _ROWS["tonnetz"], :] = take(p.tonnetz)
    out[..., _ROWS["logmel"], :] = logmel
    return out


def frame_features(y: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """[193, T] features of the whole signal, T = 1 + len(y) // 512.

    Equals librosa's functions called once on the whole signal (dB floors relative to the
    whole signal); :func:`cut_clips` instead floors each clip on its own.
    """
    _check_sr(sr)
    return _assemble(_parts(_signal(y), sr))


def _check_sr(sr: int) -> None:
    if sr != SAMPLE_RATE:
        raise ValueError(f"features are defined at {SAMPLE_RATE} Hz; resample first (got {sr})")


def clip_frame_starts(n_samples: int, hop_seconds: float = CLIP_SECONDS) -> tuple[list[int], int]:
    """First frame of every clip of a signal of ``n_samples`` (before silence), and n_short."""
    if hop_seconds <= 0:
        raise ValueError("hop_seconds must be positive")
    if n_samples < CLIP_SAMPLES:
        return [], 1 if n_samples > 0 else 0
    hop_frames = max(1, int(round(hop_seconds * SAMPLE_RATE / HOP_LENGTH)))
    last = (n_samples - CLIP_SAMPLES) // HOP_LENGTH  # last frame a full clip can start at
    starts = list(range(0, last + 1, hop_frames))
    uncovered = n_samples - (starts[-1] * HOP_LENGTH + CLIP_SAMPLES)
    n_short = 0
    if uncovered >= MIN_TAIL_SECONDS * SAMPLE_RATE:
        starts.append(1 + n_samples // HOP_LENGTH - CLIP_FRAMES)  # end-aligned: last 87 frames
    elif uncovered > 0:
        n_short = 1
    return starts, n_short


def _frame_blocks(frames: np.ndarray) -> list[np.ndarray]:
    """Consecutive clips (by first frame, ascending) grouped so each group spans at most
    ``FRAME_BLOCK`` frames (a clip longer than that alone)."""
    groups: list[np.ndarray] = []
    begin = 0
    for i in range(1, len(frames) + 1):
        if i == len(frames) or frames[i] + CLIP_FRAMES - frames[begin] > FRAME_BLOCK:
            groups.append(np.arange(begin, i))
            begin = i
    return groups


def cut_clips(
    y: np.ndarray, sr: int = SAMPLE_RATE, hop_seconds: float = CLIP_SECONDS, *, tagger: bool = False
) -> ClipSet:
    """2-second clips of ``y`` every ``hop_seconds`` (policy in the module docstring).

    ``tagger``: also cut the pretrained music tagger's input for every kept clip (a 3-s
    16 kHz log-mel window centred on the clip, :func:`model.tagger_input.tagger_input`).
    """
    _check_sr(sr)
    y = _signal(y)
    starts, n_short = clip_frame_starts(int(y.shape[0]), hop_seconds)
    n = len(y)
    empty = ClipSet(
        features=np.zeros((0, N_FEATURES, CLIP_FRAMES), np.float32),
        starts=np.zeros(0),
        ends=np.zeros(0),
        n_short=n_short,
    )
    if not starts:
        return empty
    first = np.asarray(starts, dtype=np.int64) * HOP_LENGTH
    last = np.minimum(first + CLIP_SAMPLES, n)
    energy = np.concatenate(([0.0], np.cumsum(np.square(y, dtype=np.float64))))
    rms = np.sqrt((energy[last] - energy[first]) / (last - first))
    loud = rms >= 10.0 ** (SILENCE_DBFS / 20.0)
    n_silent = int(np.count_nonzero(~loud))
    if not loud.any():
        empty.n_silent = n_silent
        return empty
    frames = np.asarray(starts, dtype=np.int64)[loud]
    feats = np.empty((len(frames), N_FEATURES, CLIP_FRAMES), np.float32)
    for group in _frame_blocks(frames):  # bounded memory: a block of frames at a time
        lo = int(frames[group[0]])
        index = frames[group, None] - lo + np.arange(CLIP_FRAMES)[None, :]
        feats[group] = _assemble(_parts(y, sr, lo, int(frames[group[-1]]) + CLIP_FRAMES), index)
    begin = frames * HOP_LENGTH / SAMPLE_RATE
    ends = np.minimum(begin + CLIP_SECONDS, n / SAMPLE_RATE)
    tagger_windows = None
    if tagger:
        from model.tagger_input import tagger_input

        tagger_windows = tagger_input(y, sr, begin, ends)
    return ClipSet(
        features=np.ascontiguousarray(feats, dtype=np.float32),
        starts=begin,
        ends=ends,
        n_silent=n_silent,
        n_short=n_short,
        tagger=tagger_windows,
    )


def _as_3d(features: np.ndarray) -> np.ndarray:
    if features.ndim != 3 or features.shape[1] != N_FEATURES:
        raise ValueError(f"expected features [n, {N_FEATURES}, frames], got {features.shape}")
    return features


@dataclass
class FeatureStats:
    """Per-row standardisation fitted on training clips; stored in checkpoint metadata."""

    mean: np.ndarray  # [193]
    std: np.ndarray  # [193]
    delta_width: int = field(default=DELTA_WIDTH)

    @classmethod
    def fit(cls, features: np.ndarray | Iterable[np.ndarray]) -> FeatureStats:
        """Mean and std of each row over all clips and frames ([n, 193, F] or chunks of it)."""
        if isinstance(features, np.ndarray):
            # Slices keep the float64 working copy small for large training sets.
            chunks: Iterable[np.ndarray] = (features[i : i + 512] for i in range(0, len(features), 512))
        else:
            chunks = features
        total = np.zeros(N_FEATURES)
        total_sq = np.zeros(N_FEATURES)
        count = 0
        for chunk in chunks:
            x = _as_3d(np.asarray(chunk)).astype(np.float64)
            total += x.sum(axis=(0, 2))
            total_sq += np.square(x).sum(axis=(0, 2))
            count += x.shape[0] * x.shape[2]
        if count == 0:
            raise ValueError("cannot fit feature statistics on zero clips")
        mean = total / count
        var = np.maximum(total_sq / count - np.square(mean), 0.0)
        std = np.maximum(np.sqrt(var), STD_FLOOR)
        return cls(mean=mean.astype(np.float32), std=std.astype(np.float32))

    def standardise(self, features: np.ndarray) -> np.ndarray:
        x = _as_3d(np.asarray(features, dtype=np.float32))
        return (x - self.mean[None, :, None]) / self.std[None, :, None]

    def to_network_input(self, features: np.ndarray) -> np.ndarray:
        """float32 [n, 3, 193, F]: standardised features, their delta and delta-delta in time.

        Deltas (librosa.feature.delta, Savitzky-Golay, width ``delta_width``, 'interp' edges)
        are taken of the standardised features so all three channels share one scale.
        """
        x = self.standardise(features)
        out = np.empty((x.shape[0], 3) + x.shape[1:], dtype=np.float32)
        out[:, 0] = x
        if x.shape[0]:
            out[:, 1] = librosa.feature.delta(x, width=self.delta_width, order=1, axis=-1)
            out[:, 2] = librosa.feature.delta(x, width=self.delta_width, order=2, axis=-1)
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able lists (checkpoint metadata)."""
        return {
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "delta_width": int(self.delta_width),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureStats:
        mean = np.asarray(data["mean"], dtype=np.float32)
        std = np.asarray(data["std"], dtype=np.float32)
        if mean.shape != (N_FEATURES,) or std.shape != (N_FEATURES,):
            raise ValueError(f"feature stats must have {N_FEATURES} values each")
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std > 0)):
            raise ValueError("feature stats must be finite with positive std")
        return cls(mean=mean, std=std, delta_width=int(data.get("delta_width", DELTA_WIDTH)))
