"""Query-bank statistics of a track: computed once, when the track is embedded, and stored with it.

The ranking orders tracks by ``z = (score - bank mean) / bank std``, where the bank statistics are
the mean and spread of the track's score over the checkpoint's query bank of training photos
(``app.services.recommend``). They depend only on the track's clip embeddings and the checkpoint,
so the indexer (local and Ray) and ``POST /tracks`` compute them here, with the model they
embedded with, and the catalogue stores them (``tracks.bank_mean``, ``tracks.bank_std``).

Tracks stored before those columns existed are filled in by :func:`backfill_bank_stats`, which
the service runs once in the background after start-up; until it reaches a track, the ranker
computes that track's statistics lazily with this very function (the previous behaviour).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Protocol

import numpy as np
from anyio import to_thread
from sqlalchemy.orm import Session

from app.core import catalogue
from app.core.live_index import LiveIndex

log = logging.getLogger(__name__)

CLIPS_PER_TRACK = 32  # clips scored per candidate track (evenly spaced beyond that)
BANK_CLIPS_PER_TRACK = 8  # of those, clips scored against the query bank
STD_FLOOR = 1e-3  # a track that scores the same for every bank photo must not divide by ~0
BACKFILL_CHUNK = 64  # tracks per database round trip of the backfill

BankStats = tuple[float, float]  # (mean, std) of the track's score over the bank photos


class BankScorer(Protocol):
    """What the statistics need from the model (``model.inference.Matcher`` or ``ModelThreadScorer``)."""

    @property
    def query_bank(self) -> np.ndarray | None: ...

    def similarity_matrix(self, images: np.ndarray, clips: np.ndarray) -> np.ndarray: ...


def spread(count: int, limit: int) -> np.ndarray:
    """Positions of at most ``limit`` of ``count`` time-ordered items, evenly spaced (ends included)."""
    return np.linspace(0, count - 1, min(count, limit)).round().astype(int) if count else np.zeros(0, int)


def bank_clip_positions(count: int) -> np.ndarray:
    """Which of a track's ``count`` clips (time order) are scored against the bank.

    The ranking's sample (``CLIPS_PER_TRACK`` evenly spaced clips), then ``BANK_CLIPS_PER_TRACK``
    evenly spaced among those: the very clips the ranking has always used, so stored statistics
    equal the ones it used to compute on the request path."""
    sample = spread(count, CLIPS_PER_TRACK)
    return sample[spread(len(sample), BANK_CLIPS_PER_TRACK)]


def query_bank(scorer: object) -> np.ndarray | None:
    """The scorer's query bank (rows of training-photo embeddings), or None without one."""
    bank = getattr(scorer, "query_bank", None)
    return bank if bank is not None and len(bank) else None


def track_bank_stats(scorer: BankScorer, embeddings: np.ndarray, bank: np.ndarray | None = None) -> BankStats | None:
    """(mean, std) of a track's score over the query bank, or None when the checkpoint has none.

    ``embeddings`` are all the track's clip embeddings in time order (clip id order). ``bank``
    saves re-reading ``scorer.query_bank`` (a model-thread hop in the service)."""
    bank = query_bank(scorer) if bank is None else bank
    if bank is None or len(bank) == 0 or len(embeddings) == 0:
        return None
    picked = np.asarray(embeddings)[bank_clip_positions(len(embeddings))]
    per_photo = np.asarray(scorer.similarity_matrix(bank, picked), np.float64).mean(axis=1)
    return float(per_photo.mean()), max(float(per_photo.std()), STD_FLOOR)


def backfill_bank_stats(
    live: LiveIndex,
    scorer: BankScorer,
    session_factory: Callable[[], Session],
    *,
    stop: Callable[[], bool] = lambda: False,
) -> int:
    """Compute and store the statistics of this checkpoint's tracks that have none; returns how many.

    Blocking (run it in a worker thread; the scorer's calls hop onto the model thread one track
    at a time, so requests interleave). Statistics another replica stored meanwhile are adopted,
    not recomputed; a write never overwrites stored values. The live index gets each chunk as
    soon as it is stored. ``stop`` is polled between chunks (shutdown)."""
    bank = query_bank(scorer)
    if bank is None:
        return 0
    missing = live.tracks_without_bank_stats()
    done = 0
    for at in range(0, len(missing), BACKFILL_CHUNK):
        if stop():
            break
        chunk = dict(missing[at : at + BACKFILL_CHUNK])
        with session_factory() as session:
            stored = catalogue.bank_stats_of(session, list(chunk))
        fresh: dict[int, tuple[str, float, float]] = {}
        for track_id, sha in chunk.items():
            if track_id in stored:
                continue
            clips = live.track_clips([track_id])
            if not clips:
                continue  # deleted meanwhile
            stats = track_bank_stats(scorer, clips[0].embeddings, bank)
            if stats is not None:
                fresh[track_id] = (sha, *stats)
        if fresh:
            with session_factory() as session:
                catalogue.store_bank_stats(session, fresh)
        live.set_bank_stats({**stored, **fresh})
        done += len(fresh)
    if done:
        log.info("stored query-bank statistics of %d tracks indexed before they were kept", done)
    return done


async def backfill_in_background(live: LiveIndex, scorer: BankScorer, session_factory: Callable[[], Session]) -> int:
    """:func:`backfill_bank_stats` as a start-up task: in a worker thread, never raising (the
    ranking computes what is missing lazily meanwhile); cancelling it stops after the chunk."""
    stop = threading.Event()
    try:
        return await to_thread.run_sync(
            lambda: backfill_bank_stats(live, scorer, session_factory, stop=stop.is_set), abandon_on_cancel=True
        )
    except asyncio.CancelledError:
        stop.set()
        raise
    except Exception:  # noqa: BLE001 - a failed backfill costs speed, never answers
        log.exception("query-bank statistics backfill failed; those tracks are normalised lazily")
        return 0
