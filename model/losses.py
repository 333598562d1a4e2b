"""CDCML losses (Zhao et al., ACM MM 2020), one pure function per term.

Notation: image embeddings ``ei`` [B,d], music embeddings ``em`` [B,d], their VA labels
``vi``/``vm`` [B,2] in [0,1], sigma as in Eq. 1 (S = exp(-d/sigma)). Label distances are
d = -sigma * log S, i.e. the VA distance itself, so no similarity is ever passed through a
log: there is no log of zero anywhere (distances are floored by ``EPS``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

EPS = 1e-6
RANK_EPS = 1e-2  # VA units: near-identical labels must not dominate a log-ratio


def _pairwise(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distances [A,B], with a smooth floor so gradients stay finite at zero."""
    sq = (a.unsqueeze(1) - b.unsqueeze(0)).pow(2).sum(-1)
    return torch.sqrt(sq + EPS)


def label_distance(va_a: torch.Tensor, va_b: torch.Tensor) -> torch.Tensor:
    """d = -sigma·log S with S = exp(-||va_a - va_b|| / sigma) (Eq. 1), i.e. the VA distance."""
    return _pairwise(va_a, va_b)


def log_ratio_loss(emb_dist: torch.Tensor, lab_dist: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Dense log-ratio loss (Kim et al., CVPR 2019) for one anchor per row.

    For anchor a and every pair of neighbours (j, k):
    (log D_aj/D_ak - log d_aj/d_ak)^2. This is what Eq. 2 of CDCML is built on; taken
    literally, Eq. 2's ratio of *similarities* would invert the ordering. ``eps`` is added
    inside both logs.
    """
    le = torch.log(emb_dist + eps)
    ll = torch.log(lab_dist + eps)
    diff = (le.unsqueeze(2) - le.unsqueeze(1)) - (ll.unsqueeze(2) - ll.unsqueeze(1))
    n = emb_dist.shape[1]
    mask = torch.triu(torch.ones(n, n, dtype=torch.bool, device=emb_dist.device), diagonal=1)
    return diff.pow(2)[:, mask].mean()


def loss_cfr(ei: torch.Tensor, em: torch.Tensor, vi: torch.Tensor, vm: torch.Tensor) -> torch.Tensor:
    """L_CFR, cross-modal feature ranking (Eq. 2), with both anchors: images ranking music
    clips and music clips ranking images by VA similarity."""
    d_im = _pairwise(ei, em)
    l_im = label_distance(vi, vm)
    return 0.5 * (log_ratio_loss(d_im, l_im, RANK_EPS) + log_ratio_loss(d_im.t(), l_im.t(), RANK_EPS))


def loss_cfm(ei: torch.Tensor, em: torch.Tensor, vi: torch.Tensor, vm: torch.Tensor) -> torch.Tensor:
    """L_CFM, cross-modal feature matching (Eq. 3): the embedding distance of an image–clip
    pair should equal their emotional (VA) distance, which fixes the scale Eq. 2 leaves free."""
    return (_pairwise(ei, em) - label_distance(vi, vm)).pow(2).mean()


def _self_ranking(e: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    n = e.shape[0]
    off = ~torch.eye(n, dtype=torch.bool, device=e.device)
    d_e = _pairwise(e, e)[off].view(n, n - 1)
    d_l = label_distance(v, v)[off].view(n, n - 1)
    return log_ratio_loss(d_e, d_l, RANK_EPS)


def loss_sfr_image(ei: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
    """L_SFR_I, single-modal feature ranking among images (Eq. 4)."""
    return _self_ranking(ei, vi)


def loss_sfr_music(em: torch.Tensor, vm: torch.Tensor) -> torch.Tensor:
    """L_SFR_M, single-modal feature ranking among music clips (Eq. 5)."""
    return _self_ranking(em, vm)


def loss_sim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L_Sim, similarity prediction (Eq. 6): MSE between predicted and true S of each pair."""
    return F.mse_loss(pred, target)


def loss_va(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """L_IVA / L_MVA, VA regression (Eq. 7): MSE on valence and arousal; ``weight`` down-weights
    weak (quadrant-only) targets."""
    err = (pred - target).pow(2).mean(dim=1)
    if weight is None:
        return err.mean()
    return (err * weight).sum() / weight.sum().clamp_min(EPS)


RANK_TAU = 0.1  # softmax temperature of the listwise term; similarities lie in [0, 1]


def loss_rank(sim_matrix: torch.Tensor, vi: torch.Tensor, vm: torch.Tensor, sigma: float, tau: float) -> torch.Tensor:
    """Listwise similarity ranking: for each photo of the batch, the softmax (temperature ``tau``)
    over the batch's clips of the predicted similarity should match that of the true one, S =
    exp(-d / sigma) (KL divergence, mean over photos).

    Why: L_Sim scores each pair alone, so a clip predicted fairly similar to every photo (a hub,
    which then opens most lists) costs it little; ranked against the other clips for the same
    photo, it costs where it does not belong."""
    true = torch.exp(-label_distance(vi, vm) / sigma)
    target = F.softmax(true / tau, dim=1)
    return F.kl_div(F.log_softmax(sim_matrix / tau, dim=1), target, reduction="batchmean")


def loss_categories(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the predicted emotion categories against the raters' distribution, over
    the photos that have one (``mask``). Why: valence and arousal are two numbers per photo; the
    category shares (anger and fear against sadness) say more about intensity, which the image
    embedding predicts worst."""
    if not bool(mask.any()):
        return logits.sum() * 0.0
    return -(target[mask] * F.log_softmax(logits[mask], dim=1)).sum(dim=1).mean()


@dataclass
class LossWeights:
    """Per-term weights of Eq. 8; a zero weight switches the term off (Table 4 ablation rows)."""

    cfr: float = 1.0
    cfm: float = 1.0
    sfr_i: float = 0.5
    sfr_m: float = 0.5
    sim: float = 1.0
    iva: float = 1.0
    mva: float = 1.0
    rank: float = 0.0  # listwise term (not in Eq. 8), see :func:`loss_rank`
    categories: float = 0.0  # auxiliary Emotion6 category term (not in Eq. 8), see :func:`loss_categories`

    def to_dict(self) -> dict:
        return asdict(self)


ABLATIONS: dict[str, LossWeights] = {
    "sim": LossWeights(cfr=0, cfm=0, sfr_i=0, sfr_m=0, sim=1, iva=0, mva=0),
    "sim+cfr": LossWeights(cfr=1, cfm=0, sfr_i=0, sfr_m=0, sim=1, iva=0, mva=0),
    "sim+cfr+cfm": LossWeights(cfr=1, cfm=1, sfr_i=0, sfr_m=0, sim=1, iva=0, mva=0),
    "sim+va": LossWeights(cfr=0, cfm=0, sfr_i=0, sfr_m=0, sim=1, iva=1, mva=1),
    "all": LossWeights(),
}


def total_loss(
    w: LossWeights,
    *,
    ei: torch.Tensor,
    em: torch.Tensor,
    vi: torch.Tensor,
    vm: torch.Tensor,
    sim_pred: torch.Tensor,
    sim_true: torch.Tensor,
    va_i_pred: torch.Tensor,
    va_m_pred: torch.Tensor,
    music_weight: torch.Tensor | None = None,
    sim_matrix: torch.Tensor | None = None,
    sigma: float | None = None,
    categories: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Eq. 8: weighted sum of the enabled terms; returns the total and each term's value.
    ``sim_matrix`` ([photos, clips] of the batch) and ``sigma`` are needed when ``w.rank`` is on:
    the matrix's rows are the first photos of ``vi``. ``categories`` (logits, target distributions,
    mask) is needed when ``w.categories`` is on."""
    terms: dict[str, torch.Tensor] = {}
    if w.cfr:
        terms["cfr"] = loss_cfr(ei, em, vi, vm)
    if w.cfm:
        terms["cfm"] = loss_cfm(ei, em, vi, vm)
    if w.sfr_i:
        terms["sfr_i"] = loss_sfr_image(ei, vi)
    if w.sfr_m:
        terms["sfr_m"] = loss_sfr_music(em, vm)
    if w.sim:
        terms["sim"] = loss_sim(sim_pred, sim_true)
    if w.iva:
        terms["iva"] = loss_va(va_i_pred, vi)
    if w.mva:
        terms["mva"] = loss_va(va_m_pred, vm, music_weight)
    if w.rank:
        if sim_matrix is None or sigma is None:
            raise ValueError("the rank term needs the batch's similarity matrix and sigma")
        terms["rank"] = loss_rank(sim_matrix, vi[: len(sim_matrix)], vm, sigma, RANK_TAU)
    if w.categories:
        if categories is None:
            raise ValueError("the categories term needs the photos' category logits, targets and mask")
        terms["categories"] = loss_categories(*categories)
    total = sum(getattr(w, k) * v for k, v in terms.items())
    return total, {k: float(v.detach()) for k, v in terms.items()}
