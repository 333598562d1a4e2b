"""Catalogue API on SQLite and PostgreSQL: one transaction per track, events, cascades, races."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core.catalogue import (
    ClipBatch,
    add_track,
    catalogue_version,
    checkpoint_counts,
    delete_track,
    find_tracks,
    get_track,
    list_tracks,
    load_clip_rows,
    load_embeddings,
)
from app.core.models import Clip, Track, TrackEvent
from tests.support.catalogue import DIM, add, clip_batch


def track_clips(session: Session, track_id: int) -> list[Clip]:
    """A track's clips in time order (only these tests read clips as ORM rows)."""
    return list(session.scalars(select(Clip).where(Clip.track_id == track_id).order_by(Clip.start, Clip.id)))


def events_since(session: Session, event_id: int, overlap: int = 0) -> list[TrackEvent]:
    """Events with id > ``event_id - overlap``, oldest first (the event log as followers read it)."""
    floor = max(0, int(event_id) - max(0, int(overlap)))
    return list(session.scalars(select(TrackEvent).where(TrackEvent.id > floor).order_by(TrackEvent.id)))


def test_add_get_list_delete(session_factory: Any) -> None:
    with session_factory() as s:
        track, created = add(s, "a" * 64, n=4, title="Heroes Rite", artist="Wesnoth")
        assert created and track.id and track.clip_count == 4
        batch = clip_batch(4, seed=64)
        assert track.valence == pytest.approx(float(batch.va[:, 0].mean()), abs=1e-6)
        add(s, "b" * 64, n=2, title="Love Theme", album="Core")
    with session_factory() as s:
        got = get_track(s, track.id)
        assert got is not None and got.title == "Heroes Rite" and got.license == "CC-BY-4.0"
        clips = track_clips(s, track.id)
        assert [c.start for c in clips] == [0.0, 2.0, 4.0, 6.0]
        emb = np.frombuffer(clips[1].embedding, np.float32)
        np.testing.assert_array_equal(emb, batch.embeddings[1])
        page, total = list_tracks(s, q="theme", offset=0, limit=10)
        assert total == 1 and page[0].title == "Love Theme"
        page, total = list_tracks(s, q="WESNOTH")
        assert total == 1 and page[0].id == track.id
        page, total = list_tracks(s, q="100%_")  # LIKE wildcards are literal
        assert total == 0
        page, total = list_tracks(s, offset=1, limit=1)
        assert total == 2 and len(page) == 1
    with session_factory() as s:
        assert delete_track(s, track.id) is True
        assert delete_track(s, track.id) is False
    with session_factory() as s:
        assert get_track(s, track.id) is None
        assert s.scalar(select(func.count()).select_from(Clip).where(Clip.track_id == track.id)) == 0
        kinds = [(e.kind, e.track_id) for e in events_since(s, 0)]
        assert kinds == [("add", track.id), ("add", track.id + 1), ("delete", track.id)]


def test_duplicate_sha_returns_existing(session_factory: Any) -> None:
    with session_factory() as s:
        first, created = add(s, "c" * 64)
        assert created
    with session_factory() as s:
        again, created = add(s, "c" * 64, n=5)
        assert not created and again.id == first.id and again.clip_count == 3
        assert s.scalar(select(func.count()).select_from(Track)) == 1
        assert s.scalar(select(func.count()).select_from(Clip)) == 3
        assert len(events_since(s, 0)) == 1


def test_concurrent_adds_of_same_content_make_one_track(session_factory: Any) -> None:
    """Race-safety comes from the unique constraint: every writer gets the same track."""
    results: list[tuple[int, bool]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def writer() -> None:
        try:
            with session_factory() as s:
                barrier.wait()
                track, created = add(s, "d" * 64)
                results.append((track.id, created))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert sum(created for _, created in results) == 1
    assert len({tid for tid, _ in results}) == 1
    with session_factory() as s:
        assert s.scalar(select(func.count()).select_from(Clip)) == 3


def test_clip_table_embeddings_and_versions(session_factory: Any) -> None:
    with session_factory() as s:
        t1, _ = add(s, "e" * 64, n=3, ckpt="ck1")
        t2, _ = add(s, "f" * 64, n=2, ckpt="ck2")
        t3, _ = add(s, "g" * 64, n=1, ckpt="ck1")
    with session_factory() as s:
        table = load_clip_rows(s)
        assert len(table.ids) == 6 and np.all(np.diff(table.ids) > 0)
        assert table.ids.dtype == np.int64
        assert list(np.unique(table.track_ids)) == sorted([t1.id, t2.id, t3.id])
        only1 = load_clip_rows(s, "ck1")
        assert set(only1.track_ids.tolist()) == {t1.id, t3.id}
        ids, embs = load_embeddings(s)
        assert embs.shape == (6, DIM) and embs.dtype == np.float32
        np.testing.assert_array_equal(ids, table.ids)
        some, some_embs = load_embeddings(s, [int(table.ids[4]), int(table.ids[0]), 10**9])
        assert some.tolist() == [table.ids[0], table.ids[4]]
        np.testing.assert_array_equal(some_embs, embs[[0, 4]])
        ids1, _ = load_embeddings(s, checkpoint_hash="ck1")
        np.testing.assert_array_equal(ids1, only1.ids)
        none_ids, none_embs = load_embeddings(s, checkpoint_hash="nope", dim=DIM)
        assert none_ids.shape == (0,) and none_embs.shape == (0, DIM)
        assert checkpoint_counts(s) == {"ck1": 2, "ck2": 1}
        version = catalogue_version(s, "ck1")
        assert version.clip_count == 4 and version.last_event_id == 3
        assert [e.id for e in events_since(s, 3)] == []
        assert [e.id for e in events_since(s, 3, overlap=2)] == [2, 3]
        assert {t.sha256 for t in find_tracks(s, ["e" * 64, "x" * 64]).values()} == {"e" * 64}


def test_ids_are_never_reused(session_factory: Any) -> None:
    """FAISS ids are clip ids: deleting the newest track must not hand its ids out again."""
    with session_factory() as s:
        track, _ = add(s, "h" * 64, n=2)
        old = [c.id for c in track_clips(s, track.id)]
        delete_track(s, track.id)
        again, _ = add(s, "i" * 64, n=2)
        assert again.id != track.id
        assert not set(old) & {c.id for c in track_clips(s, again.id)}


def test_validation(session_factory: Any) -> None:
    with pytest.raises(ValueError, match="at least one clip"):  # noqa: SIM117
        with session_factory() as s:
            add_track(
                s,
                sha256="j" * 64,
                title="x",
                artist=None,
                album=None,
                duration=1.0,
                source=None,
                audio_key=None,
                license=None,
                checkpoint_hash="ck",
                clips=ClipBatch([], [], np.zeros((0, 2)), np.zeros((0, DIM))),
            )
    with pytest.raises(ValueError, match="disagree"):
        ClipBatch([0.0, 2.0], [2.0], np.zeros((2, 2)), np.zeros((2, DIM)))
