"""Linear probes of the frozen backbones' outputs: which of them carry photo and song emotion.

Before a whole training run, a ridge (photos) or logistic (songs) probe tells cheaply whether
another view of a frozen backbone holds more of the targets. Each probe is fitted on the training
split and scored on validation, and, for a steadier figure, by 5-fold cross-validation over the
training and validation items together; the test split is never read.

- Photos (OASIS + Emotion6, human valence and arousal; Pearson r): EfficientNet-Lite0's last map
  mean (what the default model reads), its middle stages' means and spreads
  (``model.image_pooling: stages``) and the 24 colour statistics.
- Songs (Panda-4Q, 6 clips a song averaged per song; AUC of high valence and of high arousal):
  musicnn's penultimate layer and tags (what the default model reads), its pooled front- and
  mid-end maps (753 means, 753 maxima), the spectral statistics and a key-mode estimate from the
  clips' chroma (major/minor profile correlations).

    python scripts/probe_features.py --data-root ../shared/data --json runs/probe.json
"""

from __future__ import annotations

import argparse
import json
import logging
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegressionCV, RidgeCV
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import KFold

from model.config import load_config
from model.features import FeatureStats, feature_rows
from model.musicnn import MusicnnTagger
from model.networks import EfficientNetLite, image_affect_features, music_affect_features
from model.prepare import SPLITS, ImageSet, MusicSet
from model.train import build_train_data
from model.transforms import clip_input, image_input

IMAGE_SETS = {
    "last map mean (default)": ["last"],
    "last map mean + colour statistics (default model's inputs)": ["last", "colour"],
    "last map mean + middle stages + colour statistics (image_pooling: stages)": ["last", "stages", "colour"],
    "middle stages alone": ["stages"],
}
MUSIC_SETS = {
    "penultimate + tags (default)": ["penultimate", "tags"],
    "penultimate + tags + spectral statistics (default model's inputs)": ["penultimate", "tags", "spectral"],
    "pooled maps alone": ["mean_pool", "max_pool"],
    "penultimate + tags + pooled maps": ["penultimate", "tags", "mean_pool", "max_pool"],
    "penultimate + tags + pooled maps + spectral statistics": [
        "penultimate",
        "tags",
        "mean_pool",
        "max_pool",
        "spectral",
    ],
    "penultimate + tags + spectral statistics + key mode": ["penultimate", "tags", "spectral", "key_mode"],
    "key mode alone": ["key_mode"],
}
# Krumhansl-Kessler key profiles (C major, C minor): how strongly each pitch class belongs to a key.
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


