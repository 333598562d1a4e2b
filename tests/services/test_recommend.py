"""Ranking: track scores and segments, query-bank normalisation, ties, steering, variety, paging."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from app.core import catalogue
from app.core.live_index import LiveIndex
from app.services.ranking import SPARE, Page, Query, Ranker, SearchOptions
from tests.support.live_catalogue import (
    CKPT,
    DIM,
    BankMatcher,
    ConstMatcher,
    DotMatcher,
    add,
    direction,
    live,
    remove,
    top,
    unit,
)


def page_more(page: Page) -> tuple[list, bool]:
    """A page's songs and whether a next page exists."""
    return page.results, page.next_offset is not None


class TestSearch:
    def test_track_score_is_the_mean_over_its_clips_and_segment_its_best_clip(self, db) -> None:
        a = add(db, "a", [direction(1), direction(0), direction(2)])  # best clip is the second
        b = add(db, "b", [unit([1, 1, 0, 0, 0, 0, 0, 0])])
        idx = live(db)
        hits = Ranker(idx, DotMatcher(), search_k=256).page(Query(direction(0)), SearchOptions(n=10, spare=0)).results
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
        assert [
            h.track_id
            for h in Ranker(idx, DotMatcher(), search_k=256).page(Query(query), SearchOptions(n=10, spare=0)).results
        ] == [hub, fit]  # raw similarity
        bank = BankMatcher(np.stack([direction(i) for i in (0, 1, 2, 3, 6)]))
        hits = Ranker(idx, bank, search_k=256).page(Query(query), SearchOptions(n=10, spare=0)).results
        assert [h.track_id for h in hits] == [fit, hub]
        assert 0.5 < hits[0].score <= 1.0 and hits[1].score < hits[0].score

    def test_the_va_distance_to_the_photo_breaks_what_the_learned_score_leaves_equal(self, db) -> None:
        """Two songs the predictor rates equally for this photo (z 0.793 each, against a bank of
        three photos); the one whose predicted VA lies nearer the photo's comes first, and each
        score is the normal CDF of z minus the VA distance. With the weight 0, the tie stays."""
        import math

        far = add_song(db, "far", [direction(2)], va=(0.8, 0.8))
        near = add_song(db, "near", [direction(3)], va=(0.2, 0.2))
        idx = live(db)
        bank = BankMatcher(np.stack([direction(0), direction(2), direction(3)]))
        query = Query(unit(direction(2) + direction(3)), (0.3, 0.3))
        z = ((1 + math.sqrt(0.5)) / 2 - 2 / 3) / math.sqrt(1 / 18)  # bank scores 0.5, 1, 0.5 for both songs
        cdf = lambda x: 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))  # noqa: E731
        hits = Ranker(idx, bank, search_k=256).page(query, SearchOptions(n=2, spare=0)).results
        assert [h.track_id for h in hits] == [near, far]
        assert hits[0].score == pytest.approx(cdf(z - math.hypot(0.1, 0.1)), abs=1e-5)
        assert hits[1].score == pytest.approx(cdf(z - math.hypot(0.5, 0.5)), abs=1e-5)
        plain = Ranker(idx, bank, search_k=256, va_weight=0.0).page(query, SearchOptions(n=2, spare=0)).results
        assert [h.track_id for h in plain] == [far, near]  # equal z: track id decides
        assert plain[0].score == plain[1].score == pytest.approx(cdf(z), abs=1e-5)

    def test_top_n(self, db) -> None:
        ids = [add(db, f"t{i}", [unit(direction(0) + 0.1 * i * direction(1))]) for i in range(5)]
        idx = live(db)
        assert top(idx, direction(0), n=3) == ids[:3]

    def test_ties_break_by_track_id_deterministically(self, db) -> None:
        ids = [add(db, f"t{i}", [direction(i)]) for i in range(4)]
        idx = live(db)
        first = (
            Ranker(idx, ConstMatcher(), search_k=256).page(Query(direction(0)), SearchOptions(n=10, spare=0)).results
        )
        assert [h.track_id for h in first] == sorted(ids)
        assert all(h.score == 0.5 for h in first)
        assert (
            Ranker(idx, ConstMatcher(), search_k=256).page(Query(direction(0)), SearchOptions(n=10, spare=0)).results
            == first
        )

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


