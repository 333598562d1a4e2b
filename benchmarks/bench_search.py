"""Search alone: per index type, latency per query (batch 1), recall@10 against exact search,
build time and memory; then the service's whole search step (``Ranker.page``: FAISS
top-K, widening until the candidates cover n tracks, similarity-predictor rerank, best clip per
track) in-process, without HTTP.

Queries are *not* stored vectors (the index's own efSearch tuning uses stored vectors, which
flatters recall): they are fresh draws from the synthetic distribution (see ``SyntheticSpec``).
Index types: exact ``IndexFlatIP`` and ``IndexHNSWFlat`` as ``app.core.vector_index.ClipIndex``
builds them (the service's two types); IVF-Flat is not offered by the service and is measured
with raw FAISS as a reference point for what it would give.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import (
    DEFAULT_WORKDIR,
    SERVICE_K,
    Context,
    SyntheticSpec,
    fmt,
    log,
    recall_at,
    rss_mib,
    stats_ms,
    synthetic_clips,
    synthetic_queries,
    trim_memory,
)
from benchmarks.records import EfPoint, IndexTypeRow, IndexTypes, LiveSearch, NprobePoint, Stats

K = 10
EF_SWEEP = (16, 32, 64, 128, 256)
NPROBE_SWEEP = (4, 8, 16, 32, 64, 128)
IVF_MAX_NLIST = 1024  # training cost grows with nlist x sample; 1024 lists keep it to seconds here
IVF_TRAIN_PER_LIST = 64


@contextlib.contextmanager
def threads(n: int | None) -> Iterator[None]:
    """FAISS and torch OpenMP threads inside the block (None: leave the defaults)."""
    import faiss
    import torch

    if n is None:
        yield
        return
    f0, t0 = faiss.omp_get_max_threads(), torch.get_num_threads()
    faiss.omp_set_num_threads(n)
    torch.set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(f0)
        torch.set_num_threads(t0)


def _latency(
    search: Any, queries: np.ndarray, k: int, max_queries: int, n_threads: int | None = None, max_seconds: float = 3.0
) -> Stats:
    """Per-query seconds over up to ``max_queries`` (at least 30, or fewer when time runs out)."""
    times: list[float] = []
    start = time.perf_counter()
    with threads(n_threads):
        for q in queries[:max_queries]:
            t0 = time.perf_counter()
            search(q[None, :], k)
            times.append(time.perf_counter() - t0)
            if len(times) >= 30 and t0 - start > max_seconds:
                break
    return stats_ms(times)


def _file_bytes_per_vector(ctx: Context, index: Any, n: int) -> float:
    """Serialized size per vector (what the index file costs on disk and, roughly, in RAM)."""
    import faiss

    path = ctx.workdir / "search-size-probe.faiss"
    try:
        faiss.write_index(index, str(path))
        return path.stat().st_size / n
    finally:
        path.unlink(missing_ok=True)


def exact_truth(ids: np.ndarray, embs: np.ndarray, queries: np.ndarray, k: int = K) -> np.ndarray:
    import faiss

    _, pos = faiss.knn(queries, embs, k, metric=faiss.METRIC_INNER_PRODUCT)
    return ids[pos]


def _latencies(search: Any, queries: np.ndarray, n_lat: int) -> dict[str, Stats]:
    """The four latencies of an ``IndexTypeRow`` (k=10 and the service's k, default threads and one)."""
    return {
        "latency_k10_ms": _latency(search, queries, K, n_lat),
        "latency_k256_ms": _latency(search, queries, SERVICE_K, n_lat),
        "latency_k10_1t_ms": _latency(search, queries, K, n_lat, 1),
        "latency_k256_1t_ms": _latency(search, queries, SERVICE_K, n_lat, 1),
    }


def _measure_built(index: Any, queries: np.ndarray, truth: np.ndarray, n_lat: int) -> dict[str, Any]:
    """Recall and the four latencies of an ``IndexTypeRow``."""
    found = index.search(queries, K)[1]
    return {"recall_at_10": recall_at(found, truth), **_latencies(index.search, queries, n_lat)}


def _sweep_point(search: Any, queries: np.ndarray, truth: np.ndarray, n_lat: int) -> dict[str, float]:
    """A sweep's point: recall@10 and the one-thread p50 latency of ``search`` at its current setting."""
    found = search(queries, K)[1]
    return {"recall_at_10": recall_at(found, truth), "latency_ms": _latency(search, queries, K, n_lat, 1).p50}


def bench_index_types(
    ctx: Context,
    ids: np.ndarray,
    embs: np.ndarray,
    queries: np.ndarray,
    service_index: Any | None = None,
    service_build_s: float | None = None,
    service_build_rss: float | None = None,
) -> IndexTypes:
    """Flat, HNSW (service builds) and IVF (raw FAISS) on one set of vectors."""
    import faiss

    from app.core.vector_index import ClipIndex

    n = len(ids)
    n_lat = 100 if ctx.quick else 300
    truth = exact_truth(ids, embs, queries)
    per_million = 1e6 / n
    rows: list[IndexTypeRow] = []

    def built(kind: str) -> tuple[Any, float, float]:
        trim_memory()
        r0 = rss_mib()
        t0 = time.perf_counter()
        idx = ClipIndex.build(ids, embs, checkpoint_hash="bench", index_type=kind, dim=embs.shape[1])
        dt = time.perf_counter() - t0
        trim_memory()
        return idx, dt, rss_mib() - r0

    # -- exact
    flat, dt, mem = built("flat")
    row = IndexTypeRow(
        type="flat (exact, IndexFlatIP)",
        **_measure_built(flat, queries, truth, n_lat),
        build_s=dt,
        rss_mib=mem,
        mib_per_million=mem * per_million,
        file_bytes_per_vector=_file_bytes_per_vector(ctx, flat._index, n),
        params="",
    )
    rows.append(row)
    log(
        f"search {n:,}: flat p50 {fmt(row.latency_k10_ms.p50, 3)} ms (k=10), "
        f"{fmt(row.latency_k256_ms.p50, 3)} ms (k=256), build {dt:.1f} s, {mem:.0f} MiB"
    )
    del flat

    # -- HNSW, as the service builds it (M=32, efConstruction=80, efSearch tuned to 0.95 on stored vectors)
    hnsw_s: float | None
    hnsw_mem: float | None
    if service_index is not None and service_index.index_type == "hnsw":
        hnsw, hnsw_s, hnsw_mem = service_index, service_build_s, service_build_rss
    else:
        hnsw, hnsw_s, hnsw_mem = built("hnsw")
    p = hnsw.meta.params
    row = IndexTypeRow(
        type="HNSW (IndexHNSWFlat)",
        **_measure_built(hnsw, queries, truth, n_lat),
        build_s=hnsw_s,
        rss_mib=hnsw_mem,
        mib_per_million=(hnsw_mem or float("nan")) * per_million,
        file_bytes_per_vector=_file_bytes_per_vector(ctx, hnsw._index, n),
        params=f"M={p.get('M')}, efConstruction={p.get('efConstruction')}, tuned efSearch={p.get('efSearch')}",
        tuned_ef=p.get("efSearch"),
        self_recall_at_10=hnsw.meta.recall_at_10,
    )
    # The service asks for k=256, so its effective efSearch is max(tuned, 256).
    row.recall_at_10_service_k = recall_at(hnsw.search(queries, SERVICE_K)[1][:, :K], truth)
    ef_sweep = []
    tuned = p.get("efSearch")
    for ef in EF_SWEEP:
        p["efSearch"] = ef
        ef_sweep.append(EfPoint(ef=ef, **_sweep_point(hnsw.search, queries, truth, n_lat)))
    p["efSearch"] = tuned
    row.ef_sweep = ef_sweep
    rows.append(row)
    log(
        f"search {n:,}: HNSW recall@10 {row.recall_at_10:.3f} (ef {tuned}), "
        f"{row.recall_at_10_service_k:.3f} at k=256, p50 {fmt(row.latency_k10_ms.p50, 3)} ms, "
        f"build {fmt(hnsw_s)} s"
    )
    del hnsw

    # -- IVF-Flat (reference only: not offered by the service)
    nlist = min(IVF_MAX_NLIST, int(2 ** round(math.log2(4 * math.sqrt(n)))))
    train = embs[np.random.default_rng(0).choice(n, size=min(n, IVF_TRAIN_PER_LIST * nlist), replace=False)]
    trim_memory()
    r0 = rss_mib()
    t0 = time.perf_counter()
    quantizer = faiss.IndexFlatIP(embs.shape[1])
    ivf = faiss.IndexIVFFlat(quantizer, embs.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.train(train)
    ivf.add_with_ids(embs, ids)
    dt = time.perf_counter() - t0
    trim_memory()
    mem = rss_mib() - r0
    nprobe_sweep = []
    for nprobe in NPROBE_SWEEP:
        ivf.nprobe = nprobe
        nprobe_sweep.append(NprobePoint(nprobe=nprobe, **_sweep_point(ivf.search, queries, truth, n_lat)))
    pick = next((s for s in nprobe_sweep if s.recall_at_10 >= 0.95), nprobe_sweep[-1])
    ivf.nprobe = pick.nprobe
    row = IndexTypeRow(
        type="IVF-Flat (raw FAISS; not in the service)",
        recall_at_10=pick.recall_at_10,
        **_latencies(ivf.search, queries, n_lat),
        build_s=dt,
        rss_mib=mem,
        mib_per_million=mem * per_million,
        file_bytes_per_vector=_file_bytes_per_vector(ctx, ivf, n),
        params=f"nlist={nlist} (trained on {len(train):,}), nprobe={pick.nprobe} (smallest with recall@10 >= 0.95)",
        nprobe_sweep=nprobe_sweep,
    )
    rows.append(row)
    log(
        f"search {n:,}: IVF nlist {nlist} nprobe {pick.nprobe} recall {pick.recall_at_10:.3f}, "
        f"p50 {fmt(row.latency_k10_ms.p50, 3)} ms, build {dt:.1f} s"
    )
    del ivf, quantizer
    trim_memory()
    return IndexTypes(n=n, queries=len(queries), rows=rows)


def bench_live(ctx: Context, cat: Any, matcher: Any, queries: np.ndarray, n_results: int = 15) -> LiveSearch:
    """The service's search step (``Ranker.page``) in-process, on the catalogue folder."""
    from app.core.db import make_engine, make_session_factory
    from app.core.live_index import LiveIndex
    from app.core.settings import Settings
    from app.core.vector_index import IndexPolicy
    from app.services.ranking import Query, Ranker, SearchOptions

    settings = Settings()
    engine = make_engine(cat.database_url)
    trim_memory()
    r0 = rss_mib()
    t0 = time.perf_counter()
    live = LiveIndex(
        make_session_factory(engine),
        checkpoint_hash=matcher.checkpoint_hash,
        dim=matcher.dim,
        index_dir=cat.index_dir,
        policy=IndexPolicy.from_settings(settings),
    )
    source = live.load()
    load_s = time.perf_counter() - t0
    trim_memory()
    mem = rss_mib() - r0
    if source != "file":
        ctx.note(f"{cat.name}: LiveIndex rebuilt from the database instead of loading the index file")
    n_q = min(len(queries), 100 if ctx.quick else 300)
    k = settings.search_k
    ranker = Ranker(live, matcher, k)  # the service's ranking with the model called in this thread
    ranker.page(Query(queries[0]), SearchOptions(n=n_results, spare=0))  # warm
    cand = [len(live.candidates(q, n_results, k)) for q in queries[:n_q]]
    timings: dict[str, dict[str, Stats]] = {}
    for label, n_threads in (("default", None), ("1 thread", 1)):
        times, search_t = [], []
        with threads(n_threads):
            for q in queries[:n_q]:
                t0 = time.perf_counter()
                live.candidates(q, n_results, k)
                search_t.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                ranker.page(Query(q), SearchOptions(n=n_results, spare=0))
                times.append(time.perf_counter() - t0)
        timings[label] = {"recommend": stats_ms(times), "candidates": stats_ms(search_t)}
    engine.dispose()
    res = LiveSearch(
        catalogue=cat.name,
        n_clips=live.n_clips,
        index_type=live.index.base.index_type if live.index is not None and live.index.base is not None else None,
        load_s=load_s,
        rss_mib=mem,
        source=source,
        recommend_ms=timings["default"]["recommend"],
        candidates_ms=timings["default"]["candidates"],
        recommend_1t_ms=timings["1 thread"]["recommend"],
        candidates_1t_ms=timings["1 thread"]["candidates"],
        candidates_median=float(np.median(cand)),
        candidates_max=int(np.max(cand)),
        widened_share=float(np.mean(np.asarray(cand) > k)),
    )
    log(
        f"search step {cat.name}: Ranker.page p50 {fmt(res.recommend_ms.p50, 2)} ms "
        f"({fmt(timings['1 thread']['recommend'].p50, 2)} ms at 1 thread) "
        f"(FAISS+widening {fmt(res.candidates_ms.p50, 2)} ms, median {res.candidates_median:.0f} candidates, "
        f"{100 * res.widened_share:.0f}% widened), load {load_s:.1f} s, +{mem:.0f} MiB"
    )
    del live, ranker
    trim_memory()
    return res


def print_tables(types: list[IndexTypes], live: list[LiveSearch]) -> None:
    for t in types:
        print(f"\nSearch alone, {t.n:,} vectors x 128-d, batch 1, {t.queries} fresh queries")
        print(
            f"{'type':>42} {'recall@10':>9} {'p50 k10':>8} {'p99 k10':>8} {'p50 k256':>8} {'1thr k10':>8} "
            f"{'1thr k256':>9} {'build s':>8} {'MiB/1e6':>8} {'B/vec':>6}  params"
        )
        for r in t.rows:
            print(
                f"{r.type:>42} {r.recall_at_10:>9.3f} {fmt(r.latency_k10_ms.p50, 3):>8} "
                f"{fmt(r.latency_k10_ms.p99, 3):>8} {fmt(r.latency_k256_ms.p50, 3):>8} "
                f"{fmt(r.latency_k10_1t_ms.p50, 3):>8} {fmt(r.latency_k256_1t_ms.p50, 3):>9} "
                f"{fmt(r.build_s):>8} {fmt(r.mib_per_million, 0):>8} {r.file_bytes_per_vector:>6.0f}  "
                f"{r.params}"
            )
    if live:
        print("\nService search step in-process (Ranker.page: FAISS + widening + rerank), ms")
        for x in live:
            one = fmt(x.recommend_1t_ms.p50 if x.recommend_1t_ms else None, 2)
            print(
                f"{x.catalogue:>24} {x.index_type:>5} p50 {fmt(x.recommend_ms.p50, 2):>7} "
                f"p99 {fmt(x.recommend_ms.p99, 2):>7} 1-thread p50 {one:>7}  "
                f"candidates median {x.candidates_median:.0f}, "
                f"load {x.load_s:.1f} s, +{x.rss_mib:.0f} MiB"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    spec = SyntheticSpec()
    track_of, embs = synthetic_clips(args.clips, spec)
    ids = np.arange(1, len(embs) + 1, dtype=np.int64)
    queries = synthetic_queries(args.queries, spec)
    DEFAULT_WORKDIR.mkdir(parents=True, exist_ok=True)
    ctx = Context(Path("."), "", "n/a", DEFAULT_WORKDIR, quick=args.quick)
    print_tables([bench_index_types(ctx, ids, embs, queries)], [])


if __name__ == "__main__":
    main()