def _standardised(x: np.ndarray, fit: np.ndarray, apply: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu, sd = x[fit].mean(0), x[fit].std(0) + 1e-6
    return (x[fit] - mu) / sd, (x[apply] - mu) / sd


def _ridge(x: np.ndarray, y: np.ndarray, fit: np.ndarray, apply: np.ndarray) -> np.ndarray:
    a, b = _standardised(x, fit, apply)
    return RidgeCV(alphas=np.logspace(0, 5, 11)).fit(a, y[fit]).predict(b)


def _logistic(x: np.ndarray, y: np.ndarray, fit: np.ndarray, apply: np.ndarray) -> np.ndarray:
    a, b = _standardised(x, fit, apply)
    return LogisticRegressionCV(Cs=np.logspace(-4, 1, 8), max_iter=2000).fit(a, y[fit]).decision_function(b)


Fit = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _scores(
    x: np.ndarray, y: np.ndarray, split: np.ndarray, model: Fit, score: Callable[[np.ndarray, np.ndarray], float]
) -> dict[str, float]:
    """Train -> validation, and 5-fold cross-validation over train + validation."""
    train, val = np.flatnonzero(split == SPLITS["train"]), np.flatnonzero(split == SPLITS["val"])
    dev = np.flatnonzero(split != SPLITS["test"])
    pred = np.zeros(len(y))
    for a, b in KFold(5, shuffle=True, random_state=0).split(dev):
        pred[dev[b]] = model(x, y, dev[a], dev[b])
    return {
        "val": round(float(score(y[val], model(x, y, train, val))), 3),
        "cv": round(float(score(y[dev], pred[dev])), 3),
    }


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def key_mode_features(chroma: np.ndarray) -> np.ndarray:
    """Major/minor mode of each clip's mean chroma [n, 12], a classic valence cue that the model's
    per-row chroma statistics hold only implicitly: the best correlation with the 12 major and 12
    minor key profiles, their difference, the better of the two (tonal clarity) and the chroma
    entropy."""

    def rotations(profile: np.ndarray) -> np.ndarray:
        keys = np.stack([np.roll(profile, k) for k in range(12)])
        return (keys - keys.mean(1, keepdims=True)) / keys.std(1, keepdims=True)

    z = (chroma - chroma.mean(1, keepdims=True)) / (chroma.std(1, keepdims=True) + 1e-8)
    major, minor = (z @ rotations(p).T / 12 for p in (MAJOR_PROFILE, MINOR_PROFILE))
    best_major, best_minor = major.max(1), minor.max(1)
    share = np.clip(chroma / chroma.sum(1, keepdims=True).clip(1e-8), 1e-8, 1)
    entropy = -(share * np.log(share)).sum(1)
    return np.stack([best_major, best_minor, best_major - best_minor, np.maximum(best_major, best_minor), entropy], 1)


def probe_images(images: ImageSet) -> dict:
    net = EfficientNetLite(0, pooling="stages").eval()
    last = net.net._conv_head.out_channels  # the last map's mean comes first, then the stages' statistics
    parts: dict[str, list[torch.Tensor]] = {"last": [], "stages": [], "colour": []}
    with torch.inference_mode():
        for s in range(0, len(images.va), 64):
            batch = torch.from_numpy(image_input(images.pixels[s : s + 64], None))
            h = net(batch)
            parts["last"].append(h[:, :last])
            parts["stages"].append(h[:, last:])
            parts["colour"].append(image_affect_features(batch))
    feats = {k: torch.cat(v).numpy() for k, v in parts.items()}
    out = {}
    for name, keys in IMAGE_SETS.items():
        x = np.concatenate([feats[k] for k in keys], axis=1)
        out[name] = {
            axis: _scores(x, images.va[:, j], images.split, _ridge, _pearson)
            for j, axis in enumerate(("valence", "arousal"))
        }
        print(f"photos  {name}: {out[name]}", flush=True)
    return {"n": {s: int((images.split == v).sum()) for s, v in SPLITS.items()}, "pearson_r": out}


def probe_songs(music: MusicSet, stats: FeatureStats, clips_per_song: int = 6) -> dict:
    rng = np.random.default_rng(0)
    panda = np.flatnonzero(music.sources == "panda4q")
    if len(panda) == 0 or music.tagger is None:
        raise SystemExit("no Panda-4Q clips with tagger input in the prepared data: is --data-root right?")
    windows = music.tagger
    pick = np.sort(
        np.concatenate(
            [
                rng.choice(rows, min(clips_per_song, len(rows)), replace=False)
                for rows in (panda[music.song[panda] == song] for song in np.unique(music.song[panda]))
            ]
        )
    )
    tagger = MusicnnTagger.load()
    parts: dict[str, list[torch.Tensor]] = {
        "tags": [],
        "penultimate": [],
        "mean_pool": [],
        "max_pool": [],
        "spectral": [],
    }
    with torch.inference_mode():
        for s in range(0, len(pick), 64):
            rows = pick[s : s + 64]
            outputs = tagger.forward_features(torch.from_numpy(windows[rows].astype(np.float32)))
            for key in ("tags", "penultimate", "mean_pool", "max_pool"):
                parts[key].append(outputs[key])
            parts["spectral"].append(music_affect_features(torch.from_numpy(clip_input(stats, music.features[rows]))))
    feats = {k: torch.cat(v).numpy() for k, v in parts.items()}
    feats["key_mode"] = key_mode_features(music.features[pick][:, feature_rows()["chroma"]].astype(np.float64).mean(2))
    songs, inverse = np.unique(music.song[pick], return_inverse=True)
    count = np.bincount(inverse)[:, None]

    def per_song(x: np.ndarray) -> np.ndarray:
        total = np.zeros((len(songs), x.shape[1]))
        np.add.at(total, inverse, x)
        return total / count

    va = per_song(music.va[pick])
    split = np.zeros(len(songs), np.int8)
    split[inverse] = music.split[pick]
    out = {}
    for name, keys in MUSIC_SETS.items():
        x = per_song(np.concatenate([feats[k] for k in keys], axis=1))
        out[name] = {
            axis: _scores(x, va[:, j] >= 0.5, split, _logistic, roc_auc_score)
            for j, axis in enumerate(("valence", "arousal"))
        }
        print(f"songs   {name}: {out[name]}", flush=True)
    return {"n_songs": {s: int((split == v).sum()) for s, v in SPLITS.items()}, "auc": out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=Path("configs/default.yaml"))
    ap.add_argument("--data-root", default="../shared/data")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--part", choices=("photos", "songs", "both"), default="both", help="which probes to run")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    cfg = load_config(args.config, [f"data.root={args.data_root}"])
    data = build_train_data(cfg, progress=False)  # the training run's splits and spectral standardisation
    result = {}
    if args.part in ("photos", "both"):
        result["photos"] = probe_images(data.images)
    if args.part in ("songs", "both"):
        result["songs"] = probe_songs(data.music, data.stats)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