# ------------------------------------------------------------------------------ search options
def reference_recommend(
    idx: LiveIndex, matcher, image_emb: np.ndarray, n: int, k: int, photo: tuple[float, float] = (0.5, 0.5)
) -> list[tuple]:
    """The search as it was before steering, variety and paging existed (commit 41321c8), kept
    as the oracle for "no options give exactly today's answer"; since then only the VA-distance
    term was added (issue 28)."""
    import math

    from app.core.live_index import _spread
    from app.core.ranking import VA_WEIGHT
    from app.services.bank_stats import CLIPS_PER_TRACK
    from app.services.bank_stats import query_bank as _bank
    from app.services.ranking import SCORE_DECIMALS, TRACKS_PER_RESULT

    ids = idx.candidates(image_emb, n, k)
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
            mu, sd = Ranker(idx, matcher).norms.get(bank, int(tid), embs[at : at + len(cids)], idx.snapshot())
            info = idx.snapshot().track_info[int(tid)]
            z = (score - mu) / sd - VA_WEIGHT * math.dist((info.valence, info.arousal), photo)
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
                    hits = Ranker(idx, matcher, search_k=256).page(Query(q, PHOTO), SearchOptions(n=n)).results
                    got = [(h.track_id, h.score, h.start, h.end) for h in hits]
                    assert got == reference_recommend(idx, matcher, q, n + SPARE, 256)[:n]
                    assert [
                        h.track_id
                        for h in Ranker(idx, matcher, search_k=256).page(Query(q), SearchOptions(n=n, spare=0)).results
                    ] == [r[0] for r in reference_recommend(idx, matcher, q, n, 256)]

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
                page = Ranker(idx, matcher, search_k=16).page(Query(q, PHOTO), replace(options, offset=offset)).results
                if not page:
                    break
                assert len(page) <= options.n
                seen += [h.track_id for h in page]
                offset += options.n
            assert len(seen) == len(set(seen)), "a page repeated a song"
            assert set(seen) == set(ids)
            # a page asked for on its own is the same slice of the same ranking
            mid = [
                h.track_id
                for h in Ranker(idx, matcher, search_k=16)
                .page(Query(q, PHOTO), replace(options, offset=options.n))
                .results
            ]
            assert mid and set(mid) <= set(seen[options.n :])

    def test_max_per_artist_holds_on_every_page(self, db) -> None:
        random_catalogue(db, 30, artists=3)
        idx = live(db)
        for q in queries(5):
            for cap in (1, 2):
                for offset in (0, 5):
                    page = (
                        Ranker(idx, DotMatcher(), search_k=256)
                        .page(Query(q, PHOTO), SearchOptions(n=5, max_per_artist=cap, offset=offset))
                        .results
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
        plain = [
            h.track_id
            for h in Ranker(idx, DotMatcher(), search_k=256)
            .page(Query(direction(0), PHOTO), SearchOptions(n=3))
            .results
        ]
        assert plain == [numb, live_version, other]
        deduped = (
            Ranker(idx, DotMatcher(), search_k=256)
            .page(Query(direction(0), PHOTO), SearchOptions(n=3, dedupe=True))
            .results
        )
        assert [h.track_id for h in deduped] == [numb, other]

    def test_seed_reshuffles_near_equal_scores_only(self, db) -> None:
        ids = [add_song(db, f"t{i}", [direction(i)]) for i in range(8)]
        idx = live(db)
        plain = [
            h.track_id
            for h in Ranker(idx, ConstMatcher(), search_k=256)
            .page(Query(direction(0), PHOTO), SearchOptions(n=8))
            .results
        ]
        assert plain == sorted(ids)
        orders = {
            seed: [
                h.track_id
                for h in Ranker(idx, ConstMatcher(), search_k=256)
                .page(Query(direction(0), PHOTO), SearchOptions(n=8, seed=seed))
                .results
            ]
            for seed in range(6)
        }
        assert all(sorted(o) == sorted(ids) for o in orders.values())
        assert len({tuple(o) for o in orders.values()}) > 1  # equal scores: seeds differ
        again = (
            Ranker(idx, ConstMatcher(), search_k=256)
            .page(Query(direction(0), PHOTO), SearchOptions(n=8, seed=3))
            .results
        )
        assert [h.track_id for h in again] == orders[3]  # deterministic
        # Scores far apart (DotMatcher: 1.0, 0.5, ...) keep their order whatever the seed.
        far = [add_song(db, "far", [unit(direction(0) + direction(1))])]
        idx = live(db)
        for seed in range(6):
            top = (
                Ranker(idx, DotMatcher(), search_k=256)
                .page(Query(direction(0), PHOTO), SearchOptions(n=2, seed=seed))
                .results
            )
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
            hits = [
                Ranker(idx, matcher, search_k=256).page(Query(q, PHOTO), SearchOptions(n=5, shift=shift)).results
                for q in queries(10)
            ]
            return np.mean([[h.valence, h.arousal] for page in hits for h in page], axis=0)

        base = mean_va((0.0, 0.0))
        assert mean_va((0.25, 0.0))[0] > base[0] + 0.05  # happier
        assert mean_va((-0.25, 0.0))[0] < base[0] - 0.05  # sadder
        assert mean_va((0.0, -0.25))[1] < base[1] - 0.05  # calmer
        q = queries(1)[0]
        assert (
            Ranker(idx, matcher, search_k=256).page(Query(q, PHOTO), SearchOptions(n=5)).results
            == Ranker(idx, matcher, search_k=256).page(Query(q, PHOTO), SearchOptions(n=5, shift=(0.0, 0.0))).results
        )

    def test_segment_window_uses_consecutive_clips(self, db) -> None:
        # clip scores under DotMatcher for query direction(0): 0.5 0.5 1 0.5 0.85 0.85 0.85 0.5
        near = unit(direction(0) + direction(1))
        a = add_song(db, "a", [direction(1), direction(2), direction(0), direction(3), near, near, near, direction(4)])
        idx = live(db)
        one = Ranker(idx, DotMatcher(), search_k=256).page(Query(direction(0), PHOTO), SearchOptions(n=1)).results[0]
        assert (one.track_id, one.start, one.end) == (a, 4.0, 6.0)  # the best single clip
        six = (
            Ranker(idx, DotMatcher(), search_k=256)
            .page(Query(direction(0), PHOTO), SearchOptions(n=1, segment_seconds=6.0))
            .results[0]
        )
        assert (six.start, six.end) == (8.0, 14.0) and six.segment_score == pytest.approx(0.8536, abs=1e-4)
        seven = (
            Ranker(idx, DotMatcher(), search_k=256)
            .page(Query(direction(0), PHOTO), SearchOptions(n=1, segment_seconds=7.0))
            .results[0]
        )
        assert (seven.start, seven.end) == (8.0, 14.0)  # snapped to whole clips
        whole = (
            Ranker(idx, DotMatcher(), search_k=256)
            .page(Query(direction(0), PHOTO), SearchOptions(n=1, segment_seconds=60.0))
            .results[0]
        )
        assert (whole.start, whole.end) == (0.0, 16.0)
        assert one.score == six.score == whole.score  # the window never changes the ranking


# ------------------------------------------------------------------ query-bank statistics, stored
class CountingBankMatcher(BankMatcher):
    """BankMatcher that counts the rows it scores against the bank (request-path work)."""

    def __init__(self, bank: np.ndarray) -> None:
        super().__init__(bank)
        self.bank_calls = 0

    def similarity_matrix(self, image_embs: np.ndarray, clip_embs: np.ndarray) -> np.ndarray:
        self.bank_calls += 1
        return super().similarity_matrix(image_embs, clip_embs)


def stored_stats(factory) -> dict[int, tuple[float | None, float | None]]:
    from app.core.models import Track

    with factory() as s:
        return {t.id: (t.bank_mean, t.bank_std) for t in s.query(Track)}


def lazy_stats(idx: LiveIndex, matcher, track_id: int) -> tuple[float, float]:
    """What the ranking computed per process before the statistics were stored (commit 2dea632)."""
    from app.core.live_index import _spread

    cids = _spread(idx.table.clips_of(track_id), 32)
    embs = np.asarray(idx.index.reconstruct(cids), np.float32)
    pick = np.linspace(0, len(embs) - 1, min(len(embs), 8)).round().astype(int)
    per_photo = np.asarray(matcher.similarity_matrix(matcher.query_bank, embs[pick]), np.float64).mean(axis=1)
    return float(per_photo.mean()), max(float(per_photo.std()), 1e-3)


class TestStoredBankStats:
    def test_the_clips_scored_against_the_bank_are_the_rankings_own(self) -> None:
        from app.core.live_index import _spread
        from app.services.bank_stats import bank_clip_positions

        for count in range(1, 150):
            sample = _spread(np.arange(count), 32)
            old = sample[np.linspace(0, len(sample) - 1, min(len(sample), 8)).round().astype(int)]
            np.testing.assert_array_equal(bank_clip_positions(count), old)

    def test_backfill_stores_them_and_the_ranker_then_scores_no_bank(self, session_factory) -> None:
        """Tracks stored without statistics: the ranking computes them lazily (as it did); the
        backfill stores exactly those values; afterwards no request scores the bank, in this
        process or in a fresh one, and every answer is the same."""
        from app.services.bank_stats import backfill_bank_stats

        ids = random_catalogue(session_factory, 30)
        assert set(stored_stats(session_factory).values()) == {(None, None)}
        idx = live(session_factory)
        lazy = CountingBankMatcher(BANK)
        before = [Ranker(idx, lazy, search_k=256).page(Query(q, PHOTO), SearchOptions(n=5)).results for q in queries(4)]
        assert lazy.bank_calls > 0  # today: request-path work
        expected = {t: lazy_stats(idx, BankMatcher(BANK), t) for t in ids}

        assert backfill_bank_stats(idx, BankMatcher(BANK), session_factory) == len(ids)
        assert stored_stats(session_factory) == expected  # identical values, not merely close
        assert backfill_bank_stats(idx, BankMatcher(BANK), session_factory) == 0  # once

        for index in (idx, live(session_factory)):  # this process, and a restarted one
            counting = CountingBankMatcher(BANK)
            after = [
                Ranker(index, counting, search_k=256).page(Query(q, PHOTO), SearchOptions(n=5)).results
                for q in queries(4)
            ]
            assert after == before
            assert counting.bank_calls == 0

    def test_an_upload_stores_them_with_the_track(self, db) -> None:
        from app.services import tracks as tracks_service
        from app.services.bank_stats import track_bank_stats

        rng = np.random.default_rng(3)
        embs = rng.standard_normal((40, DIM)).astype(np.float32)
        embs /= np.linalg.norm(embs, axis=1, keepdims=True)
        clips = catalogue.ClipBatch(np.arange(40) * 2.0, np.arange(40) * 2.0 + 2.0, np.full((40, 2), 0.5), embs)
        track, created = tracks_service.add_track(
            db,
            sha256="f" * 64,
            fields={"title": "upload"},
            duration=80.0,
            clips=clips,
            checkpoint_hash=CKPT,
            placement=tracks_service.Placement(scorer=BankMatcher(BANK)),
        )
        assert created
        idx = live(db)
        assert stored_stats(db)[track.id] == lazy_stats(idx, BankMatcher(BANK), track.id)
        assert stored_stats(db)[track.id] == track_bank_stats(BankMatcher(BANK), embs)
        counting = CountingBankMatcher(BANK)
        Ranker(idx, counting, search_k=256).page(Query(direction(0)), SearchOptions(n=1, spare=0))
        assert counting.bank_calls == 0


# ------------------------------------------------------------------ paging: one ranking, honest "more"
class TestPaging:
    def test_a_deep_page_is_a_slice_of_one_ranking_not_a_rebuild(self, db, monkeypatch) -> None:
        """n=1&offset=150 used to run 151 FAISS searches; now one ranking (a few widenings)."""
        from app.core.live_index import Snapshot

        random_catalogue(db, 200, artists=50)
        idx = live(db)
        q = queries(1)[0]
        pages = [
            Ranker(idx, DotMatcher(), search_k=16).page(Query(q, PHOTO), SearchOptions(n=1, offset=o)).results
            for o in range(160)
        ]
        calls = []
        real = Snapshot.search
        monkeypatch.setattr(Snapshot, "search", lambda self, *a: calls.append(1) or real(self, *a))
        deep = Ranker(idx, DotMatcher(), search_k=16).page(Query(q, PHOTO), SearchOptions(n=1, offset=150)).results
        assert deep == pages[150]  # the same slice as paging there one page at a time
        assert len(calls) <= 6
        seen = [p[0].track_id for p in pages]
        assert len(set(seen)) == len(seen)

    def test_paging_has_a_cap(self, db) -> None:
        from app.services.ranking import MAX_RANKED

        random_catalogue(db, 5)
        idx = live(db)
        Ranker(idx, DotMatcher(), search_k=16).page(
            Query(direction(0), PHOTO), SearchOptions(n=10, offset=MAX_RANKED - 10)
        )
        with pytest.raises(ValueError, match="paging cap"):
            Ranker(idx, DotMatcher(), search_k=16).page(
                Query(direction(0), PHOTO), SearchOptions(n=10, offset=MAX_RANKED)
            )

    def test_more_only_when_the_next_page_holds_a_song_under_the_same_options(self, db) -> None:
        """Issue 24, 2: "Numb" and "Numb (Live)" by one artist plus "Yellow", n=2, dedupe: the
        next page would be empty, so there is no next page."""
        add_song(db, "Numb", [direction(0)], artist="Linkin Park")
        add_song(db, "Numb (Live)", [unit(direction(0) + 0.01 * direction(1))], artist="Linkin Park")
        add_song(db, "Yellow", [direction(1)], artist="Coldplay")
        idx = live(db)
        ranker = Ranker(idx, DotMatcher())
        page, more = page_more(ranker.page(Query(direction(0), PHOTO), SearchOptions(n=2, dedupe=True)))
        assert len(page) == 2 and more is False
        assert ranker.page(Query(direction(0), PHOTO), SearchOptions(n=2, dedupe=True, offset=2)).results == []
        page, more = page_more(ranker.page(Query(direction(0), PHOTO), SearchOptions(n=2)))  # no dedupe: one left
        assert len(page) == 2 and more is True
        for n in (1, 2, 3):  # walking "more" visits every page that has songs, and no empty one
            for opts in (SearchOptions(n=n, dedupe=True), SearchOptions(n=n, max_per_artist=1)):
                offset, more = 0, True
                while more:
                    page, more = page_more(ranker.page(Query(direction(0), PHOTO), replace(opts, offset=offset)))
                    assert page, (n, opts, offset)
                    offset += n
                assert ranker.page(Query(direction(0), PHOTO), replace(opts, offset=offset)).results == []

    def test_more_never_points_past_the_cap(self, db) -> None:
        from app.services.ranking import MAX_RANKED

        random_catalogue(db, 30)
        idx = live(db)
        _, more = page_more(
            Ranker(idx, DotMatcher(), search_k=16).page(
                Query(direction(0), PHOTO), SearchOptions(n=1, offset=MAX_RANKED - 1)
            )
        )
        assert more is False


class TestDefaultSegment:
    def test_the_default_segment_is_the_best_clip_of_the_whole_track(self, db) -> None:
        """Issue 24, 3: 100 clips, the best at 2-4 s, which the ranking's 32-clip sample skips."""
        from app.services.bank_stats import spread

        assert 1 not in spread(100, 32)
        clips = [direction(1)] * 100
        clips[1] = direction(0)
        clips[50] = unit(direction(0) + direction(1))  # in the sample: the best the sample sees
        track = add_song(db, "long", clips)
        idx = live(db)
        for ranker in (Ranker(idx, DotMatcher()), Ranker(idx, BankMatcher(BANK))):
            hit = ranker.page(Query(direction(0), PHOTO), SearchOptions(n=1)).results[0]
            assert (hit.track_id, hit.start, hit.end) == (track, 2.0, 4.0)
            assert ranker.page(Query(direction(0)), SearchOptions(n=1, spare=0)).results[0].start == 2.0
            longer = ranker.page(Query(direction(0), PHOTO), SearchOptions(n=1, segment_seconds=2.5)).results[0]
            assert (longer.start, longer.end) == (2.0, 4.0)  # the window agrees with the clip


class TestSnapshots:
    def test_a_request_reads_one_snapshot_while_the_sync_swaps_in_the_next(self, db) -> None:
        a = add(db, "a", [direction(0)])
        idx = live(db)
        before = idx.snapshot()
        b = add(db, "b", [direction(0)])
        remove(db, a)
        idx.sync_once()
        assert [int(t) for t in before.track_pool(direction(0), 2, 16, 8)] == [a]  # unchanged
        assert idx.snapshot().track_pool(direction(0), 2, 16, 8) == [b]
        assert before.base is idx.snapshot().base and before.base.frozen  # delta, no copy yet

    def test_changes_fold_into_a_fresh_index_beyond_the_delta_limit(self, db, monkeypatch) -> None:
        import app.core.live_index as live_index

        monkeypatch.setattr(live_index, "COMPACT_AT", 3)
        monkeypatch.setattr(live_index, "COMPACT_FRACTION", 0.0)
        random_catalogue(db, 10)
        idx = live(db)
        first = idx.snapshot().base
        added = [add_song(db, f"new {i}", [direction(i), direction(i + 1)]) for i in range(3)]
        remove(db, added[0])
        idx.sync_once()
        snap = idx.snapshot()
        assert snap.base is not first and snap.changes == 0 and first is not None and first.frozen
        fresh = live(db).snapshot()
        np.testing.assert_array_equal(snap.ids(), fresh.ids())
        for q in queries(5):
            np.testing.assert_array_equal(snap.search(q, 40), fresh.search(q, 40))


def test_best_clip_index_is_the_rounded_best_then_earliest_then_lowest_id() -> None:
    """The vectorised pick equals the plain definition, ties by rounding included."""
    from app.services.ranking import SCORE_DECIMALS, best_clip_index

    rng = np.random.default_rng(7)
    for _ in range(500):
        n = int(rng.integers(1, 40))
        scores = np.round(rng.random(n), int(rng.integers(1, 8))) + rng.choice([0.0, 1e-9, -1e-9, 4e-7], n)
        starts = rng.integers(0, 10, n).astype(float) * 2.0
        ids = rng.permutation(1000)[:n]
        plain = min(range(n), key=lambda i: (-round(float(scores[i]), SCORE_DECIMALS), starts[i], ids[i]))
        assert best_clip_index(scores, starts, ids) == plain
