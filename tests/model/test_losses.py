"""Losses on hand-computed values, gradient direction, switches and the Table 4 rows."""

from __future__ import annotations

import math

import pytest
import torch

from model import losses as L


def test_log_ratio_zero_when_distances_proportional() -> None:
    emb = torch.tensor([[1.0, 2.0, 4.0]])
    lab = torch.tensor([[0.5, 1.0, 2.0]])
    assert L.log_ratio_loss(emb, lab).item() == pytest.approx(0.0, abs=1e-5)


def test_log_ratio_hand_computed() -> None:
    emb = torch.tensor([[1.0, 1.0]])
    lab = torch.tensor([[1.0, math.e]])
    # one pair (j,k): (log1 - log1) - (0 - 1) = 1 -> squared 1
    assert L.log_ratio_loss(emb, lab).item() == pytest.approx(1.0, rel=1e-4)


def test_cfr_step_brings_more_similar_pair_closer() -> None:
    """One gradient step: the clip nearer in VA to the image ends nearer in the embedding."""
    torch.manual_seed(0)
    ei = torch.tensor([[0.0, 0.0]], requires_grad=True)
    em = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    vi = torch.tensor([[0.8, 0.8]])
    vm = torch.tensor([[0.75, 0.8], [0.1, 0.1]])  # clip 0 is far more similar to the image
    before = torch.cdist(ei, em)[0].detach()
    L.loss_cfr(ei, em, vi, vm).backward()
    with torch.no_grad():
        ei2 = ei - 0.05 * ei.grad
        em2 = em - 0.05 * em.grad
    after = torch.cdist(ei2, em2)[0]
    assert after[0] < before[0]
    assert after[1] > before[1]
    assert (after[1] - after[0]) > (before[1] - before[0])


def test_cfm_hand_computed() -> None:
    ei = torch.tensor([[0.0, 0.0]])
    em = torch.tensor([[3.0, 4.0]])
    vi = torch.tensor([[0.0, 0.0]])
    vm = torch.tensor([[0.6, 0.8]])
    # embedding distance 5, label distance 1 -> (5 - 1)^2 = 16
    assert L.loss_cfm(ei, em, vi, vm).item() == pytest.approx(16.0, rel=1e-4)


def test_cfm_gradient_pulls_towards_label_distance() -> None:
    ei = torch.zeros(1, 2, requires_grad=True)
    em = torch.tensor([[2.0, 0.0]])
    vi, vm = torch.tensor([[0.5, 0.5]]), torch.tensor([[0.5, 0.6]])
    L.loss_cfm(ei, em, vi, vm).backward()
    assert ei.grad[0, 0] < 0  # descending (minus the gradient) moves ei towards em


def test_sfr_zero_for_label_geometry_and_positive_otherwise() -> None:
    v = torch.tensor([[0.1, 0.1], [0.5, 0.5], [0.9, 0.2]])
    assert L.loss_sfr_image(v * 3.0, v).item() < 0.01
    shuffled = v[[2, 0, 1]]
    assert L.loss_sfr_music(shuffled, v).item() > 0.01


def test_sim_and_va_hand_computed() -> None:
    assert L.loss_sim(torch.tensor([0.5, 1.0]), torch.tensor([0.0, 1.0])).item() == pytest.approx(0.125)
    pred = torch.tensor([[0.5, 0.5], [1.0, 1.0]])
    tgt = torch.tensor([[0.5, 0.5], [0.0, 0.0]])
    assert L.loss_va(pred, tgt).item() == pytest.approx(0.5)
    weighted = L.loss_va(pred, tgt, torch.tensor([1.0, 0.0]))
    assert weighted.item() == pytest.approx(0.0)


def test_no_nan_with_identical_points() -> None:
    e = torch.ones(4, 3, requires_grad=True)
    v = torch.full((4, 2), 0.5)
    total, _ = L.total_loss(
        L.LossWeights(),
        ei=e,
        em=e,
        vi=v,
        vm=v,
        sim_pred=torch.full((4,), 0.5),
        sim_true=torch.ones(4),
        va_i_pred=v,
        va_m_pred=v,
    )
    total.backward()
    assert torch.isfinite(total) and torch.isfinite(e.grad).all()


