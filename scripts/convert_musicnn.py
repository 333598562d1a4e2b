"""Convert musicnn 0.1.0's MSD_musicnn TF1 checkpoint to safetensors, plus golden outputs for the PyTorch port.

Run ONCE, in a throwaway venv (TensorFlow must never be a dependency of the service or of CI)::

    python3 -m venv /tmp/tfenv
    /tmp/tfenv/bin/pip install tensorflow-cpu==2.15.1 'numpy<2' 'librosa==0.10.*' safetensors
    /tmp/tfenv/bin/pip install --no-deps musicnn==0.1.0   # its pinned deps (tensorflow 1.x) do not install on 3.11
    TF_CPP_MIN_LOG_LEVEL=3 /tmp/tfenv/bin/python scripts/convert_musicnn.py
    rm -rf /tmp/tfenv

It writes

* ``model/pretrained/musicnn-msd.safetensors``: the 792,079 inference weights (float32, ~3.2 MB; the Adam slots
  in the checkpoint are dropped), already in the layout and names of ``model.musicnn.MusicnnTagger``, with the 50
  MSD tag names (JSON) and the provenance in the metadata;
* ``tests/data/musicnn_golden.npz``: log-mel input patches cut by musicnn's own ``extractor.batch_data`` from
  :func:`synthetic_signal` (numpy only, no data set) plus a silent patch, and what TF computes for them with
  musicnn's own graph (``models.define_model``) in inference mode (``is_training=False``, BN moving statistics):
  sigmoid tags, logits, the 200-d 'penultimate' layer and the 753-d mean/max pools.

The module imports no TensorFlow at top level so the test can reuse :func:`synthetic_signal`.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SR = 16000
N_PATCHES = 3  # musicnn's batch_data cuts non-overlapping 187-frame patches: 10 s of audio gives 3
SIGNAL_SECONDS = 10.0


def _hash_noise(n: int, seed: int) -> np.ndarray:
    """Deterministic white noise in [-1, 1) from an integer hash (no RNG, so any numpy version reproduces it)."""
    x = np.arange(n, dtype=np.uint64) + np.uint64(seed * 0x9E3779B97F4A7C15 % 2**64)
    x ^= x >> np.uint64(33)
    x *= np.uint64(0xFF51AFD7ED558CCD)
    x ^= x >> np.uint64(33)
    x *= np.uint64(0xC4CEB9FE1A85EC53)
    x ^= x >> np.uint64(33)
    return ((x >> np.uint64(40)).astype(np.float64) / float(1 << 23) - 1.0).astype(np.float32)


def synthetic_signal(seconds: float = SIGNAL_SECONDS, sr: int = SR) -> np.ndarray:
    """A 10-s float32 test signal with music-like structure: a soft chord, a drum groove with bass, a minor chirp.

    Three distinct 3-s sections so the golden patches exercise different tag patterns, not one texture.
    """
    n = int(round(seconds * sr))
    t = np.arange(n, dtype=np.float64) / sr
    y = np.zeros(n)

    def tone(f0: float, harmonics: int = 5) -> np.ndarray:
        return sum(np.sin(2 * np.pi * f0 * k * t) / k**1.5 for k in range(1, harmonics + 1))

    # 0-3.3 s: C major chord (C4 E4 G4 C5), slow tremolo
    sec = t < 3.3
    chord = tone(261.63) + tone(329.63) + tone(392.0) + 0.5 * tone(523.25)
    y += sec * 0.12 * chord * (0.75 + 0.25 * np.sin(2 * np.pi * 0.5 * t))
    # 3.3-6.6 s: 120 bpm groove: kick (decaying 55 Hz sine), hi-hat noise bursts on 8ths, bass line
    sec = (t >= 3.3) & (t < 6.6)
    beat = np.mod(t, 0.5)
    eighth = np.mod(t, 0.25)
    kick = np.sin(2 * np.pi * 55.0 * beat * (1 + 2 * np.exp(-beat * 30))) * np.exp(-beat * 12)
    hat = _hash_noise(n, 1) * np.exp(-eighth * 60)
    bass = np.sin(2 * np.pi * np.where(np.mod(t, 2.0) < 1.0, 82.41, 98.0) * t)
    y += sec * (0.5 * kick + 0.15 * hat + 0.2 * bass)
    # 6.6-10 s: A minor chord under a rising chirp with a little noise
    sec = t >= 6.6
    f_inst = 200.0 * (20.0 ** ((t - 6.6) / 3.4))
    phase = 2 * np.pi * np.cumsum(f_inst) / sr
    y += sec * (0.1 * (tone(220.0) + tone(261.63) + tone(329.63)) + 0.2 * np.sin(phase) + 0.02 * _hash_noise(n, 2))
    return (0.8 * y / np.max(np.abs(y))).astype(np.float32)


def _tf_to_torch(reader: Any) -> dict[str, np.ndarray]:  # a tf.compat.v1.train.CheckpointReader
    """Map musicnn's TF variable names/layouts (NHWC, [kh, kw, in, out]) onto MusicnnTagger's state dict."""
    out: dict[str, np.ndarray] = {}

    def bn(tf_name: str, pt_name: str) -> None:
        for tf_key, pt_key in [("gamma", "weight"), ("beta", "bias"), ("moving_mean", "running_mean")]:
            out[f"{pt_name}.{pt_key}"] = reader.get_tensor(f"{tf_name}/{tf_key}")
        out[f"{pt_name}.running_var"] = reader.get_tensor(f"{tf_name}/moving_variance")

    def conv2d(tf_name: str, pt_name: str) -> None:
        out[f"{pt_name}.weight"] = reader.get_tensor(f"{tf_name}/kernel").transpose(3, 2, 0, 1)  # -> [out, in, kh, kw]
        out[f"{pt_name}.bias"] = reader.get_tensor(f"{tf_name}/bias")

    def conv1d(tf_name: str, pt_name: str) -> None:
        # the mid-end kernels span the whole feature axis ([7, C, 1, 64]): a Conv1d over time with C channels
        out[f"{pt_name}.weight"] = reader.get_tensor(f"{tf_name}/kernel")[:, :, 0, :].transpose(2, 1, 0)
        out[f"{pt_name}.bias"] = reader.get_tensor(f"{tf_name}/bias")

    def dense(tf_name: str, pt_name: str) -> None:
        out[f"{pt_name}.weight"] = reader.get_tensor(f"{tf_name}/kernel").T
        out[f"{pt_name}.bias"] = reader.get_tensor(f"{tf_name}/bias")

    # creation order in musicnn/models.py fixes the TF auto-names
    bn("batch_normalization", "input_bn")
    for i in range(2):  # timbral 7x38, 7x67
        conv2d(f"conv2d_{i}" if i else "conv2d", f"timbral.{i}.conv")
        bn(f"batch_normalization_{i + 1}", f"timbral.{i}.bn")
    for i in range(3):  # temporal 128x1, 64x1, 32x1
        conv2d(f"conv2d_{i + 2}", f"temporal.{i}.conv")
        bn(f"batch_normalization_{i + 3}", f"temporal.{i}.bn")
    for i in range(3):  # mid-end 7-tap convs
        conv1d(f"conv2d_{i + 5}", f"midend.{i}.conv")
        bn(f"batch_normalization_{i + 6}", f"midend.{i}.bn")
    bn("batch_normalization_9", "pool_bn")
    dense("dense", "dense")
    bn("batch_normalization_10", "dense_bn")
    dense("dense_1", "classifier")
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


def main() -> None:
    import librosa
    import musicnn
    import soundfile as sf
    import tensorflow as tf
    from musicnn import configuration, models
    from musicnn.extractor import batch_data  # also disables eager execution, as musicnn does
    from safetensors.numpy import save_file

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=REPO / "model" / "pretrained" / "musicnn-msd.safetensors")
    parser.add_argument("--golden", type=Path, default=REPO / "tests" / "data" / "musicnn_golden.npz")
    args = parser.parse_args()

    prefix = os.path.join(os.path.dirname(musicnn.__file__), "MSD_musicnn", "")  # files are named '.index' etc.
    labels = list(configuration.MSD_LABELS)
    n_frames = 187
    assert n_frames == librosa.time_to_frames(3, sr=SR, n_fft=512, hop_length=256) + 1  # as extractor.py

    # --- weights ---
    reader = tf.compat.v1.train.NewCheckpointReader(prefix)
    tensors = _tf_to_torch(reader)
    n_params = sum(v.size for v in tensors.values())
    args.weights.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        tensors,
        str(args.weights),
        metadata={
            "format": "pt",
            "model": "MSD_musicnn",
            "tag_names": json.dumps(labels),
            "source": "PyPI musicnn 0.1.0, musicnn/MSD_musicnn (Pons & Serra 2019), ISC licence",
            "converted_by": "scripts/convert_musicnn.py",
            "sample_rate": str(SR),
            "n_mels": "96",
            "n_frames": str(n_frames),
        },
    )
    print(f"wrote {args.weights} ({n_params} parameters, {args.weights.stat().st_size} bytes)")

    # --- golden inputs: musicnn's own feature pipeline on the synthetic signal ---
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "synthetic.wav"
        sf.write(wav, synthetic_signal(), SR, subtype="FLOAT")
        batch, _ = batch_data(str(wav), n_frames, n_frames)
    assert batch.shape == (N_PATCHES, n_frames, 96), batch.shape
    patches = np.concatenate([batch, np.zeros((1, n_frames, 96))]).astype(np.float32)  # + silence

    # --- golden outputs: musicnn's graph, inference mode ---
    tf.compat.v1.reset_default_graph()
    with tf.name_scope("model"):
        x = tf.compat.v1.placeholder(tf.float32, [None, n_frames, 96])
        is_training = tf.compat.v1.placeholder(tf.bool)
        y, *_, mean_pool, max_pool, penultimate = models.define_model(x, is_training, "MSD_musicnn", len(labels))
        tags = tf.nn.sigmoid(y)
    with tf.compat.v1.Session() as sess:
        tf.compat.v1.train.Saver().restore(sess, prefix)
        out = sess.run(
            {"tags": tags, "logits": y, "penultimate": penultimate, "mean_pool": mean_pool, "max_pool": max_pool},
            feed_dict={x: patches, is_training: False},
        )
    args.golden.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.golden,
        patches=patches,
        signal_seconds=np.float32(SIGNAL_SECONDS),
        tag_names=np.array(labels),
        **{k: v.astype(np.float32) for k, v in out.items()},
    )
    print(f"wrote {args.golden} ({args.golden.stat().st_size} bytes)")
    for i, p in enumerate(out["tags"]):
        top = np.argsort(-p)[:5]
        print(f"patch {i}: " + ", ".join(f"{labels[j]} {p[j]:.2f}" for j in top))


if __name__ == "__main__":
    main()
