"""IMEMNet-style image–music pairs with continuous emotional similarity (CDCML §3).

For each music clip the paper pairs 30 random images, the 10 most similar and the 10
least similar ones (by VA), and labels every pair with
``S = exp(-||va_image - va_clip||_2 / sigma)`` (Eq. 1), sigma being the mean image–clip
VA distance. The most/least similar pairs make sure both ends of the similarity range
are well represented, which random sampling alone would not give.

Similarities are floored at :data:`S_FLOOR` so ``S`` is never 0: the metric loss uses a
label distance ``-sigma * log(S)``, which must stay finite.

Splits are by group (song for music, image for images) so no song leaks clips into both
training and test.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

#: Smallest similarity a pair can carry (keeps ``log S`` finite).
S_FLOOR = 1e-6
#: Pair kinds stored in :attr:`Pairs.kind`.
RANDOM, MOST, LEAST = 0, 1, 2
_CHUNK_ELEMENTS = 1 << 22  # clips x images per block: bounds memory for ~50k x 2k


def _va(x: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name} must have shape [n, 2], got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains non-finite values")
    return arr


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean VA distances ``[len(a), len(b)]`` (explicit 2-D form: ~8x faster than
    ``np.linalg.norm`` over a broadcast 3-D array)."""
    dv = a[:, 0, None] - b[None, :, 0]
    da = a[:, 1, None] - b[None, :, 1]
    return np.sqrt(dv * dv + da * da)


def similarity(va_a: np.ndarray, va_b: np.ndarray, sigma: float) -> np.ndarray:
    """Eq. 1: ``exp(-||va_a - va_b||_2 / sigma)`` over the last axis (broadcasts)."""
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    diff = np.asarray(va_a, dtype=np.float64) - np.asarray(va_b, dtype=np.float64)
    return np.exp(-np.linalg.norm(diff, axis=-1) / sigma)


