"""``photoscore evaluate``: Table 3 metrics, ranking metrics and baselines on held-out pairs."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import Ridge
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from model.checkpoint import load_checkpoint, resolve_device
from model.config import TrainConfig
from model.features import FeatureStats
from model.metrics import mae, mse, quadrant_auc, ranking_metrics, va_metrics
from model.networks import CDCML, image_affect_features, music_affect_features
from model.pairs import Pairs, build_pairs, similarity
from model.prepare import SPLITS, PreparedData, prepare, quadrant
from model.transforms import clip_input, image_input

log = logging.getLogger(__name__)
MAX_RANK_CLIPS = 1500
REAL_AUDIO_SOURCES = ("panda4q", "deam", "manifest")


def _batches(n: int, size: int = 128):
    for s in range(0, n, size):
        yield np.arange(s, min(n, s + size))


@torch.inference_mode()
def embed_images(model: CDCML, pixels: np.ndarray, size: int, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    embs, vas = [], []
    for sl in _batches(len(pixels)):
        e = model.embed_image(torch.from_numpy(image_input(pixels[sl], None)).to(device))
        embs.append(e.cpu())
        vas.append(model.image_va(e).cpu())
    return torch.cat(embs).numpy(), torch.cat(vas).numpy()


@torch.inference_mode()
def embed_clips(
    model: CDCML, stats: FeatureStats, features: np.ndarray, device: torch.device, tagger: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings and calibrated VA of clips; ``tagger`` feeds a pretrained-tagger backbone."""
    model.eval()
    embs, vas = [], []
    if model.cfg.uses_tagger and tagger is None:
        raise ValueError("this model's music branch needs tagger input: prepare data with data.tagger_input=true")
    for sl in _batches(len(features)):
        spectral = torch.from_numpy(clip_input(stats, features[sl])).to(device)
        windows = torch.from_numpy(tagger[sl].astype(np.float32)).to(device) if tagger is not None else None
        e = model.embed_clips(spectral, windows)
        embs.append(e.cpu())
        vas.append(model.music_va(e).cpu())
    return torch.cat(embs).numpy(), torch.cat(vas).numpy()


@torch.inference_mode()
def pair_scores(model: CDCML, ei: np.ndarray, em: np.ndarray, device: torch.device) -> np.ndarray:
    """Similarity-predictor output for aligned rows."""
    out = []
    for s in range(0, len(ei), 8192):
        a = torch.from_numpy(ei[s : s + 8192]).to(device)
        b = torch.from_numpy(em[s : s + 8192]).to(device)
        out.append(model.similarity(a, b).cpu())
    return torch.cat(out).numpy() if out else np.zeros(0, np.float32)


def matrix_scores(model: CDCML, ei: np.ndarray, em: np.ndarray, device: torch.device) -> np.ndarray:
    """Similarity-predictor scores for every image (rows) against every clip (columns)."""
    rows = [pair_scores(model, np.repeat(ei[i : i + 1], len(em), 0), em, device) for i in range(len(ei))]
    return np.stack(rows) if rows else np.zeros((0, len(em)), np.float32)


def rank_clip_subset(clip_idx: np.ndarray, seed: int) -> np.ndarray:
    if len(clip_idx) <= MAX_RANK_CLIPS:
        return clip_idx
    return np.sort(np.random.default_rng(seed).choice(clip_idx, MAX_RANK_CLIPS, replace=False))


def method_metrics(
    *,
    sim_pred: np.ndarray,
    pairs: Pairs,
    rank_scores: np.ndarray,
    rank_true: np.ndarray,
    img_va_pred: np.ndarray | None,
    img_va_true: np.ndarray,
    clip_va_pred: np.ndarray | None,
    clip_va_true: np.ndarray,
    clip_weak: np.ndarray,
    clip_quadrant_groups: tuple | None,
) -> dict[str, float]:
    """One row of the results table."""
    out = {"sim_mse": mse(sim_pred, pairs.similarity), "sim_mae": mae(sim_pred, pairs.similarity)}
    out |= ranking_metrics(rank_scores, rank_true, 10)
    if img_va_pred is not None:
        out |= va_metrics("image", img_va_pred, img_va_true)
    if clip_va_pred is not None:
        strong = ~clip_weak
        if strong.sum() >= 3:
            out |= va_metrics("music", clip_va_pred[strong], clip_va_true[strong])
        if clip_quadrant_groups is not None:
            songs, quads, sel = clip_quadrant_groups
            if len(songs):
                per_song = np.stack([clip_va_pred[sel][songs == s].mean(0) for s in np.unique(songs)])
                q = np.array([quads[songs == s][0] for s in np.unique(songs)])
                out |= {f"real_audio_{k}": v for k, v in quadrant_auc(per_song, q).items()}
    return out


