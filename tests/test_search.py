"""LiveIndex: start-up (file vs rebuild), following the event log, search, rerank and ties."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fixtures_service import fresh_postgres_database
from sqlalchemy import delete, insert

from app import catalogue
from app.db import make_engine, make_session_factory, upgrade_database
from app.models import TrackEvent
from app.search import ClipTable, LiveIndex
from app.vector_index import ClipIndex

DIM = 8
CKPT = "a" * 64


class DotMatcher:
    """Similarity = (1 + cosine) / 2, like a predictor that agrees with the embedding space."""

    def similarity(self, image_emb: np.ndarray, clip_embs: np.ndarray) -> np.ndarray:
        return ((1.0 + clip_embs @ image_emb) / 2.0).astype(np.float32)


class BankMatcher(DotMatcher):
    """DotMatcher with a query bank, as a checkpoint trained with ``model.query_bank`` has."""

    def __init__(self, bank: np.ndarray) -> None:
        self.query_bank = np.asarray(bank, np.float32)

    def similarity_matrix(self, image_embs: np.ndarray, clip_embs: np.ndarray) -> np.ndarray:
        return np.stack([self.similarity(e, clip_embs) for e in image_embs])


class ConstMatcher:
    def similarity(self, image_emb: np.ndarray, clip_embs: np.ndarray) -> np.ndarray:
        return np.full(len(clip_embs), 0.5, np.float32)


def unit(v) -> np.ndarray:
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


def direction(i: int) -> np.ndarray:
    v = np.zeros(DIM, np.float32)
    v[i % DIM] = 1.0
    return v


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture
def db(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'cat.db'}"
    upgrade_database(url)
    engine = make_engine(url)
    yield make_session_factory(engine)
    engine.dispose()


def add(factory, name: str, embs: np.ndarray, checkpoint: str = CKPT) -> int:
    n = len(embs)
    batch = catalogue.ClipBatch(
        starts=np.arange(n) * 2.0,
        ends=np.arange(n) * 2.0 + 2.0,
        va=np.full((n, 2), 0.5),
        embeddings=np.asarray(embs, np.float32),
    )
    with factory() as s:
        track, created = catalogue.add_track(
            s,
            sha256=name.ljust(64, "0")[:64],
            title=name,
            artist=None,
            album=None,
            duration=2.0 * n,
            source=None,
            audio_key=None,
            license=None,
            checkpoint_hash=checkpoint,
            clips=batch,
        )
        assert created
        return track.id


def remove(factory, track_id: int) -> None:
    with factory() as s:
        assert catalogue.delete_track(s, track_id)


def live(factory, tmp_path: Path | None = None, **kw) -> LiveIndex:
    idx = LiveIndex(
        factory,
        checkpoint_hash=CKPT,
        dim=DIM,
        index_dir=tmp_path / "index" if tmp_path else None,
        **kw,
    )
    idx.load()
    return idx


def top(idx: LiveIndex, query, n: int = 10, k: int = 256, matcher=None) -> list[int]:
    return [h.track_id for h in idx.recommend(matcher or DotMatcher(), unit(query), n, k)]


class TestClipTable:
    def test_add_lookup_remove(self) -> None:
        t = ClipTable()
        t.add(np.array([5, 1, 3]), np.array([2, 1, 2]), np.array([4.0, 0.0, 2.0]), np.array([6.0, 2.0, 4.0]))
        found, tids, starts, _ = t.lookup(np.array([3, 4, 5, 1]))
        assert found.tolist() == [True, False, True, True]
        assert tids[found].tolist() == [2, 2, 1] and starts[found].tolist() == [2.0, 4.0, 0.0]
        assert t.clips_of(2).tolist() == [3, 5]
        t.remove(t.clips_of(2))
        assert len(t) == 1 and t.clips_of(2).tolist() == [] and 2 not in t.by_track

    def test_re_adding_an_id_replaces_it(self) -> None:
        t = ClipTable()
        t.add(np.array([1]), np.array([1]), np.array([0.0]), np.array([2.0]))
        t.add(np.array([1]), np.array([1]), np.array([8.0]), np.array([10.0]))
        assert len(t) == 1 and t.starts.tolist() == [8.0]


class TestStartup:
    def test_rebuilds_from_database_without_a_file(self, db, tmp_path: Path) -> None:
        a = add(db, "a", [direction(0), direction(1)])
        add(db, "other-model", [direction(0)], checkpoint="b" * 64)
        idx = live(db, tmp_path)
        assert idx.source == "database"
        assert (idx.n_tracks, idx.n_clips) == (1, 2)  # the other checkpoint's track is not searchable
        assert top(idx, direction(0)) == [a]

    def test_uses_a_matching_file_and_rebuilds_a_stale_one(self, db, tmp_path: Path) -> None:
        a = add(db, "a", [direction(0), direction(1)])
        with db() as s:
            table = catalogue.load_clip_table(s)
            ids, embs = catalogue.load_embeddings(s)
        ClipIndex.build(ids, embs, checkpoint_hash=CKPT).save(tmp_path / "index")
        assert live(db, tmp_path).source == "file"

        b = add(db, "b", [direction(2)])  # the file no longer matches the DB
        idx = live(db, tmp_path)
        assert idx.source == "database" and idx.n_tracks == 2
        assert top(idx, direction(2), n=1) == [b]
        assert len(table.ids) == 2 and a

    def test_file_of_another_checkpoint_is_not_used(self, db, tmp_path: Path) -> None:
        add(db, "a", [direction(0)])
        with db() as s:
            ids, embs = catalogue.load_embeddings(s)
        ClipIndex.build(ids, embs, checkpoint_hash="c" * 64).save(tmp_path / "index")
        assert live(db, tmp_path).source == "database"

    def test_empty_catalogue(self, db) -> None:
        idx = live(db)
        assert (idx.n_tracks, idx.n_clips) == (0, 0)
        assert top(idx, direction(0)) == []


class TestSync:
    def test_follows_adds_and_deletes_from_another_writer(self, db) -> None:
        idx = live(db)
        a = add(db, "a", [direction(0)])
        b = add(db, "b", [direction(1), direction(2)])
        assert top(idx, direction(0)) == []  # not synced yet
        assert idx.sync_once() == 2
        assert set(top(idx, direction(0))) == {a, b} and idx.n_clips == 3
        remove(db, a)
        idx.sync_once()
        assert top(idx, direction(0)) == [b] and idx.n_clips == 2
        assert idx.sync_once() == 0  # nothing new: idempotent

    def test_add_then_delete_in_one_poll(self, db) -> None:
        idx = live(db)
        a = add(db, "a", [direction(0)])
        remove(db, a)
        idx.sync_once()
        assert idx.n_tracks == 0 and top(idx, direction(0)) == []

    def test_out_of_order_commit_is_caught_by_the_overlap_window(self, db) -> None:
        """Event 1 becomes visible after event 2 (as with concurrent PostgreSQL commits)."""
        idx = live(db, overlap=100)
        x = add(db, "x", [direction(0)])
        y = add(db, "y", [direction(1)])
        with db() as s:  # hide x's event as if its transaction had not committed yet
            event = s.get(TrackEvent, 1)
            saved = {"id": event.id, "kind": event.kind, "track_id": event.track_id}
            s.execute(delete(TrackEvent).where(TrackEvent.id == 1))
            s.commit()
        idx.sync_once()
        assert idx.cursor == 2 and set(top(idx, direction(0))) == {y}
        with db() as s:  # ... now it commits, below the cursor
            s.execute(insert(TrackEvent).values(**saved))
            s.commit()
        idx.sync_once()
        assert set(top(idx, direction(0))) == {x, y}

    def test_without_overlap_the_full_compare_still_repairs(self, db) -> None:
        idx = live(db, overlap=0, full_resync_seconds=3600)
        x = add(db, "x", [direction(0)])
        add(db, "y", [direction(1)])
        with db() as s:
            s.execute(delete(TrackEvent).where(TrackEvent.track_id == x))
            s.commit()
        idx.sync_once()
        assert x not in top(idx, direction(0))
        idx.full_resync_seconds = 0.0
        idx.sync_once()
        assert x in top(idx, direction(0))

    def test_refresh_tracks_applies_at_once(self, db) -> None:
        idx = live(db)
        a = add(db, "a", [direction(0)])
        assert idx.refresh_tracks([a]) == 1
        assert top(idx, direction(0)) == [a]
        assert idx.sync_once() == 0  # the event for a is already reflected
        remove(db, a)
        assert idx.refresh_tracks([a]) == 1 and idx.n_tracks == 0


class TestSearch:
    def test_track_score_is_the_mean_over_its_clips_and_segment_its_best_clip(self, db) -> None:
        a = add(db, "a", [direction(1), direction(0), direction(2)])  # best clip is the second
        b = add(db, "b", [unit([1, 1, 0, 0, 0, 0, 0, 0])])
        idx = live(db)
        hits = idx.recommend(DotMatcher(), direction(0), 10, 256)
        # a: clips score 0.5, 1.0, 0.5 -> mean 2/3; b: one clip at (1 + cos 45 deg) / 2 = 0.854
        assert [h.track_id for h in hits] == [b, a]
        assert hits[1].score == pytest.approx(2 / 3, abs=1e-6) and hits[0].score == pytest.approx(0.8536, abs=1e-4)
        assert (hits[1].start, hits[1].end) == (2.0, 4.0)  # a's segment: its best clip

    def test_a_song_that_suits_every_photo_does_not_open_every_list(self, db) -> None:
        """Querybank normalisation: 'hub' matches this photo best (0.875 against 0.839) but
        matches the bank's photos nearly as well (z 1.8); 'fit' matches this photo far better
        than it matches the bank (z 5.4), so it comes first."""
        hub = add(db, "hub", [unit([2, 1, 1, 1, 0, 0, 0, 1])])
        fit = add(db, "fit", [unit([0, 0, 0, 0, 0, 0, 0.3, 1])])
        idx = live(db)
        query = unit([1, 0, 0, 0, 0, 0, 0, 1])
        assert [h.track_id for h in idx.recommend(DotMatcher(), query, 10, 256)] == [hub, fit]  # raw similarity
        bank = BankMatcher(np.stack([direction(i) for i in (0, 1, 2, 3, 6)]))
        hits = idx.recommend(bank, query, 10, 256)
        assert [h.track_id for h in hits] == [fit, hub]
        assert 0.5 < hits[0].score <= 1.0 and hits[1].score < hits[0].score

    def test_top_n(self, db) -> None:
        ids = [add(db, f"t{i}", [unit(direction(0) + 0.1 * i * direction(1))]) for i in range(5)]
        idx = live(db)
        assert top(idx, direction(0), n=3) == ids[:3]

    def test_ties_break_by_track_id_deterministically(self, db) -> None:
        ids = [add(db, f"t{i}", [direction(i)]) for i in range(4)]
        idx = live(db)
        first = idx.recommend(ConstMatcher(), direction(0), 10, 256)
        assert [h.track_id for h in first] == sorted(ids)
        assert all(h.score == 0.5 for h in first)
        assert idx.recommend(ConstMatcher(), direction(0), 10, 256) == first

    def test_candidate_list_widens_to_cover_n_tracks(self, db) -> None:
        """Long tracks can fill the top-K with their own clips; K grows until n tracks appear."""
        near = add(db, "long", [unit(direction(0) + 0.01 * j * direction(1)) for j in range(30)])
        far = [add(db, f"far{i}", [direction(2 + i)]) for i in range(3)]
        idx = live(db)
        got = top(idx, direction(0), n=4, k=8)
        assert got[0] == near and set(got[1:]) == set(far)

    def test_rerank_decides_the_order(self, db) -> None:
        """FAISS only proposes; the similarity predictor's score orders the result."""
        a = add(db, "a", [direction(0)])
        b = add(db, "b", [direction(1)])
        idx = live(db)

        class Prefers(DotMatcher):
            def similarity(self, image_emb, clip_embs):
                return np.where(clip_embs[:, 1] > 0.5, 0.9, 0.1).astype(np.float32)

        assert top(idx, direction(0), matcher=Prefers()) == [b, a]


@pytest.mark.postgres
def test_concurrent_postgres_commits_out_of_id_order(postgres_url: str) -> None:
    """Real PostgreSQL: a transaction holding event id 1 commits after the one holding id 2."""
    upgrade_database(postgres_url)
    engine = make_engine(postgres_url)
    factory = make_session_factory(engine)
    try:
        idx = LiveIndex(factory, checkpoint_hash=CKPT, dim=DIM, overlap=100)
        idx.load()
        slow = factory()
        n = 1
        batch = catalogue.ClipBatch(np.zeros(n), np.full(n, 2.0), np.full((n, 2), 0.5), direction(0)[None])
        first, _ = catalogue.add_track(
            slow, sha256="1" * 64, title="slow", artist=None, album=None, duration=2.0, source=None,
            audio_key=None, license=None, checkpoint_hash=CKPT, clips=batch, commit=False,
        )  # fmt: skip
        second = add(factory, "fast", [direction(1)])
        idx.sync_once()
        assert idx.track_sig.keys() == {second}
        slow.commit()
        slow.close()
        idx.sync_once()
        assert idx.track_sig.keys() == {first.id, second}
    finally:
        engine.dispose()