def estimate_sigma(image_va: np.ndarray, clip_va: np.ndarray, max_pairs: int = 1_000_000, seed: int = 0) -> float:
    """Mean image–clip Euclidean VA distance (the paper's sigma).

    Exact when ``Ni * Nc <= max_pairs``; otherwise the mean over ``max_pairs`` uniformly
    drawn (image, clip) pairs from a generator seeded with ``seed`` (deterministic).
    """
    img, clip = _va(image_va, "image_va"), _va(clip_va, "clip_va")
    if not len(img) or not len(clip):
        raise ValueError("need at least one image and one clip to estimate sigma")
    if len(img) * len(clip) <= max_pairs:
        total = 0.0
        step = max(1, _CHUNK_ELEMENTS // len(img))
        for s in range(0, len(clip), step):
            total += float(_distances(clip[s : s + step], img).sum())
        sigma = total / (len(img) * len(clip))
    else:
        rng = np.random.default_rng(seed)
        i = rng.integers(0, len(img), max_pairs)
        j = rng.integers(0, len(clip), max_pairs)
        sigma = float(np.linalg.norm(img[i] - clip[j], axis=-1).mean())
    if sigma <= 0:
        raise ValueError("all image and clip VA labels coincide; sigma is undefined")
    return sigma


def group_unit(group: Hashable, seed: int = 0) -> float:
    """A uniform number in [0, 1) fixed by the group id and the seed alone."""
    digest = hashlib.sha256(f"{seed}\x00{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_by_group(
    ids: Sequence[Hashable], fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
) -> tuple[np.ndarray, ...]:
    """Split item positions so that equal ids (same song / same image) share one part.

    A group's part depends only on its id and ``seed`` (a hash compared with the cumulative
    fractions), so any subset of the data (``evaluate`` on one data set of several) keeps the
    test groups of training and never tests on a trained item. Part sizes follow the
    fractions in expectation; when a positive fraction would be left empty (tiny inputs), the
    group nearest its range is moved there. Returns one sorted int array of positions per
    fraction (train, val, test by default).
    """
    fr = np.asarray(fractions, dtype=np.float64)
    if fr.ndim != 1 or not len(fr) or (fr < 0).any() or not np.isclose(fr.sum(), 1.0):
        raise ValueError(f"fractions must be non-negative and sum to 1, got {fractions}")
    keys = [str(i) for i in ids]
    groups = sorted(set(keys))
    units = np.array([group_unit(g, seed) for g in groups])
    bounds = np.cumsum(fr)
    bounds[-1] = 1.0 + 1e-12
    part_of_group = np.searchsorted(bounds, units, side="right")
    lows = np.concatenate([[0.0], bounds[:-1]])
    for k in np.nonzero(fr > 0)[0]:
        counts = np.bincount(part_of_group, minlength=len(fr))
        if counts[k] or len(groups) < len(fr):
            continue
        movable = counts[part_of_group] > 1
        if movable.any():
            centre = (lows[k] + min(bounds[k], 1.0)) / 2
            dist = np.where(movable, np.abs(units - centre), np.inf)
            part_of_group[int(np.argmin(dist))] = k
    index = {g: int(part_of_group[i]) for i, g in enumerate(groups)}
    part = np.fromiter((index[k] for k in keys), dtype=int, count=len(keys))
    return tuple(np.nonzero(part == k)[0] for k in range(len(fr)))


@dataclass
class Pairs:
    """Image–clip pairs: parallel arrays, clip-major (all pairs of a clip are adjacent)."""

    image_idx: np.ndarray  # int64 [n]
    clip_idx: np.ndarray  # int64 [n]
    similarity: np.ndarray  # float32 [n], in [S_FLOOR, 1]
    kind: np.ndarray  # int8 [n]: RANDOM, MOST or LEAST
    sigma: float

    def __len__(self) -> int:
        return len(self.image_idx)


def build_pairs(
    image_va: np.ndarray,
    clip_va: np.ndarray,
    sigma: float | None = None,
    per_clip: int | None = 50,
    n_random: int = 30,
    n_most: int = 10,
    n_least: int = 10,
    subsample: float | int | None = None,
    seed: int = 0,
) -> Pairs:
    """Pairs per clip: ``n_most`` most similar, ``n_least`` least similar, ``n_random`` random.

    The three sets are distinct images, so a clip gets ``min(per_clip, Ni)`` pairs
    (``per_clip`` must equal ``n_random + n_most + n_least``; it is a consistency check).
    With fewer images than that, most-similar images are kept first, then least-similar,
    then random. ``sigma`` defaults to :func:`estimate_sigma`. ``subsample`` keeps only a
    random share of clips (float in (0, 1]) or that many clips (int) to cap the pair count
    (which is ``per_clip * clips``). Deterministic for a ``seed``.
    """
    img, clip = _va(image_va, "image_va"), _va(clip_va, "clip_va")
    if min(n_random, n_most, n_least) < 0:
        raise ValueError("pair counts must be non-negative")
    total = n_random + n_most + n_least
    if per_clip is not None and per_clip != total:
        raise ValueError(f"per_clip={per_clip} but n_random + n_most + n_least = {total}")
    if not len(img):
        raise ValueError("no images to pair")
    if sigma is None:
        sigma = estimate_sigma(img, clip, seed=seed)
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    rng = np.random.default_rng(seed)

    clips = np.arange(len(clip))
    if subsample is not None:
        if isinstance(subsample, bool):
            raise ValueError("subsample must be a float fraction or an int count")
        if isinstance(subsample, float | np.floating):
            if not 0 < subsample <= 1:
                raise ValueError(f"subsample fraction must be in (0, 1], got {subsample}")
            keep = round(subsample * len(clip))
        else:
            keep = int(subsample)
            if keep < 0:
                raise ValueError(f"subsample count must be >= 0, got {subsample}")
        keep = min(keep, len(clip))
        clips = np.sort(rng.choice(len(clip), size=keep, replace=False))

    ni = len(img)
    k_most = min(n_most, ni)
    k_least = min(n_least, ni - k_most)
    k_rand = min(n_random, ni - k_most - k_least)
    k = k_most + k_least + k_rand
    kinds = np.repeat(np.array([MOST, LEAST, RANDOM], dtype=np.int8), [k_most, k_least, k_rand])

    out_img = np.empty((len(clips), k), dtype=np.int64)
    out_sim = np.empty((len(clips), k), dtype=np.float64)
    step = max(1, _CHUNK_ELEMENTS // ni)
    for s in range(0, len(clips), step):
        rows = clips[s : s + step]
        m = len(rows)
        r = np.arange(m)[:, None]
        dist = _distances(clip[rows], img)  # [m, Ni]
        # Random keys decide ties and the random draw; chosen images get key > 1 so the
        # random picks avoid them.
        keys = rng.random((m, ni))
        chosen = []
        work = dist.copy()
        if k_most:
            most = np.argpartition(work, k_most - 1, axis=1)[:, :k_most]
            chosen.append(most)
            work[r, most] = -np.inf  # never also a least-similar pick
            keys[r, most] = 2.0
        if k_least:
            least = np.argpartition(-work, k_least - 1, axis=1)[:, :k_least]
            chosen.append(least)
            keys[r, least] = 2.0
        if k_rand:
            chosen.append(np.argpartition(keys, k_rand - 1, axis=1)[:, :k_rand])
        idx = np.concatenate(chosen, axis=1) if chosen else np.empty((m, 0), dtype=np.int64)
        out_img[s : s + m] = idx
        out_sim[s : s + m] = np.exp(-dist[r, idx] / sigma)

    sim = np.clip(out_sim, S_FLOOR, 1.0).astype(np.float32).reshape(-1)
    return Pairs(
        image_idx=out_img.reshape(-1),
        clip_idx=np.repeat(clips.astype(np.int64), k),
        similarity=sim,
        kind=np.tile(kinds, len(clips)),
        sigma=float(sigma),
    )
