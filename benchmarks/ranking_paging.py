"""Ranking-path benchmark: page latency by offset, and concurrent search throughput with a sync.

The ``/recommend`` ranking without decoding or embedding: ``Ranker.page`` on a live index
over a real SQLite catalogue of random unit vectors (``--tracks`` x ``--clips``), scored by a
numpy similarity with a query bank (the model's cost is not what is measured here). Run it on
two trees to compare them (``PYTHONPATH=<tree>``):

    python benchmarks/ranking_paging.py --tracks 2000 --clips 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from app.core import catalogue
from app.core.db import make_engine, make_session_factory, upgrade_database
from app.core.live_index import LiveIndex
from app.services.ranking import Query, Ranker, SearchOptions

CKPT = "b" * 64


class Scorer:
    """Similarity (1 + cosine) / 2 and a 16-photo query bank, in numpy."""

    def __init__(self, dim: int) -> None:
        bank = np.random.default_rng(9).standard_normal((16, dim)).astype(np.float32)
        self.query_bank = bank / np.linalg.norm(bank, axis=1, keepdims=True)

    def similarity(self, image_emb: np.ndarray, clip_embs: np.ndarray) -> np.ndarray:
        return ((1.0 + clip_embs @ image_emb) / 2.0).astype(np.float32)

    def similarity_matrix(self, images: np.ndarray, clips: np.ndarray) -> np.ndarray:
        return ((1.0 + images @ clips.T) / 2.0).astype(np.float32)


def build(url: str, tracks: int, clips: int, dim: int, with_stats: bool) -> None:
    upgrade_database(url)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    rng = np.random.default_rng(0)
    scorer = Scorer(dim)
    with factory() as s:
        for i in range(tracks):
            embs = rng.standard_normal((clips, dim)).astype(np.float32)
            embs /= np.linalg.norm(embs, axis=1, keepdims=True)
            batch = catalogue.ClipBatch(
                np.arange(clips) * 2.0, np.arange(clips) * 2.0 + 2.0, rng.random((clips, 2)), embs
            )
            extra = {}
            if with_stats:
                from app.services.bank_stats import track_bank_stats

                extra["bank_stats"] = track_bank_stats(scorer, embs)
            catalogue.add_track(
                s, sha256=f"{i:064d}", title=f"song {i}", artist=f"artist {i % 97}", album=None,
                duration=2.0 * clips, source=None, audio_key=None, license=None, checkpoint_hash=CKPT,
                clips=batch, commit=False, **extra,
            )  # fmt: skip
        s.commit()
    engine.dispose()


def page_latency(ranker: Ranker, queries: np.ndarray, n: int, offset: int) -> float:
    """Median ms of one page (after one warm-up per query set)."""
    times = []
    for q in queries:
        t0 = time.perf_counter()
        ranker.page(Query(q, (0.5, 0.5)), SearchOptions(n=n, offset=offset))
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


def throughput(ranker: Ranker, live: LiveIndex, queries: np.ndarray, threads: int, seconds: float, sync: bool) -> float:
    """Pages per second from ``threads`` threads (optionally while a writer syncs every 10 ms)."""
    done = [0] * threads
    stop = threading.Event()

    def reader(i: int) -> None:
        j = 0
        while not stop.is_set():
            ranker.page(Query(queries[(i + j) % len(queries)], (0.5, 0.5)), SearchOptions(n=10))
            done[i] += 1
            j += 1

    def syncer() -> None:
        while not stop.is_set():
            live.refresh_tracks(list(live.track_sig)[:5])  # a no-op reconcile: DB read + lock
            live.sync_once()
            time.sleep(0.01)

    workers = [threading.Thread(target=reader, args=(i,)) for i in range(threads)]
    if sync:
        workers.append(threading.Thread(target=syncer))
    for w in workers:
        w.start()
    time.sleep(seconds)
    stop.set()
    for w in workers:
        w.join()
    return sum(done) / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tracks", type=int, default=2000)
    ap.add_argument("--clips", type=int, default=5)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--queries", type=int, default=5)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--deep-offset", type=int, default=999)
    ap.add_argument("--omp-threads", type=int, default=1, help="FAISS OpenMP threads (1: parallel across requests)")
    args = ap.parse_args()
    import faiss

    faiss.omp_set_num_threads(args.omp_threads)  # a loaded 2-core box: OpenMP barriers dominate otherwise
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        try:
            from app.services import bank_stats  # noqa: F401 - this tree stores the statistics

            stored = True
        except ImportError:
            stored = False
        build(url, args.tracks, args.clips, args.dim, stored)
        engine = make_engine(url)
        live = LiveIndex(make_session_factory(engine), checkpoint_hash=CKPT, dim=args.dim)
        live.load()
        ranker = Ranker(live, Scorer(args.dim))
        rng = np.random.default_rng(1)
        queries = rng.standard_normal((args.queries, args.dim)).astype(np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        page_latency(ranker, queries, 10, 0)  # warm-up (and, without stored stats, the lazy bank norms)
        print(f"catalogue: {live.n_tracks} tracks, {live.n_clips} clips, dim {args.dim}; stored bank stats: {stored}")
        print(f"page n=10 offset=0:   {page_latency(ranker, queries, 10, 0):8.2f} ms (median)")
        deep = page_latency(ranker, queries[:2], 1, args.deep_offset)
        print(f"page n=1 offset={args.deep_offset}: {deep:8.2f} ms (median)")
        for sync in (False, True):
            rate = throughput(ranker, live, queries, args.threads, args.seconds, sync)
            print(f"throughput, {args.threads} threads{' + sync writer' if sync else ''}: {rate:8.1f} pages/s")
        engine.dispose()


if __name__ == "__main__":
    main()
