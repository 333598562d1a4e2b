"""The musicnn port: TensorFlow's own outputs reproduced, the input windows it is fed, the shipped weights file."""

from __future__ import annotations

from pathlib import Path

import librosa
import numpy as np
import pytest
import torch

from model.musicnn import DEFAULT_WEIGHTS, MusicnnTagger, tag_names
from model.tagger_input import (
    TAGGER_FRAMES,
    TAGGER_HOP,
    TAGGER_N_MELS,
    TAGGER_SR,
    _window_first_frames,
    log_mel,
    tagger_input,
)
from tests.support import REPO
from tests.support.scripts import load_script

GOLDEN = REPO / "tests" / "data" / "musicnn_golden.npz"

# musicnn/configuration.py MSD_LABELS, the order of the checkpoint's output layer
MSD_LABELS = [
    "rock", "pop", "alternative", "indie", "electronic", "female vocalists", "dance", "00s", "alternative rock",
    "jazz", "beautiful", "metal", "chillout", "male vocalists", "classic rock", "soul", "indie rock", "Mellow",
    "electronica", "80s", "folk", "90s", "chill", "instrumental", "punk", "oldies", "blues", "hard rock", "ambient",
    "acoustic", "experimental", "female vocalist", "guitar", "Hip-Hop", "70s", "party", "country", "easy listening",
    "sexy", "catchy", "funk", "electro", "heavy metal", "Progressive rock", "60s", "rnb", "indie pop", "sad", "House",
    "happy",
]  # fmt: skip

# float32 weights and float32 arithmetic on both sides; the difference is summation order only (measured 4.5e-7)
TOL_TAGS = 1e-4
TOL_FEATURES = 1e-3  # penultimate / pools, which reach ~100 (relative error ~1e-6)


@pytest.fixture(scope="module")
def tagger() -> MusicnnTagger:
    torch.set_num_threads(min(2, torch.get_num_threads()))
    return MusicnnTagger.load()


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    with np.load(GOLDEN) as z:
        return {k: z[k] for k in z.files}


def _synthetic_signal() -> np.ndarray:
    """The signal the converter fed to musicnn's extractor (built with numpy only, no data set)."""
    return load_script("convert_musicnn").synthetic_signal()


def test_weights_file_shipped_with_the_msd_tags() -> None:
    assert DEFAULT_WEIGHTS.is_file(), "model/pretrained/musicnn-msd.safetensors is missing"
    assert list(tag_names()) == MSD_LABELS
    assert (DEFAULT_WEIGHTS.parent / "LICENSE-musicnn.txt").is_file()


def test_load_fails_clearly_without_weights(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        MusicnnTagger.load(tmp_path / "absent.safetensors")


def test_port_matches_tensorflow(tagger: MusicnnTagger, golden: dict[str, np.ndarray]) -> None:
    assert list(golden["tag_names"]) == MSD_LABELS
    assert not any(p.requires_grad for p in tagger.parameters()) and not tagger.training
    with torch.inference_mode():
        out = tagger.forward_features(torch.from_numpy(golden["patches"]))
        tags, penultimate = tagger(torch.from_numpy(golden["patches"]))
    assert tags.shape == (len(golden["patches"]), 50) and penultimate.shape == (len(golden["patches"]), 200)
    np.testing.assert_allclose(tags.numpy(), golden["tags"], atol=TOL_TAGS, rtol=0)
    np.testing.assert_allclose(penultimate.numpy(), golden["penultimate"], atol=TOL_FEATURES, rtol=0)
    for key in ("logits", "mean_pool", "max_pool"):
        np.testing.assert_allclose(out[key].numpy(), golden[key], atol=TOL_FEATURES, rtol=1e-5, err_msg=key)
    # the patches are not all alike, so the test would catch e.g. a swapped layer
    assert np.ptp(golden["tags"], axis=0).max() > 0.3


def test_tagger_input_reproduces_musicnn_patches(golden: dict[str, np.ndarray]) -> None:
    """Clips whose 3-s windows start at musicnn's patch frames 0, 187, 374 give musicnn's extractor patches."""
    y = _synthetic_signal()
    first = np.array([0, 187, 374]) * TAGGER_HOP / TAGGER_SR
    x = tagger_input(y, TAGGER_SR, first + 0.5, first + 2.5)
    # librosa 0.11 here vs 0.10 for the golden data: float rounding, occasionally one float16 step of the mel
    np.testing.assert_allclose(x, golden["patches"][:3], atol=2e-3, rtol=0)
    assert np.abs(x - golden["patches"][:3]).mean() < 1e-5


def test_tagger_input_windows() -> None:
    sr = 22050
    t = np.arange(int(10.3 * sr)) / sr
    y = (0.3 * np.sin(2 * np.pi * 440 * t) * (1 + np.sin(2 * np.pi * 0.7 * t))).astype(np.float32)
    starts = np.arange(0, 10.3, 2.0)
    ends = np.minimum(starts + 2.0, 10.3)
    x = tagger_input(y, sr, starts, ends)
    assert x.shape == (len(starts), TAGGER_FRAMES, TAGGER_N_MELS) and x.dtype == np.float32
    assert np.isfinite(x).all()
    np.testing.assert_array_equal(x, tagger_input(y, sr, starts, ends))  # deterministic
    # a window is the 3-s span centred on its clip, shifted to stay inside the song
    n16 = int(round(len(y) * TAGGER_SR / sr))
    frames = _window_first_frames(n16, starts, ends)
    n_frames = 1 + n16 // TAGGER_HOP
    window = int(3 * TAGGER_SR)
    assert frames[0] == 0 and frames[-1] == round((n16 - window) / TAGGER_HOP)  # first and last clip: shifted in
    assert np.all(frames >= 0) and np.all(frames * TAGGER_HOP + window <= n16 + TAGGER_HOP // 2)
    centre_frames = (starts + ends) / 2 * TAGGER_SR / TAGGER_HOP
    inner = (centre_frames >= TAGGER_FRAMES / 2) & (centre_frames <= n_frames - TAGGER_FRAMES / 2)
    assert np.all(np.abs(frames[inner] + TAGGER_FRAMES / 2 - centre_frames[inner]) <= 1)
    # and it is cut from the one spectrogram of the whole (resampled) song
    y16 = librosa.resample(y, orig_sr=sr, target_sr=TAGGER_SR, res_type="soxr_hq")
    spec = log_mel(y16)
    np.testing.assert_array_equal(x, spec[frames[:, None] + np.arange(TAGGER_FRAMES)])


def test_tagger_input_short_signal(tagger: MusicnnTagger) -> None:
    sr = 16000
    y = (0.2 * np.sin(2 * np.pi * 330 * np.arange(int(1.2 * sr)) / sr)).astype(np.float32)
    x = tagger_input(y, sr, np.array([0.0]), np.array([1.2]))
    assert x.shape == (1, TAGGER_FRAMES, TAGGER_N_MELS)
    assert x[0, :60].max() > 1 and np.all(x[0, 80:] == 0)  # the signal, then zero padding (silence) to 3 s
    tags, pen = tagger.predict(x)
    assert tags.shape == (1, 50) and pen.shape == (1, 200) and np.isfinite(tags).all()
    assert tagger_input(y, sr, np.array([]), np.array([])).shape == (0, TAGGER_FRAMES, TAGGER_N_MELS)