def score_split(
    model: CDCML,
    data: PreparedData,
    split: str,
    device: torch.device,
    image_size: int,
    embed: Callable[[str, np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
) -> dict[str, float]:
    """CDCML's own metrics on a split (used for validation during training)."""
    table = evaluate_prepared(model, data, split, device, image_size, baselines=False, embed=embed)
    return table["cdcml"]


def _split_pairs(data: PreparedData, split: str, seed: int) -> tuple[np.ndarray, np.ndarray, Pairs]:
    code = SPLITS.get(split)
    imgs = np.arange(len(data.images.va)) if code is None else np.nonzero(data.images.split == code)[0]
    clips = np.arange(len(data.music.va)) if code is None else np.nonzero(data.music.split == code)[0]
    if not len(imgs) or not len(clips):
        raise ValueError(f"the {split} split has {len(imgs)} images and {len(clips)} clips: nothing to evaluate")
    p = build_pairs(data.images.va[imgs], data.music.va[clips], data.sigma, seed=seed + 7)
    return imgs, clips, Pairs(imgs[p.image_idx], clips[p.clip_idx], p.similarity, p.kind, data.sigma)


def _handcrafted(
    data: PreparedData, idx_img: np.ndarray, idx_clip: np.ndarray, image_size: int
) -> tuple[np.ndarray, np.ndarray]:
    fi = [
        image_affect_features(torch.from_numpy(image_input(data.images.pixels[sl], None))).numpy()
        for sl in np.array_split(idx_img, max(1, len(idx_img) // 256))
    ]
    fm = [
        music_affect_features(torch.from_numpy(clip_input(data.stats, data.music.features[sl]))).numpy()
        for sl in np.array_split(idx_clip, max(1, len(idx_clip) // 256))
    ]
    return np.concatenate(fi), np.concatenate(fm)


def evaluate_prepared(
    model: CDCML,
    data: PreparedData,
    split: str,
    device: torch.device,
    image_size: int,
    baselines: bool = True,
    seed: int = 0,
    embed: Callable[[str, np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
) -> dict[str, dict[str, float]]:
    """Every method under the same pairs: CDCML, then (optionally) the baselines.

    ``embed(kind, rows)`` -> (embeddings, VA) replaces the full forward pass, e.g. with the
    trainer's cached frozen-backbone outputs during validation.
    """
    imgs, clips, pairs = _split_pairs(data, split, seed)
    rank_clips = rank_clip_subset(clips, seed)
    rank_true = similarity(data.images.va[imgs][:, None, :], data.music.va[rank_clips][None, :, :], data.sigma)

    if embed is None:
        ei, vai = embed_images(model, data.images.pixels[imgs], image_size, device)
        tagger = data.music.tagger[clips] if data.music.tagger is not None else None
        em, vam = embed_clips(model, data.stats, data.music.features[clips], device, tagger)
    else:
        ei, vai = embed("image", imgs)
        em, vam = embed("music", clips)
    pos_i = {g: k for k, g in enumerate(imgs)}
    pos_c = {g: k for k, g in enumerate(clips)}
    pi = np.array([pos_i[g] for g in pairs.image_idx])
    pc = np.array([pos_c[g] for g in pairs.clip_idx])
    rc = np.array([pos_c[g] for g in rank_clips])

    weak = data.music.weak[clips]
    real = np.isin(data.music.sources[clips], REAL_AUDIO_SOURCES) & weak
    quads = (data.music.song[clips][real], quadrant(data.music.va[clips][real]), real) if real.any() else None
    common = dict(
        pairs=pairs,
        rank_true=rank_true,
        img_va_true=data.images.va[imgs],
        clip_va_true=data.music.va[clips],
        clip_weak=weak,
        clip_quadrant_groups=quads,
    )

    table = {
        "cdcml": method_metrics(
            sim_pred=pair_scores(model, ei[pi], em[pc], device),
            rank_scores=matrix_scores(model, ei, em[rc], device),
            img_va_pred=vai,
            clip_va_pred=vam,
            **common,
        )
    }
    if not baselines:
        return table

    def va_sim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return similarity(a, b, data.sigma)

    table["nearest_va"] = method_metrics(
        sim_pred=va_sim(vai[pi], vam[pc]),
        rank_scores=va_sim(vai[:, None], vam[rc][None]),
        img_va_pred=vai,
        clip_va_pred=vam,
        **common,
    )
    rng = np.random.default_rng(seed)
    table["random"] = method_metrics(
        sim_pred=rng.random(len(pairs)),
        rank_scores=rng.random((len(imgs), len(rc))),
        img_va_pred=rng.random((len(imgs), 2)),
        clip_va_pred=rng.random((len(clips), 2)),
        **common,
    )

    # Baselines fitted on the training split, on hand-crafted features (no pretrained CNNs here).
    tr_i, tr_c = np.nonzero(data.images.split == SPLITS["train"])[0], np.nonzero(data.music.split == SPLITS["train"])[0]
    tr_c = np.sort(np.random.default_rng(seed).choice(tr_c, min(len(tr_c), 6000), replace=False))
    fi_tr, fm_tr = _handcrafted(data, tr_i, tr_c, image_size)
    fi_te, fm_te = _handcrafted(data, imgs, clips, image_size)
    strong = ~data.music.weak[tr_c]
    reg_i = make_pipeline(StandardScaler(), Ridge(alpha=10.0)).fit(fi_tr, data.images.va[tr_i])
    reg_m = make_pipeline(StandardScaler(), Ridge(alpha=10.0)).fit(
        fm_tr, data.music.va[tr_c], ridge__sample_weight=np.where(strong, 1.0, 0.5)
    )
    sp_i, sp_m = np.clip(reg_i.predict(fi_te), 0, 1), np.clip(reg_m.predict(fm_te), 0, 1)
    table["sp_net"] = method_metrics(
        sim_pred=va_sim(sp_i[pi], sp_m[pc]),
        rank_scores=va_sim(sp_i[:, None], sp_m[rc][None]),
        img_va_pred=sp_i,
        clip_va_pred=sp_m,
        **common,
    )

    tp = build_pairs(
        data.images.va[tr_i], data.music.va[tr_c], data.sigma, subsample=min(len(tr_c), 2000), seed=seed + 3
    )
    pos_tr_i = {g: k for k, g in enumerate(tr_i)}
    x_tr = np.hstack([fi_tr[[pos_tr_i[g] for g in tr_i[tp.image_idx]]], fm_tr[tp.clip_idx]])
    acp = make_pipeline(
        StandardScaler(),
        MLPRegressor(hidden_layer_sizes=(256, 64), alpha=1e-3, max_iter=60, early_stopping=True, random_state=seed),
    )
    acp.fit(x_tr, tp.similarity)

    def acp_pred(fi: np.ndarray, fm: np.ndarray) -> np.ndarray:
        return np.clip(acp.predict(np.hstack([fi, fm])), 0, 1)

    acp_rank = np.stack([acp_pred(np.repeat(fi_te[i : i + 1], len(rc), 0), fm_te[rc]) for i in range(len(imgs))])
    table["acp_net"] = method_metrics(
        sim_pred=acp_pred(fi_te[pi], fm_te[pc]),
        rank_scores=acp_rank,
        img_va_pred=None,
        clip_va_pred=None,
        **common,
    )
    return table


TABLE_COLUMNS = [
    ("sim_mse", "Sim MSE"),
    ("sim_mae", "Sim MAE"),
    ("image_valence_mse", "I-V MSE"),
    ("image_arousal_mse", "I-A MSE"),
    ("music_valence_mse", "M-V MSE"),
    ("music_arousal_mse", "M-A MSE"),
    ("ndcg@10", "NDCG@10"),
    ("map@10", "MAP@10"),
    ("recall@10", "R@10"),
    ("image_valence_r", "I-V r"),
    ("image_arousal_r", "I-A r"),
    ("music_valence_r", "M-V r"),
    ("music_arousal_r", "M-A r"),
    ("image_valence_ccc", "I-V CCC"),
    ("music_arousal_ccc", "M-A CCC"),
    ("real_audio_valence_auc", "Real V AUC"),
    ("real_audio_arousal_auc", "Real A AUC"),
]


def format_table(table: dict[str, dict[str, float]]) -> str:
    head = f"{'method':<12}" + "".join(f"{label:>11}" for _, label in TABLE_COLUMNS)
    lines = [head, "-" * len(head)]
    for name, row in table.items():
        cells = "".join(f"{row[k]:>11.4f}" if k in row else f"{'-':>11}" for k, _ in TABLE_COLUMNS)
        lines.append(f"{name:<12}{cells}")
    return "\n".join(lines)


def evaluate(
    checkpoint: Path,
    images: str,
    music: str,
    split: str = "test",
    json_out: Path | None = None,
    device: str = "auto",
    progress: bool = True,
) -> dict:
    """Load a checkpoint, prepare the given sources with the checkpoint's data settings and
    split seed, and score every method on the same test pairs."""
    dev = resolve_device(device)
    model, meta = load_checkpoint(checkpoint, dev)
    cfg = TrainConfig.from_dict(meta.train_config) if meta.train_config else TrainConfig()
    data_cfg = replace(
        cfg.data, images=[s for s in images.split(",") if s], music=[s for s in music.split(",") if s], root=""
    )
    imgs, mus, summary = prepare(data_cfg, cfg.seed, meta.config.image_size, progress)
    data = PreparedData(imgs, mus, summary, meta.feature_stats, meta.sigma)
    table = evaluate_prepared(model, data, split, dev, meta.config.image_size, baselines=True, seed=cfg.seed)
    counts = {
        "images": int(len(np.nonzero(imgs.split == SPLITS[split])[0])) if split in SPLITS else len(imgs.va),
        "clips": int(len(np.nonzero(mus.split == SPLITS[split])[0])) if split in SPLITS else len(mus.va),
    }
    result = {"checkpoint": str(checkpoint), "split": split, "counts": counts, "sigma": meta.sigma, "table": table}
    print(f"split={split} images={counts['images']} clips={counts['clips']} sigma={meta.sigma:.4f}")
    print(format_table(table))
    if json_out is not None:
        Path(json_out).write_text(json.dumps(result, indent=2))
    return result
