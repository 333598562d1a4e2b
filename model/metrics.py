"""Metrics: the paper's Table 3 regression errors plus what a recommender is judged by."""

from __future__ import annotations

import numpy as np
from scipy.stats import pearsonr
from sklearn.metrics import ndcg_score, roc_auc_score


def mse(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.mean((np.asarray(pred, float) - np.asarray(true, float)) ** 2))


def mae(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(pred, float) - np.asarray(true, float))))


def pearson(pred: np.ndarray, true: np.ndarray) -> float:
    pred, true = np.asarray(pred, float), np.asarray(true, float)
    if len(pred) < 3 or pred.std() < 1e-12 or true.std() < 1e-12:
        return 0.0
    return float(pearsonr(pred, true)[0])


def ccc(pred: np.ndarray, true: np.ndarray) -> float:
    """Lin's concordance correlation coefficient: agreement, not just correlation."""
    pred, true = np.asarray(pred, float), np.asarray(true, float)
    cov = np.mean((pred - pred.mean()) * (true - true.mean()))
    denom = pred.var() + true.var() + (pred.mean() - true.mean()) ** 2
    return float(2 * cov / denom) if denom > 0 else 0.0


def va_metrics(prefix: str, pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    out: dict[str, float] = {}
    for j, dim in enumerate(("valence", "arousal")):
        out[f"{prefix}_{dim}_mse"] = mse(pred[:, j], true[:, j])
        out[f"{prefix}_{dim}_mae"] = mae(pred[:, j], true[:, j])
        out[f"{prefix}_{dim}_r"] = pearson(pred[:, j], true[:, j])
        out[f"{prefix}_{dim}_ccc"] = ccc(pred[:, j], true[:, j])
    return out


def ranking_metrics(scores: np.ndarray, true_sim: np.ndarray, k: int = 10) -> dict[str, float]:
    """Per image (row), rank clips by predicted score.

    NDCG@k uses the graded relevance S; MAP@k counts as relevant the top 10 % of clips by
    true S; Recall@k is the share of the true top-k found in the predicted top-k.
    """
    scores, true_sim = np.asarray(scores, float), np.asarray(true_sim, float)
    n_img, n_clip = scores.shape
    k = min(k, n_clip)
    ndcg = ndcg_score(true_sim, scores, k=k)
    n_rel = max(1, int(round(0.1 * n_clip)))
    true_rank = np.argsort(-true_sim, axis=1, kind="stable")
    pred_top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    aps, recalls = [], []
    for r in range(n_img):
        relevant = np.zeros(n_clip, bool)
        relevant[true_rank[r, :n_rel]] = True
        hits = relevant[pred_top[r]]
        precision_at = np.cumsum(hits) / np.arange(1, k + 1)
        aps.append(float((precision_at * hits).sum() / min(k, n_rel)))
        recalls.append(len(set(pred_top[r]) & set(true_rank[r, :k])) / k)
    return {f"ndcg@{k}": float(ndcg), f"map@{k}": float(np.mean(aps)), f"recall@{k}": float(np.mean(recalls))}


def quadrant_auc(pred_va: np.ndarray, quadrants: np.ndarray) -> dict[str, float]:
    """Valence AUC (Q1,Q4 vs Q2,Q3) and arousal AUC (Q1,Q2 vs Q3,Q4) from predicted VA."""
    high_v = np.isin(quadrants, (1, 4))
    high_a = np.isin(quadrants, (1, 2))
    out = {}
    if 0 < high_v.sum() < len(high_v):
        out["valence_auc"] = float(roc_auc_score(high_v, pred_va[:, 0]))
    if 0 < high_a.sum() < len(high_a):
        out["arousal_auc"] = float(roc_auc_score(high_a, pred_va[:, 1]))
    return out
