"""ClipIndex: exact and HNSW search keyed by clip ids, removal, atomic save/load, mismatch."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from app.vector_index import ClipIndex, IndexLoadError, IndexMismatchError, IndexNotFoundError

DIM = 32


def vectors(n: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exact_top(x: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    return ids[np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :k]]


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    x = vectors(3000)
    ids = np.arange(3000, dtype=np.int64) * 7 + 11  # sparse, non-positional ids
    return ids, x


def test_exact_index_matches_brute_force(data: tuple[np.ndarray, np.ndarray]) -> None:
    ids, x = data
    index = ClipIndex.build(ids, x, checkpoint_hash="ck", exact_threshold=10_000)
    assert index.index_type == "flat" and index.count == 3000 and index.dim == DIM
    q = vectors(20, seed=1)
    scores, found = index.search(q, 10)
    np.testing.assert_array_equal(found, exact_top(x, ids, q, 10))
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    np.testing.assert_allclose(index.reconstruct(found[0, :3]), x[(found[0, :3] - 11) // 7])
    assert index.recall_at_k(50) == 1.0


def test_hnsw_reaches_target_recall_and_records_params(data: tuple[np.ndarray, np.ndarray]) -> None:
    ids, x = data
    index = ClipIndex.build(ids, x, checkpoint_hash="ck", exact_threshold=1000)
    assert index.index_type == "hnsw"
    p = index.meta.params
    assert p["M"] == 32 and p["efConstruction"] == 80 and p["efSearch"] >= 16
    assert index.meta.recall_at_10 is not None and index.meta.recall_at_10 >= 0.95
    # recall on fresh queries (not catalogue vectors) is measured against exact search too
    assert index.recall_at_k(vectors(100, seed=5), k=10) >= 0.9
    np.testing.assert_allclose(index.reconstruct(ids[[5, 9]]), x[[5, 9]])


@pytest.mark.parametrize("exact_threshold", [10_000, 1000], ids=["flat", "hnsw"])
def test_remove_add_and_missing_ids(data: tuple[np.ndarray, np.ndarray], exact_threshold: int) -> None:
    ids, x = data
    index = ClipIndex.build(ids[:2000], x[:2000], checkpoint_hash="ck", exact_threshold=exact_threshold)
    gone = ids[:5]
    assert index.remove(np.concatenate([gone, [999_999]])) == 5
    assert index.remove(gone) == 0
    assert index.count == 1995
    _, found = index.search(x[:5], 5)
    assert not np.isin(found, gone).any()
    with pytest.raises(KeyError):
        index.reconstruct(gone[:1])
    with pytest.raises(KeyError):
        index.reconstruct([123_456_789])
    index.add(ids[2000:2010], x[2000:2010])
    assert index.count == 2005
    _, found = index.search(x[2000:2003], 1)
    assert found[:, 0].tolist() == ids[2000:2003].tolist()
    with pytest.raises(ValueError, match="already in the index"):
        index.add(ids[2000:2001], x[2000:2001])
    live = index.ids()
    assert len(live) == 2005 and not np.isin(gone, live).any()


def test_empty_index_and_k_beyond_size() -> None:
    empty = ClipIndex.build([], np.empty((0, DIM), np.float32), checkpoint_hash="ck", dim=DIM)
    scores, found = empty.search(vectors(2), 4)
    assert found.shape == (2, 4) and (found == -1).all() and np.isneginf(scores).all()
    small = ClipIndex.build([1, 2], vectors(2), checkpoint_hash="ck")
    _, found = small.search(vectors(1, seed=3), 5)
    assert sorted(found[0, :2].tolist()) == [1, 2] and (found[0, 2:] == -1).all()
    with pytest.raises(ValueError, match="dim"):
        ClipIndex.build([], np.empty((0, 0)), checkpoint_hash="ck")
    with pytest.raises(ValueError, match="duplicate"):
        ClipIndex.build([1, 1], vectors(2), checkpoint_hash="ck")


@pytest.mark.parametrize("exact_threshold", [10_000, 1000], ids=["flat", "hnsw"])
def test_save_load_roundtrip_is_atomic_pair(
    tmp_path: Path, data: tuple[np.ndarray, np.ndarray], exact_threshold: int
) -> None:
    ids, x = data
    index = ClipIndex.build(ids, x, checkpoint_hash="ck-a", exact_threshold=exact_threshold, last_event_id=42)
    index.remove(ids[:3])
    q = vectors(10, seed=2)
    before = index.search(q, 10)
    index.save(tmp_path)
    first_file = index.meta.file
    index.save(tmp_path)  # a second save replaces the pair and removes the old file
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == sorted(["index.json", index.meta.file]) and index.meta.file != first_file
    meta = json.loads((tmp_path / "index.json").read_text())
    assert meta["count"] == 2997 and meta["last_event_id"] == 42 and meta["dim"] == DIM
    loaded = ClipIndex.load(tmp_path, expected_checkpoint_hash="ck-a")
    after = loaded.search(q, 10)
    np.testing.assert_array_equal(before[1], after[1])
    np.testing.assert_allclose(before[0], after[0])
    assert loaded.count == 2997 and loaded.meta.params == index.meta.params

    with pytest.raises(IndexMismatchError, match="ck-a.*ck-b.*--rebuild"):
        ClipIndex.load(tmp_path, expected_checkpoint_hash="ck-b")


def test_load_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(IndexNotFoundError, match="no index"):
        ClipIndex.load(tmp_path / "nothing")
    index = ClipIndex.build([1, 2, 3], vectors(3), checkpoint_hash="ck")
    index.save(tmp_path)
    (tmp_path / index.meta.file).write_bytes(b"garbage")
    with pytest.raises(IndexLoadError, match="--rebuild"):
        ClipIndex.load(tmp_path)
    (tmp_path / "index.json").write_text("{not json")
    with pytest.raises(IndexLoadError, match="unreadable"):
        ClipIndex.load(tmp_path)


def test_concurrent_search_and_updates(data: tuple[np.ndarray, np.ndarray]) -> None:
    """The service searches while its sync thread adds and removes (FAISS itself is not safe)."""
    ids, x = data
    index = ClipIndex.build(ids[:1000], x[:1000], checkpoint_hash="ck", exact_threshold=500)
    errors: list[BaseException] = []

    def searcher() -> None:
        try:
            for i in range(200):
                _, found = index.search(x[i % 1000], 5)
                assert found.shape == (1, 5)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=searcher) for _ in range(3)]
    for t in threads:
        t.start()
    for start in range(1000, 1500, 50):
        index.add(ids[start : start + 50], x[start : start + 50])
        index.remove(ids[start - 1000 : start - 990])
    for t in threads:
        t.join()
    assert not errors and index.count == 1400
