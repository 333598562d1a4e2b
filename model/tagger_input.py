"""The pretrained music tagger's input, computed with numpy and librosa (no PyTorch).

musicnn (Pons & Serra 2019, ISC) reads 3-s windows of a 16-kHz, 96-band log-mel spectrogram.
The indexer and the service cut these windows for every clip (``model.features.cut_clips``) and
hand them to the exported music branch on ONNX Runtime; the PyTorch port in ``model.musicnn``
is needed only to train and to export.
"""

from __future__ import annotations

import librosa
import numpy as np

from model.features import centred_segment

# musicnn/configuration.py: SR, FFT_SIZE, FFT_HOP, N_MELS. 187 frames = extractor.py's
# librosa.time_to_frames(3, sr=16000, n_fft=512, hop_length=256) + 1: the 3-s input the models were trained on.
TAGGER_SR = 16000
TAGGER_N_FFT = 512
TAGGER_HOP = 256
TAGGER_N_MELS = 96
TAGGER_FRAMES = 187
TAGGER_WINDOW_SECONDS = 3.0
TAGGER_N_TAGS = 50
TAGGER_EMBED_DIM = 200  # the 'penultimate' layer

TAGGER_FRAME_BLOCK = 8192  # spectrogram frames computed at once (~131 s): memory flat in the song's length
_WINDOW_SAMPLES = int(TAGGER_WINDOW_SECONDS * TAGGER_SR)
_FLOAT16_MAX = float(np.finfo(np.float16).max)


def log_mel(y16: np.ndarray, start: int = 0, stop: int | None = None) -> np.ndarray:
    """musicnn's input representation of a 16-kHz mono signal: float32 [frames, 96], frames = 1 + len // 256
    (or only frames [start, stop), equal to those rows of the whole: memory bounded by the block).

    As musicnn's ``extractor.batch_data``: librosa power mel spectrogram (n_fft 512, hop 256, 96 Slaney mels,
    centred frames), rounded through float16 as musicnn (and its training pipeline) stored it, then
    log10(10000 x + 1) in float32. The clip at float16's maximum only guards against inf on absurd input levels.
    """
    y16 = np.asarray(y16, dtype=np.float32)
    stop = 1 + len(y16) // TAGGER_HOP if stop is None else stop
    mel = librosa.feature.melspectrogram(
        y=centred_segment(y16, start, stop, TAGGER_N_FFT, TAGGER_HOP),
        sr=TAGGER_SR,
        n_fft=TAGGER_N_FFT,
        hop_length=TAGGER_HOP,
        n_mels=TAGGER_N_MELS,
        center=False,
    ).T
    mel = np.minimum(mel, _FLOAT16_MAX).astype(np.float16).astype(np.float32)
    return np.log10(np.float32(10000) * mel + np.float32(1)).astype(np.float32)


def _window_first_frames(n_samples16: int, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """First mel frame of each 3-s window centred on its clip, shifted to lie inside the (>= 3 s) signal."""
    n_frames = 1 + n_samples16 // TAGGER_HOP
    centre = (starts + ends) / 2.0 * TAGGER_SR
    first_sample = np.clip(centre - _WINDOW_SAMPLES / 2.0, 0, n_samples16 - _WINDOW_SAMPLES)
    return np.clip(np.rint(first_sample / TAGGER_HOP).astype(np.int64), 0, n_frames - TAGGER_FRAMES)


def tagger_input(y: np.ndarray, sr: int, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Tagger input patches for clips [start, end) (seconds) of mono ``y``: float32 [n, TAGGER_FRAMES, 96].

    The clips are shorter (2 s) than the tagger's 3-s training input, so each gets the 3-s window centred on it,
    shifted to stay inside the song rather than padded (the model never saw padded input). Only a song shorter
    than 3 s is zero-padded at the end. The whole song is resampled once (soxr) and turned into one log-mel
    spectrogram, and the windows are cut from it by frame, exactly as musicnn's extractor cuts its patches. Against a
    separate spectrogram per 3-s window (measured on 40 real 30-s songs, 2-s clips every 2 s) only each window's
    first and last frame differ (the STFT's edge padding: max abs difference 3.5 log-mel units), interior frames are
    identical, and tag probabilities move by at most 0.044 (mean 5e-4); the one spectrogram is 2x faster
    (~1500 s of 22-kHz audio per second on one core, resampling included).
    """
    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1:
        raise ValueError(f"expected a mono signal, got shape {y.shape}")
    starts = np.asarray(starts, dtype=np.float64).reshape(-1)
    ends = np.asarray(ends, dtype=np.float64).reshape(-1)
    if starts.shape != ends.shape:
        raise ValueError(f"starts and ends differ in length: {starts.shape} vs {ends.shape}")
    if sr != TAGGER_SR:
        y = librosa.resample(y, orig_sr=sr, target_sr=TAGGER_SR, res_type="soxr_hq").astype(np.float32)
    if len(y) < _WINDOW_SAMPLES:
        y = np.pad(y, (0, _WINDOW_SAMPLES - len(y)))
    if len(starts) == 0:
        return np.zeros((0, TAGGER_FRAMES, TAGGER_N_MELS), np.float32)
    first = _window_first_frames(len(y), starts, ends)
    out = np.empty((len(first), TAGGER_FRAMES, TAGGER_N_MELS), np.float32)
    order = np.argsort(first, kind="stable")
    begin = 0
    for i in range(1, len(order) + 1):  # windows in blocks of at most TAGGER_FRAME_BLOCK frames
        if i < len(order) and first[order[i]] + TAGGER_FRAMES - first[order[begin]] <= TAGGER_FRAME_BLOCK:
            continue
        group = order[begin:i]
        lo = int(first[group].min())
        spec = log_mel(y, lo, int(first[group].max()) + TAGGER_FRAMES)
        out[group] = spec[first[group, None] - lo + np.arange(TAGGER_FRAMES)]
        begin = i
    return out
