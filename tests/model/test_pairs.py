"""Pair construction (IMEMNet style), sigma, and group splits — synthetic and real labels."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from model.datasets import clips_va, load_emotion6, load_oasis, load_vgmidi
from model.pairs import (
    LEAST,
    MOST,
    RANDOM,
    S_FLOOR,
    Pairs,
    build_pairs,
    estimate_sigma,
    similarity,
    split_by_group,
)
from tests.support import REPO


@pytest.fixture(scope="module")
def data_root() -> Path:
    root = Path(os.environ.get("PHOTOSCORE_DATASET_DIR", REPO.parent / "shared" / "data"))
    if not all((root / name).is_dir() for name in ("oasis", "emotion6", "vgmidi")):
        pytest.fail(f"dataset not found at {root}; set PHOTOSCORE_DATASET_DIR to the shared data root")
    return root


@pytest.fixture(scope="module")
def va() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    return rng.random((200, 2)), rng.random((300, 2))


def _per_clip(p: Pairs) -> dict[int, np.ndarray]:
    starts = np.flatnonzero(np.r_[True, p.clip_idx[1:] != p.clip_idx[:-1]])
    return {int(p.clip_idx[s]): np.arange(s, e) for s, e in zip(starts, np.r_[starts[1:], len(p)], strict=True)}


def test_similarity_eq1() -> None:
    assert similarity(np.array([0.2, 0.3]), np.array([0.2, 0.3]), 0.5) == pytest.approx(1.0)
    assert similarity(np.array([0.0, 0.0]), np.array([0.3, 0.4]), 0.5) == pytest.approx(np.exp(-1.0))
    out = similarity(np.zeros((3, 2)), np.array([[0, 0], [1, 0], [1, 1]]), 1.0)
    np.testing.assert_allclose(out, np.exp(-np.array([0, 1, np.sqrt(2)])))
    with pytest.raises(ValueError):
        similarity(np.zeros(2), np.ones(2), 0.0)


def test_estimate_sigma_exact_and_sampled(va) -> None:
    img, clip = va
    brute = np.mean([np.linalg.norm(c - i) for c in clip for i in img])
    assert estimate_sigma(img, clip) == pytest.approx(brute)
    sampled = estimate_sigma(img, clip, max_pairs=20_000, seed=1)
    assert sampled == estimate_sigma(img, clip, max_pairs=20_000, seed=1)
    assert sampled == pytest.approx(brute, rel=0.02)
    with pytest.raises(ValueError):
        estimate_sigma(np.full((3, 2), 0.5), np.full((4, 2), 0.5))


class TestSplit:
    def test_disjoint_complete_deterministic(self) -> None:
        ids = [f"song{k % 97}" for k in range(1000)]
        parts = split_by_group(ids, seed=3)
        assert sum(len(p) for p in parts) == len(ids)
        assert len(np.unique(np.concatenate(parts))) == len(ids)
        groups = [{ids[i] for i in p} for p in parts]
        assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
        sizes = [len(g) for g in groups]
        assert 65 <= sizes[0] <= 89 and all(3 <= n <= 17 for n in sizes[1:])
        again = split_by_group(ids, seed=3)
        assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
        other = split_by_group(ids, seed=4)
        assert not all(np.array_equal(a, b) for a, b in zip(parts, other, strict=True))

    def test_order_independent_and_small(self) -> None:
        ids = ["a", "b", "c", "a", "d"]
        parts = split_by_group(ids, seed=0)
        rev = split_by_group(ids[::-1], seed=0)
        as_groups = [sorted({ids[i] for i in p}) for p in parts]
        rev_groups = [sorted({ids[::-1][i] for i in p}) for p in rev]
        assert as_groups == rev_groups
        three = split_by_group(["x", "y", "z"], seed=0)
        assert [len(p) for p in three] == [1, 1, 1]  # every positive fraction gets a group
        with pytest.raises(ValueError):
            split_by_group(ids, fractions=(0.5, 0.2))

    def test_subset_keeps_each_groups_part(self) -> None:
        """Evaluating on one data set of several must not move a trained item into test."""
        ids = [f"img{i}" for i in range(400)]
        full = split_by_group(ids, seed=5)
        part_of = {ids[i]: k for k, p in enumerate(full) for i in p}
        subset = ids[::3]
        for k, p in enumerate(split_by_group(subset, seed=5)):
            assert all(part_of[subset[i]] == k for i in p)


class TestBuildPairs:
    def test_counts_distinct_and_kinds(self, va) -> None:
        img, clip = va
        p = build_pairs(img, clip, sigma=0.5, seed=0)
        assert len(p) == 50 * len(clip)
        assert p.image_idx.dtype.kind == "i" and p.clip_idx.dtype.kind == "i"
        assert p.similarity.dtype == np.float32
        for c, rows in _per_clip(p).items():
            assert len(rows) == 50
            assert len(np.unique(p.image_idx[rows])) == 50  # random picks avoid most/least
            assert np.bincount(p.kind[rows], minlength=3).tolist() == [30, 10, 10]
            assert c in range(len(clip))
        assert set(np.unique(p.clip_idx)) == set(range(len(clip)))

    def test_similarity_values_and_extremes(self, va) -> None:
        img, clip = va
        sigma = estimate_sigma(img, clip)
        p = build_pairs(img, clip, sigma, seed=0)
        assert (p.similarity > 0).all() and (p.similarity <= 1).all()
        expect = similarity(img[p.image_idx], clip[p.clip_idx], sigma)
        np.testing.assert_allclose(p.similarity, expect, rtol=1e-6)
        for c, rows in list(_per_clip(p).items())[:40]:
            all_s = similarity(img, clip[c], sigma)
            ranked = np.sort(all_s)
            most = p.similarity[rows][p.kind[rows] == MOST]
            least = p.similarity[rows][p.kind[rows] == LEAST]
            np.testing.assert_allclose(np.sort(most), ranked[-10:], rtol=1e-6)  # the 10 highest S
            np.testing.assert_allclose(np.sort(least), ranked[:10], rtol=1e-6)  # the 10 lowest S
            rand = p.similarity[rows][p.kind[rows] == RANDOM]
            assert rand.max() <= most.min() + 1e-6 and rand.min() >= least.max() - 1e-6

    def test_floor_keeps_s_positive(self) -> None:
        p = build_pairs(np.array([[0.0, 0.0]] * 60), np.array([[1.0, 1.0]]), sigma=1e-3)
        assert (p.similarity == np.float32(S_FLOOR)).all()

    def test_deterministic_per_seed(self, va) -> None:
        img, clip = va
        a, b = build_pairs(img, clip, 0.4, seed=5), build_pairs(img, clip, 0.4, seed=5)
        assert np.array_equal(a.image_idx, b.image_idx) and np.array_equal(a.similarity, b.similarity)
        c = build_pairs(img, clip, 0.4, seed=6)
        assert not np.array_equal(a.image_idx[a.kind == RANDOM], c.image_idx[c.kind == RANDOM])

    def test_few_images_and_subsample(self, va) -> None:
        img, clip = va
        p = build_pairs(img[:20], clip[:5], 0.4)
        for rows in _per_clip(p).values():
            assert len(rows) == 20 and len(np.unique(p.image_idx[rows])) == 20
        assert np.bincount(p.kind[:20], minlength=3).tolist() == [0, 10, 10]
        half = build_pairs(img, clip, 0.4, subsample=0.5, seed=1)
        assert len(np.unique(half.clip_idx)) == 150 and len(half) == 150 * 50
        some = build_pairs(img, clip, 0.4, subsample=7, seed=1)
        assert len(np.unique(some.clip_idx)) == 7
        with pytest.raises(ValueError, match="per_clip"):
            build_pairs(img, clip, 0.4, per_clip=40)
        with pytest.raises(ValueError):
            build_pairs(img, clip, 0.4, subsample=1.5)

    def test_large_is_vectorised(self) -> None:
        rng = np.random.default_rng(0)
        p = build_pairs(rng.random((2000, 2)), rng.random((10_000, 2)), 0.5, seed=0)
        assert len(p) == 500_000


def test_real_labels(data_root: Path) -> None:
    """Images from OASIS + Emotion6 against per-measure VGMIDI clip labels, split by song."""
    images = load_oasis(data_root / "oasis")[0] + load_emotion6(data_root / "emotion6")[0]
    music, _ = load_vgmidi(data_root / "vgmidi")
    image_va = np.array([(i.valence, i.arousal) for i in images])
    clip_rows, song_of_clip = [], []
    for item in music:
        end = item.va_series[-1][1]
        starts = np.arange(0.0, end - 2.0 + 1e-9, 2.0)
        clip_rows.append(clips_va(item, starts, starts + 2.0))
        song_of_clip += [item.song_id] * len(starts)
    clip_va = np.concatenate(clip_rows)
    assert len(clip_va) > 2000 and len(image_va) == 2460
    sigma = estimate_sigma(image_va, clip_va)
    assert 0.05 < sigma < 1.0
    train, val, test = split_by_group(song_of_clip, seed=0)
    songs = [{song_of_clip[i] for i in part} for part in (train, val, test)]
    assert songs[0].isdisjoint(songs[1]) and songs[0].isdisjoint(songs[2]) and songs[1].isdisjoint(songs[2])
    img_train, _, _ = split_by_group([i.item_id for i in images], seed=0)
    p = build_pairs(image_va[img_train], clip_va[train], sigma, seed=0)
    assert len(p) == 50 * len(train)
    assert (p.similarity > 0).all() and (p.similarity <= 1).all()
    assert p.similarity[p.kind == MOST].mean() > p.similarity[p.kind == RANDOM].mean()
    assert p.similarity[p.kind == RANDOM].mean() > p.similarity[p.kind == LEAST].mean()
