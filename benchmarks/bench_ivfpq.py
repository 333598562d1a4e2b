"""IVF-PQ with exact re-scoring at 10^6 and 10^7 synthetic clips, beside exact and HNSW (issue 15).

``.venv/bin/python -m benchmarks.bench_ivfpq [--sizes 1000000 10000000]`` writes
``<workdir>/ivfpq.json`` and the marked IVF-PQ section of ``docs/BENCHMARKS.md`` (rendered by
``benchmarks.report``); ``python -m
benchmarks.run --only scale`` runs it as part of the suite. Not part of CI (the 10^7 run
takes tens of minutes and 10 GB of disk).

Per size: synthetic embeddings (``SyntheticSpec``, as in the search section) are written to a
disk-backed memmap in chunks; exact top-10 ground truth for fresh queries is computed in
chunks; ``ClipIndex.build(index_type="ivfpq")`` trains, adds, tunes ``nprobe`` and is saved;
at ``--compare-at`` clips (default 10^6) exact and HNSW indexes are built from the same embeddings;
for each, a fresh process loads the saved index and measures its resident memory (anonymous RSS,
i.e. not the memory-mapped vector store, and the page cache it touched separately) and the
search latency and recall of ``ClipIndex.search`` at k=10 and at the service's K=256.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import (
    DEFAULT_DOC,
    DEFAULT_WORKDIR,
    ROOT,
    SERVICE_K,
    SyntheticSpec,
    loadavg,
    log,
    machine_info,
    recall_at,
    save_json,
    synthetic_clips,
    synthetic_queries,
    utc_stamp,
)
from benchmarks.records import IvfpqMeasure, IvfpqResults, IvfpqRun, IvfpqSearch, from_json, load, to_plain

RESULTS = "ivfpq.json"  # in the workdir
TYPE_ORDER = ("flat", "hnsw", "ivfpq")


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def ground_truth(embs: np.ndarray, queries: np.ndarray, k: int = 10, chunk: int = 1 << 20) -> np.ndarray:
    """Exact top-k row positions by inner product, chunk by chunk over a memmap."""
    import faiss

    best_s = np.full((len(queries), 0), -np.inf, np.float32)
    best_i = np.full((len(queries), 0), -1, np.int64)
    for lo in range(0, len(embs), chunk):
        block = np.ascontiguousarray(embs[lo : lo + chunk])
        s, i = faiss.knn(queries, block, k, metric=faiss.METRIC_INNER_PRODUCT)
        s, i = np.concatenate([best_s, s], 1), np.concatenate([best_i, i + lo], 1)
        top = np.argsort(-s, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(s, top, 1), np.take_along_axis(i, top, 1)
    return best_i


def build_one(
    n: int,
    workdir: Path,
    spec: SyntheticSpec,
    n_queries: int,
    build_args: dict[str, Any] | None = None,
    index_types: tuple[str, ...] = ("ivfpq",),
) -> list[IvfpqRun]:
    """One size: the same embeddings, queries and ground truth for each of ``index_types``."""
    from app.core.vector_index import ClipIndex, IndexPolicy

    folder = workdir / f"ivfpq-{n}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    t = time.perf_counter()
    embs = np.lib.format.open_memmap(folder / "embeddings.npy", mode="w+", dtype=np.float32, shape=(n, spec.dim))
    synthetic_clips(n, spec, out=embs)
    embs.flush()
    gen_s = time.perf_counter() - t
    queries = synthetic_queries(n_queries, spec)
    t = time.perf_counter()
    truth = ground_truth(embs, queries) + 1  # clip ids are row + 1
    truth_s = time.perf_counter() - t
    np.save(folder / "queries.npy", queries)
    np.save(folder / "truth.npy", truth)
    log(f"ivfpq {n:,}: generated in {gen_s:.0f} s, ground truth in {truth_s:.0f} s")
    ids = np.arange(1, n + 1, dtype=np.int64)
    runs = []
    for index_type in index_types:
        args = (build_args or {}) if index_type == "ivfpq" else {}
        anon0 = _status_kib("RssAnon")
        t = time.perf_counter()
        index = ClipIndex.build(
            ids, embs, checkpoint_hash="bench", index_type=index_type, **args, policy=IndexPolicy(search_k=SERVICE_K)
        )
        build_s = time.perf_counter() - t
        anon_build = _status_kib("RssAnon") - anon0
        t = time.perf_counter()
        shutil.rmtree(folder / "index", ignore_errors=True)
        index.save(folder / "index")
        save_s = time.perf_counter() - t
        meta = index.meta
        mib = anon_build / 1024
        log(f"{index_type} {n:,}: built in {build_s:.0f} s (+{mib:.0f} MiB anon), saved in {save_s:.0f} s")
        del index
        measured = from_json(
            IvfpqMeasure,
            json.loads(
                subprocess.run(
                    [sys.executable, "-m", "benchmarks.bench_ivfpq", "--measure", str(folder)],
                    cwd=ROOT,
                    check=True,
                    capture_output=True,
                    text=True,
                )
                .stdout.strip()
                .splitlines()[-1]
            ),
        )
        files = {p.name: p.stat().st_size for p in (folder / "index").iterdir()}
        faiss_bytes = files[meta.file]
        store = files[meta.vectors_file] + files[meta.vector_ids_file] if meta.vectors_file else 0
        runs.append(
            IvfpqRun(
                n_clips=n,
                index_type=index_type,
                params=meta.params,
                build_args=args,
                build_recall_at_10=meta.recall_at_10,
                generate_s=gen_s,
                ground_truth_s=truth_s,
                build_s=build_s,
                build_anon_mib=anon_build / 1024,
                save_s=save_s,
                faiss_file_bytes=faiss_bytes,
                faiss_bytes_per_clip=faiss_bytes / n,
                vector_store_bytes=store,
                **{f.name: getattr(measured, f.name) for f in dataclasses.fields(measured)},
            )
        )
    return runs


def measure(folder: Path) -> IvfpqMeasure:
    """In a fresh process: load, then memory, latency and recall as the service would search."""
    import faiss

    from app.core.vector_index import ClipIndex

    queries = np.load(folder / "queries.npy")
    truth = np.load(folder / "truth.npy")
    anon0, file0 = _status_kib("RssAnon"), _status_kib("RssFile")
    t = time.perf_counter()
    index = ClipIndex.load(folder / "index", expected_checkpoint_hash="bench")
    load_s = time.perf_counter() - t
    anon_load = _status_kib("RssAnon") - anon0
    searches: dict[str, IvfpqSearch] = {}
    for threads in (0, 1):
        if threads:
            faiss.omp_set_num_threads(threads)
        for k in (10, SERVICE_K):
            index.search(queries[:5], k)  # warm the memory map's pages for these lists
            times, found = [], []
            for q in queries:
                t = time.perf_counter()
                _, ids = index.search(q, k)
                times.append(time.perf_counter() - t)
                found.append(ids[0, :10])
            ms = np.asarray(times) * 1000
            searches[f"k{k}_{'1thr' if threads else 'default'}"] = IvfpqSearch(
                p50_ms=float(np.percentile(ms, 50)),
                p99_ms=float(np.percentile(ms, 99)),
                recall_at_10=recall_at(np.asarray(found), truth),
            )
    return IvfpqMeasure(
        load_s=load_s,
        rss_anon_mib=anon_load / 1024,
        rss_anon_bytes_per_clip=anon_load * 1024 / index.count,
        k10_default=searches["k10_default"],
        k256_default=searches[f"k{SERVICE_K}_default"],
        k10_1thr=searches["k10_1thr"],
        k256_1thr=searches[f"k{SERVICE_K}_1thr"],
        rss_file_touched_mib=(_status_kib("RssFile") - file0) / 1024,
    )


def run(
    workdir: Path,
    sizes: list[int],
    n_queries: int = 300,
    build_args: dict[str, Any] | None = None,
    keep_earlier: bool = False,
    compare_at: int | None = 1_000_000,
) -> IvfpqResults:
    """Measure each size; at ``compare_at`` clips exact and HNSW too, on the same embeddings and
    queries. ``keep_earlier`` keeps the other sizes' runs already in ivfpq.json."""
    spec = SyntheticSpec()
    earlier = []
    if keep_earlier and (workdir / RESULTS).is_file():
        earlier = [r for r in load(IvfpqResults, workdir / RESULTS).runs if r.n_clips not in sizes]
    results = IvfpqResults(
        spec=spec.describe(), machine=machine_info(), load_start=loadavg(), started=utc_stamp(), runs=earlier
    )
    for n in sizes:
        types = ("flat", "hnsw", "ivfpq") if n == compare_at else ("ivfpq",)
        results.runs.extend(build_one(n, workdir, spec, n_queries, build_args, types))
        results.runs.sort(key=lambda r: (r.n_clips, TYPE_ORDER.index(r.index_type)))
        save_json(workdir / RESULTS, results)
        shutil.rmtree(workdir / f"ivfpq-{n}", ignore_errors=True)
    results.load_end = loadavg()
    save_json(workdir / RESULTS, results)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_ivfpq", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--out", type=Path, default=DEFAULT_DOC)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--nlist", type=int, help="inverted lists (default: about sqrt(clips))")
    parser.add_argument("--recall-sample", type=int, help="stored vectors sampled to tune nprobe (default 200)")
    parser.add_argument(
        "--compare-at", type=int, default=1_000_000, help="the size at which exact and HNSW are measured too (0: none)"
    )
    parser.add_argument("--keep-earlier", action="store_true", help="keep other sizes' runs from ivfpq.json")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # internal: the fresh process
    parser.add_argument("--render-only", action="store_true", help="re-write the section from <workdir>/ivfpq.json")
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(to_plain(measure(args.measure))))
        return 0
    if args.render_only:
        res = load(IvfpqResults, args.workdir / RESULTS)
    else:
        build_args = {
            k: v for k, v in {"nlist": args.nlist, "recall_sample": args.recall_sample}.items() if v is not None
        }
        res = run(args.workdir, args.sizes, args.queries, build_args, args.keep_earlier, args.compare_at or None)
    from benchmarks import report

    report.update_marked_section(args.out, report.ivfpq_section(res))
    log(f"wrote the IVF-PQ section of {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
