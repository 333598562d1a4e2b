"""LiveIndex: start-up (file vs rebuild), following the event log, search, rerank and ties."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import delete, insert

from app.core import catalogue
from app.core.db import make_engine, make_session_factory, upgrade_database
from app.core.live_index import ClipTable, LiveIndex
from app.core.models import TrackEvent
from app.core.vector_index import ClipIndex
from app.services.recommend import SPARE, Ranker, SearchOptions

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
    return [h.track_id for h in Ranker(idx, matcher or DotMatcher()).recommend(unit(query), n, k)]


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
            table = catalogue.load_clip_rows(s)
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
        hits = Ranker(idx, DotMatcher()).recommend(direction(0), 10, 256)
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
        assert [h.track_id for h in Ranker(idx, DotMatcher()).recommend(query, 10, 256)] == [hub, fit]  # raw similarity
        bank = BankMatcher(np.stack([direction(i) for i in (0, 1, 2, 3, 6)]))
        hits = Ranker(idx, bank).recommend(query, 10, 256)
        assert [h.track_id for h in hits] == [fit, hub]
        assert 0.5 < hits[0].score <= 1.0 and hits[1].score < hits[0].score

    def test_top_n(self, db) -> None:
        ids = [add(db, f"t{i}", [unit(direction(0) + 0.1 * i * direction(1))]) for i in range(5)]
        idx = live(db)
        assert top(idx, direction(0), n=3) == ids[:3]

    def test_ties_break_by_track_id_deterministically(self, db) -> None:
        ids = [add(db, f"t{i}", [direction(i)]) for i in range(4)]
        idx = live(db)
        first = Ranker(idx, ConstMatcher()).recommend(direction(0), 10, 256)
        assert [h.track_id for h in first] == sorted(ids)
        assert all(h.score == 0.5 for h in first)
        assert Ranker(idx, ConstMatcher()).recommend(direction(0), 10, 256) == first

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
def test_concurrent_postgres_commits_out_of_id_order(pg_url: str) -> None:
    """Real PostgreSQL: a transaction holding event id 1 commits after the one holding id 2."""
    upgrade_database(pg_url)
    engine = make_engine(pg_url)
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


# ------------------------------------------------------------------------------ search options
def reference_recommend(idx: LiveIndex, matcher, image_emb: np.ndarray, n: int, k: int) -> list[tuple]:
    """The search as it was before steering, variety and paging existed (commit 41321c8),
    kept verbatim as the oracle for "no options give exactly today's answer"."""
    import math

    from app.core.live_index import _spread
    from app.services.recommend import CLIPS_PER_TRACK, SCORE_DECIMALS, TRACKS_PER_RESULT, _bank

    ids, _ = idx.candidates(image_emb, n, k)
    if len(ids) == 0:
        return []
    ok, tids, _, _ = idx.table.lookup(ids)
    order = tids[ok]
    _, first = np.unique(order, return_index=True)
    tracks = order[np.sort(first)][: max(n, TRACKS_PER_RESULT * n)]
    clip_ids = [_spread(idx.table.clips_of(int(t)), CLIPS_PER_TRACK) for t in tracks]
    all_ids = np.concatenate(clip_ids)
    embs = np.asarray(idx.index.reconstruct(all_ids), np.float32)
    _, _, starts, ends = idx.table.lookup(all_ids)
    scores = np.clip(np.nan_to_num(np.asarray(matcher.similarity(image_emb, embs), np.float64), nan=0.0), 0.0, 1.0)
    bank = _bank(matcher)
    hits, rank, at = [], {}, 0
    for tid, cids in zip(tracks, clip_ids, strict=True):
        s = scores[at : at + len(cids)]
        score = float(s.mean())
        rank[int(tid)] = round(score, SCORE_DECIMALS)
        if bank is not None:
            mu, sd = Ranker(idx, matcher)._bank_norm(bank, int(tid), embs[at : at + len(cids)])
            z = (score - mu) / sd
            rank[int(tid)] = round(z, SCORE_DECIMALS)
            score = 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))
        best = min(range(len(cids)), key=lambda i: (-round(s[i], SCORE_DECIMALS), starts[at + i], cids[i]))
        hits.append((int(tid), round(score, SCORE_DECIMALS), float(starts[at + best]), float(ends[at + best])))
        at += len(cids)
    hits.sort(key=lambda h: (-rank[h[0]], h[0]))
    return hits[:n]


def add_song(factory, title: str, embs, artist: str | None = None, va=(0.5, 0.5)) -> int:
    n = len(embs)
    batch = catalogue.ClipBatch(
        starts=np.arange(n) * 2.0,
        ends=np.arange(n) * 2.0 + 2.0,
        va=np.tile(np.asarray(va, np.float32), (n, 1)),
        embeddings=np.asarray(embs, np.float32),
    )
    with factory() as s:
        track, created = catalogue.add_track(
            s, sha256=f"{title}|{artist}".encode().hex().ljust(64, "0")[:64], title=title, artist=artist,
            album=None, duration=2.0 * n, source=None, audio_key=None, license=None, checkpoint_hash=CKPT,
            clips=batch,
        )  # fmt: skip
        assert created
        return track.id


def random_catalogue(factory, count: int = 30, seed: int = 0, artists: int = 5) -> list[int]:
    rng = np.random.default_rng(seed)
    ids = []
    for i in range(count):
        clips = rng.standard_normal((int(rng.integers(1, 40)), DIM)).astype(np.float32)
        clips /= np.linalg.norm(clips, axis=1, keepdims=True)
        va = (float(rng.uniform(0.2, 0.8)), float(rng.uniform(0.2, 0.8)))
        ids.append(add_song(factory, f"song {i}", clips, artist=f"artist {i % artists}", va=va))
    return ids


def queries(count: int, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [unit(rng.standard_normal(DIM)) for _ in range(count)]


BANK = np.stack([unit(np.random.default_rng(9).standard_normal(DIM)) for _ in range(6)])
PHOTO = (0.5, 0.5)


class TestSearchOptions:
    def test_no_options_give_exactly_the_previous_answer(self, db) -> None:
        random_catalogue(db, 30)
        idx = live(db)
        for matcher in (DotMatcher(), BankMatcher(BANK)):
            for q in queries(6):
                for n in (1, 3, 10):
                    hits = Ranker(idx, matcher).search(q, PHOTO, SearchOptions(n=n), 256)
                    got = [(h.track_id, h.score, h.start, h.end) for h in hits]
                    assert got == reference_recommend(idx, matcher, q, n + SPARE, 256)[:n]
                    assert [h.track_id for h in Ranker(idx, matcher).recommend(q, n, 256)] == [
                        r[0] for r in reference_recommend(idx, matcher, q, n, 256)
                    ]

    @pytest.mark.parametrize(
        "options",
        [
            SearchOptions(n=4),
            SearchOptions(n=4, max_per_artist=1, dedupe=True),
            SearchOptions(n=5, seed=3),
            SearchOptions(n=3, shift=(0.25, -0.25), max_per_artist=2),
        ],
        ids=["plain", "capped", "seeded", "steered"],
    )
    def test_offset_pages_never_repeat_and_cover_the_catalogue(self, db, options: SearchOptions) -> None:
        ids = random_catalogue(db, 30)
        idx = live(db)
        matcher = BankMatcher(BANK)
        for q in queries(2):
            seen: list[int] = []
            offset = 0
            while True:
                page = Ranker(idx, matcher).search(q, PHOTO, replace(options, offset=offset), 16)
                if not page:
                    break
                assert len(page) <= options.n
                seen += [h.track_id for h in page]
                offset += options.n
            assert len(seen) == len(set(seen)), "a page repeated a song"
            assert set(seen) == set(ids)
            # a page asked for on its own is the same slice of the same ranking
            mid = [h.track_id for h in Ranker(idx, matcher).search(q, PHOTO, replace(options, offset=options.n), 16)]
            assert mid and set(mid) <= set(seen[options.n :])

    def test_max_per_artist_holds_on_every_page(self, db) -> None:
        random_catalogue(db, 30, artists=3)
        idx = live(db)
        for q in queries(5):
            for cap in (1, 2):
                for offset in (0, 5):
                    page = Ranker(idx, DotMatcher()).search(
                        q, PHOTO, SearchOptions(n=5, max_per_artist=cap, offset=offset), 256
                    )
                    per = {}
                    for h in page:
                        artist = idx.track_info[h.track_id].artist
                        per[artist] = per.get(artist, 0) + 1
                    assert max(per.values()) <= cap
                    assert len(page) == min(5, 3 * cap)  # the cap, not the catalogue, limits the page

    def test_near_duplicates_are_suppressed(self, db) -> None:
        numb = add_song(db, "Numb", [direction(0)], artist="Linkin Park")
        live_version = add_song(db, "Numb (Live)", [unit(direction(0) + 0.01 * direction(1))], artist="LINKIN PARK")
        other = add_song(db, "Faint", [direction(1)], artist="Linkin Park")
        idx = live(db)
        plain = [h.track_id for h in Ranker(idx, DotMatcher()).search(direction(0), PHOTO, SearchOptions(n=3), 256)]
        assert plain == [numb, live_version, other]
        deduped = Ranker(idx, DotMatcher()).search(direction(0), PHOTO, SearchOptions(n=3, dedupe=True), 256)
        assert [h.track_id for h in deduped] == [numb, other]

    def test_seed_reshuffles_near_equal_scores_only(self, db) -> None:
        ids = [add_song(db, f"t{i}", [direction(i)]) for i in range(8)]
        idx = live(db)
        plain = [h.track_id for h in Ranker(idx, ConstMatcher()).search(direction(0), PHOTO, SearchOptions(n=8), 256)]
        assert plain == sorted(ids)
        orders = {
            seed: [
                h.track_id
                for h in Ranker(idx, ConstMatcher()).search(direction(0), PHOTO, SearchOptions(n=8, seed=seed), 256)
            ]
            for seed in range(6)
        }
        assert all(sorted(o) == sorted(ids) for o in orders.values())
        assert len({tuple(o) for o in orders.values()}) > 1  # equal scores: seeds differ
        again = Ranker(idx, ConstMatcher()).search(direction(0), PHOTO, SearchOptions(n=8, seed=3), 256)
        assert [h.track_id for h in again] == orders[3]  # deterministic
        # Scores far apart (DotMatcher: 1.0, 0.5, ...) keep their order whatever the seed.
        far = [add_song(db, "far", [unit(direction(0) + direction(1))])]
        idx = live(db)
        for seed in range(6):
            top = Ranker(idx, DotMatcher()).search(direction(0), PHOTO, SearchOptions(n=2, seed=seed), 256)
            assert [h.track_id for h in top] == [ids[0], far[0]]

    def test_steering_moves_the_songs_mood_and_zero_shift_changes_nothing(self, db) -> None:
        rng = np.random.default_rng(4)
        for i in range(24):
            clips = rng.standard_normal((4, DIM)).astype(np.float32)
            add_song(
                db, f"s{i}", clips / np.linalg.norm(clips, axis=1, keepdims=True), va=(0.2 + 0.025 * i, 0.8 - 0.025 * i)
            )
        idx = live(db)
        matcher = BankMatcher(BANK)

        def mean_va(shift):
            hits = [Ranker(idx, matcher).search(q, PHOTO, SearchOptions(n=5, shift=shift), 256) for q in queries(10)]
            return np.mean([[h.valence, h.arousal] for page in hits for h in page], axis=0)

        base = mean_va((0.0, 0.0))
        assert mean_va((0.25, 0.0))[0] > base[0] + 0.05  # happier
        assert mean_va((-0.25, 0.0))[0] < base[0] - 0.05  # sadder
        assert mean_va((0.0, -0.25))[1] < base[1] - 0.05  # calmer
        q = queries(1)[0]
        assert Ranker(idx, matcher).search(q, PHOTO, SearchOptions(n=5), 256) == Ranker(idx, matcher).search(
            q, PHOTO, SearchOptions(n=5, shift=(0.0, 0.0)), 256
        )

    def test_segment_window_uses_consecutive_clips(self, db) -> None:
        # clip scores under DotMatcher for query direction(0): 0.5 0.5 1 0.5 0.85 0.85 0.85 0.5
        near = unit(direction(0) + direction(1))
        a = add_song(db, "a", [direction(1), direction(2), direction(0), direction(3), near, near, near, direction(4)])
        idx = live(db)
        one = Ranker(idx, DotMatcher()).search(direction(0), PHOTO, SearchOptions(n=1), 256)[0]
        assert (one.track_id, one.start, one.end) == (a, 4.0, 6.0)  # the best single clip
        six = Ranker(idx, DotMatcher()).search(direction(0), PHOTO, SearchOptions(n=1, segment_seconds=6.0), 256)[0]
        assert (six.start, six.end) == (8.0, 14.0) and six.segment_score == pytest.approx(0.8536, abs=1e-4)
        seven = Ranker(idx, DotMatcher()).search(direction(0), PHOTO, SearchOptions(n=1, segment_seconds=7.0), 256)[0]
        assert (seven.start, seven.end) == (8.0, 14.0)  # snapped to whole clips
        whole = Ranker(idx, DotMatcher()).search(direction(0), PHOTO, SearchOptions(n=1, segment_seconds=60.0), 256)[0]
        assert (whole.start, whole.end) == (0.0, 16.0)
        assert one.score == six.score == whole.score  # the window never changes the ranking