@pytest.mark.parametrize("row", list(L.ABLATIONS))
def test_ablation_rows_switch_terms(row: str) -> None:
    torch.manual_seed(1)
    ei, em = torch.randn(6, 4), torch.randn(6, 4)
    vi, vm = torch.rand(6, 2), torch.rand(6, 2)
    _, parts = L.total_loss(
        L.ABLATIONS[row],
        ei=ei,
        em=em,
        vi=vi,
        vm=vm,
        sim_pred=torch.rand(6),
        sim_true=torch.rand(6),
        va_i_pred=torch.rand(6, 2),
        va_m_pred=torch.rand(6, 2),
    )
    enabled = {k for k, v in L.ABLATIONS[row].to_dict().items() if v}
    assert set(parts) == enabled


def test_rank_term_zero_for_the_true_ranking_and_larger_for_a_hub() -> None:
    """Each photo's row of predicted similarities is compared with its true row as a softmax: a
    prediction equal to the truth costs nothing, one where clip 0 wins every photo costs more."""
    vi = torch.tensor([[0.1, 0.1], [0.9, 0.9], [0.1, 0.9]])
    vm = torch.tensor([[0.1, 0.1], [0.9, 0.9], [0.1, 0.9]])
    sigma = 0.3
    true = torch.exp(-torch.cdist(vi, vm) / sigma)
    assert L.loss_rank(true, vi, vm, sigma, L.RANK_TAU).item() == pytest.approx(0.0, abs=1e-6)
    hub = true.clone()
    hub[:, 0] = 1.0
    worse = L.loss_rank(hub, vi, vm, sigma, L.RANK_TAU).item()
    assert worse > 0.1
    pred = hub.clone().requires_grad_(True)
    L.loss_rank(pred, vi, vm, sigma, L.RANK_TAU).backward()
    assert (pred.grad[1:, 0] > 0).all()  # descending the gradient lowers the hub for photos 1 and 2


def test_rank_term_needs_the_matrix() -> None:
    v = torch.rand(4, 2)
    kwargs = {"ei": torch.rand(4, 3), "em": torch.rand(4, 3), "vi": v, "vm": v, "sim_pred": torch.rand(4)}
    kwargs |= {"sim_true": torch.rand(4), "va_i_pred": v, "va_m_pred": v}
    with pytest.raises(ValueError, match="similarity matrix"):
        L.total_loss(L.LossWeights(rank=1.0), **kwargs)
    m = torch.rand(2, 4)
    _, parts = L.total_loss(L.LossWeights(rank=1.0), sim_matrix=m, sigma=0.3, **kwargs)
    assert parts["rank"] > 0


def test_category_term_is_the_cross_entropy_of_the_photos_that_have_categories() -> None:
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0], [5.0, -5.0, 0.0]])
    target = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 0.0]])
    mask = torch.tensor([True, True, False])
    expected = -(torch.log_softmax(logits[0], 0)[0] + 0.5 * torch.log_softmax(logits[1], 0)[:2].sum()) / 2
    assert L.loss_categories(logits, target, mask).item() == pytest.approx(expected.item())
    assert L.loss_categories(logits, target, torch.zeros(3, dtype=torch.bool)).item() == 0.0
    v = torch.rand(3, 2)
    kwargs = {"ei": torch.rand(3, 4), "em": torch.rand(3, 4), "vi": v, "vm": v, "sim_pred": torch.rand(3)}
    kwargs |= {"sim_true": torch.rand(3), "va_i_pred": v, "va_m_pred": v}
    with pytest.raises(ValueError, match="category logits"):
        L.total_loss(L.LossWeights(categories=1.0), **kwargs)
    _, parts = L.total_loss(L.LossWeights(categories=1.0), categories=(logits, target, mask), **kwargs)
    assert parts["categories"] == pytest.approx(expected.item())
