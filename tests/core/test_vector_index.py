"""ClipIndex: exact, HNSW and IVF-PQ search keyed by clip ids, removal, atomic save/load, mismatch."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from app.core.vector_index import (
    ClipIndex,
    IndexLoadError,
    IndexMismatchError,
    IndexNotFoundError,
    IndexPolicy,
)

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
    index = ClipIndex.build(ids, x, checkpoint_hash="ck", policy=IndexPolicy(exact_threshold=10_000))
    assert index.index_type == "flat" and index.count == 3000 and index.dim == DIM
    q = vectors(20, seed=1)
    scores, found = index.search(q, 10)
    np.testing.assert_array_equal(found, exact_top(x, ids, q, 10))
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    np.testing.assert_allclose(index.reconstruct(found[0, :3]), x[(found[0, :3] - 11) // 7])
    assert index.recall_at_k(50) == 1.0


def test_hnsw_reaches_target_recall_and_records_params(data: tuple[np.ndarray, np.ndarray]) -> None:
    ids, x = data
    index = ClipIndex.build(ids, x, checkpoint_hash="ck", policy=IndexPolicy(exact_threshold=1000))
    assert index.index_type == "hnsw"
    p = index.meta.params
    assert p["M"] == 32 and p["efConstruction"] == 80 and p["efSearch"] >= 16
    assert index.meta.recall_at_10 is not None and index.meta.recall_at_10 >= 0.95
    # recall on fresh queries (not catalogue vectors) is measured against exact search too
    assert index.recall_at_k(vectors(100, seed=5), k=10) >= 0.9
    np.testing.assert_allclose(index.reconstruct(ids[[5, 9]]), x[[5, 9]])


@pytest.mark.parametrize(
    ("exact_threshold", "compressed_threshold"),
    [(10_000, 20_000), (1000, 20_000), (1000, 1500)],
    ids=["flat", "hnsw", "ivfpq"],
)
def test_remove_add_and_missing_ids(
    data: tuple[np.ndarray, np.ndarray], exact_threshold: int, compressed_threshold: int
) -> None:
    ids, x = data
    index = ClipIndex.build(
        ids[:2000],
        x[:2000],
        checkpoint_hash="ck",
        policy=IndexPolicy(exact_threshold=exact_threshold, compressed_threshold=compressed_threshold),
    )
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
    index = ClipIndex.build(
        ids, x, checkpoint_hash="ck-a", last_event_id=42, policy=IndexPolicy(exact_threshold=exact_threshold)
    )
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
    index = ClipIndex.build(ids[:1000], x[:1000], checkpoint_hash="ck", policy=IndexPolicy(exact_threshold=500))
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


def clustered(n: int, seed: int = 0, n_centres: int = 400) -> np.ndarray:
    """Unit vectors around ``n_centres`` centres in a 12-d subspace (embeddings are not isotropic)."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(np.random.default_rng(99).standard_normal((DIM, 12)))[0].T
    centres = rng.standard_normal((n_centres, 12)) @ basis
    x = centres[rng.integers(0, n_centres, n)] + 0.35 * rng.standard_normal((n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def big() -> tuple[np.ndarray, np.ndarray, ClipIndex]:
    x = clustered(20_000)
    ids = np.arange(20_000, dtype=np.int64) * 3 + 5
    index = ClipIndex.build(
        ids, x, checkpoint_hash="ck", policy=IndexPolicy(exact_threshold=1000, compressed_threshold=10_000)
    )
    return ids, x, index


def test_index_type_switches_at_the_thresholds() -> None:
    policy = IndexPolicy(exact_threshold=1000, compressed_threshold=10_000)
    assert policy.index_type(999) == "flat"
    assert policy.index_type(1000) == "hnsw"
    assert policy.index_type(9_999) == "hnsw"
    assert policy.index_type(10_000) == "ivfpq"


def test_ivfpq_recall_at_service_k_and_bytes_per_clip(
    tmp_path: Path, big: tuple[np.ndarray, np.ndarray, ClipIndex]
) -> None:
    ids, x, index = big
    p = index.meta.params
    assert index.index_type == "ivfpq" and index.count == 20_000
    assert p["search_k"] == 256 and p["nprobe"] <= p["nlist"] and p["trained_on"] <= 20_000
    assert index.meta.recall_at_10 is not None and index.meta.recall_at_10 >= 0.95
    # Fresh queries (not catalogue vectors), searched as the service does (K=256), top 10 vs brute force.
    q = clustered(200, seed=7)
    scores, found = index.search(q, 256)
    truth = exact_top(x, ids, q, 10)
    recall = np.mean([len(set(f[:10]) & set(t)) / 10 for f, t in zip(found, truth, strict=True)])
    assert recall >= 0.95, recall
    # Scores are exact inner products (re-scored), in order; reconstruct gives the stored floats.
    np.testing.assert_allclose(scores[:, 0], np.sum(q * x[(found[:, 0] - 5) // 3], axis=1), rtol=1e-5)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    np.testing.assert_array_equal(index.reconstruct(ids[[3, 17, 19_999]]), x[[3, 17, 19_999]])
    # What stays in RAM is the FAISS file (codes, ids, centroids): at most 100 B per clip;
    # the float vectors are a memory-mapped file beside it.
    index.save(tmp_path)
    faiss_bytes = (tmp_path / index.meta.file).stat().st_size
    assert faiss_bytes / index.count <= 100, faiss_bytes / index.count
    assert (tmp_path / index.meta.vectors_file).stat().st_size >= x.nbytes


def test_ivfpq_updates_survive_save_and_load(tmp_path: Path, big: tuple[np.ndarray, np.ndarray, ClipIndex]) -> None:
    ids, x, built = big
    index = ClipIndex.build(
        ids[:15_000],
        x[:15_000],
        checkpoint_hash="ck",
        policy=IndexPolicy(exact_threshold=1000, compressed_threshold=10_000),
    )
    index.save(tmp_path)
    first = (index.meta.file, index.meta.vectors_file)
    loaded = ClipIndex.load(tmp_path, expected_checkpoint_hash="ck")
    assert isinstance(loaded.store.get(ids[:1]), np.ndarray)
    assert loaded.remove(ids[:100]) == 100 and loaded.remove(ids[:100]) == 0
    loaded.add(ids[15_000:15_500], x[15_000:15_500])
    with pytest.raises(ValueError, match="already in the index"):
        loaded.add(ids[15_000:15_001], x[15_000:15_001])
    with pytest.raises(KeyError):
        loaded.reconstruct(ids[:1])
    q = clustered(20, seed=3)
    before = loaded.search(q, 50)
    assert not np.isin(before[1], ids[:100]).any()
    loaded.save(tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == sorted(["index.json", loaded.meta.file, loaded.meta.vectors_file, loaded.meta.vector_ids_file])
    assert (loaded.meta.file, loaded.meta.vectors_file) != first
    again = ClipIndex.load(tmp_path, expected_checkpoint_hash="ck")
    assert again.count == 15_400 and json.loads((tmp_path / "index.json").read_text())["count"] == 15_400
    expected = np.concatenate([ids[100:15_000], ids[15_000:15_500]])
    np.testing.assert_array_equal(again.ids(), expected)
    np.testing.assert_array_equal(again.reconstruct(ids[15_000:15_010]), x[15_000:15_010])
    after = again.search(q, 50)
    np.testing.assert_array_equal(before[1], after[1])
    np.testing.assert_allclose(before[0], after[0], rtol=1e-6)
    (tmp_path / again.meta.vectors_file).unlink()
    with pytest.raises(IndexLoadError, match="--rebuild"):
        ClipIndex.load(tmp_path)


def test_sync_index_switches_to_ivfpq_above_the_threshold(tmp_path: Path) -> None:
    """The indexer's DB -> index step picks IVF-PQ once the catalogue crosses the threshold."""
    from app.core.catalogue import ClipBatch, add_track, delete_track, load_embeddings
    from app.core.db import make_engine, make_session_factory, upgrade_database
    from indexer.build import sync_index

    url = f"sqlite:///{tmp_path / 'catalogue.db'}"
    upgrade_database(url)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    x = clustered(3000, seed=11)
    track_ids = []

    def add(lo: int, hi: int) -> None:
        with factory() as s:
            for t in range(lo, hi, 100):
                starts = np.arange(100) * 2.0
                clips = ClipBatch(starts, starts + 2.0, np.full((100, 2), 0.5), x[t : t + 100])
                track, _ = add_track(
                    s,
                    sha256=f"{t:064x}",
                    title=f"t{t}",
                    artist=None,
                    album=None,
                    duration=200.0,
                    source=None,
                    audio_key=None,
                    license=None,
                    checkpoint_hash="ck",
                    clips=clips,
                )
                track_ids.append(track.id)

    def sync() -> object:
        return sync_index(
            factory,
            tmp_path / "index",
            checkpoint_hash="ck",
            dim=DIM,
            policy=IndexPolicy(exact_threshold=1000, compressed_threshold=2000),
        )

    try:
        add(0, 1500)
        assert sync().index_type == "hnsw"
        add(1500, 3000)
        report = sync()
        assert report.index_type == "ivfpq" and report.action == "built"
        assert "IVF-PQ threshold (2,000)" in report.reason and "IVF-PQ" in report.describe()
        assert report.recall_at_10 is not None and report.recall_at_10 >= 0.95
        with factory() as s:
            delete_track(s, track_ids[0])
        report = sync()
        assert report.action == "updated" and report.removed == 100 and report.index_type == "ivfpq"
        index = ClipIndex.load(tmp_path / "index", expected_checkpoint_hash="ck")
        with factory() as s:
            ids, embs = load_embeddings(s, checkpoint_hash="ck")
        np.testing.assert_array_equal(index.ids(), ids)
        np.testing.assert_array_equal(index.reconstruct(ids), embs)
    finally:
        engine.dispose()
