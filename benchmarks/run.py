"""Run every benchmark and write docs/BENCHMARKS.md: ``.venv/bin/python -m benchmarks.run``.

Sections (in order): model forward per backbone; the floor (decode + image branch); the
indexer on real music (which also leaves a ~10^3-clip real-audio catalogue); synthetic
catalogues of 10^4, 10^5 and 10^6 clips (DB + FAISS file) with search-alone figures; then
`/recommend` end to end on a real server for every catalogue, micro-batching on and off.

``--quick`` is a smoke run (3 tracks, a 10^4 catalogue, 2 s per cell, fewer backbones). The
full run takes about 20-25 minutes on a 2-core machine. Scratch data lives in ``--workdir``
(default var/benchmarks, git-ignored) and the raw figures in ``<workdir>/results.json``.
A section that fails stops the run (exit status 1, naming the section); nothing is written.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from benchmarks import bench_floor, bench_indexer, bench_model, bench_recommend, bench_runtime, bench_search, report
from benchmarks.catalogue import Catalogue
from benchmarks.common import (
    DEFAULT_DOC,
    DEFAULT_WORKDIR,
    ROOT,
    Context,
    SyntheticSpec,
    loadavg,
    log,
    machine_info,
    photo_jpegs,
    save_json,
    synthetic_queries,
    trim_memory,
    versions,
)
from benchmarks.records import (
    CheckpointInfo,
    IvfpqResults,
    RayResults,
    RecommendResults,
    RunRecord,
    SearchResults,
    SectionTiming,
    load,
)

SECTIONS = ("model", "floor", "indexer", "search", "recommend")
OPT_IN = ("scale",)  # issue 15: IVF-PQ at 10^6 and 10^7 clips, Ray vs local indexing (tens of minutes)
T = TypeVar("T")


class SectionFailed(RuntimeError):
    """A benchmark section raised: the run stops, naming the section."""


def _section(sections: dict[str, SectionTiming], name: str, fn: Callable[[], T]) -> T:
    """Run one section, recording its time and load; its failure ends the run."""
    load0 = loadavg()
    t0 = time.perf_counter()
    log(f"=== {name} (load average {load0[0]:.2f})")
    try:
        return fn()
    except Exception as exc:
        raise SectionFailed(f"benchmark section '{name}' failed: {type(exc).__name__}: {exc}") from exc
    finally:
        sections[name] = SectionTiming(seconds=time.perf_counter() - t0, load_start=load0, load_end=loadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: small catalogues, 2 s per cell")
    parser.add_argument("--checkpoint", help="checkpoint to time (default: the shipped model, else a stand-in)")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--out", type=Path, default=DEFAULT_DOC)
    parser.add_argument("--cell-seconds", type=float, help="measured seconds per /recommend cell (default 10, quick 2)")
    parser.add_argument(
        "--only", nargs="+", choices=SECTIONS + OPT_IN, help="run only these sections ('scale' only when named)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the catalogues in the workdir afterwards")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    ctx = Context.for_checkpoint(
        args.checkpoint, args.workdir, quick=args.quick, cell_seconds=args.cell_seconds or (2.0 if args.quick else 10.0)
    )
    ckpt, kind = ctx.checkpoint, ctx.checkpoint_kind
    from model.checkpoint import read_meta

    wanted = set(args.only or SECTIONS)
    argv_shown = " ".join(sys.argv[1:] if argv is None else argv)
    sections: dict[str, SectionTiming] = {}
    checkpoint = CheckpointInfo(
        path=str(ckpt.relative_to(ROOT) if ckpt.is_relative_to(ROOT) else ckpt),
        kind=kind,
        sha256=ctx.checkpoint_hash,
        config=read_meta(ckpt).config.to_dict(),
    )
    machine, library_versions, settings = machine_info(), versions(), _service_settings()
    log(f"checkpoint: {checkpoint.path} ({kind}); workdir {args.workdir}")

    model = floor = indexer = search = recommend = None
    if "model" in wanted:
        model = _section(sections, "model", lambda: bench_model.run(ctx))
        bench_model.print_table(model)
    if "floor" in wanted:
        floor = _section(sections, "floor", lambda: bench_floor.run(ctx))
        bench_floor.print_table(floor)

    catalogues: list[Catalogue] = []
    real_dir = args.workdir / "catalogue-real"
    if "indexer" in wanted:
        indexer, real_cat = _section(sections, "indexer", lambda: bench_indexer.run(ctx))
        bench_indexer.print_tables(indexer)
        catalogues.append(real_cat)
    elif "recommend" in wanted and (real_dir / "photoscore.db").is_file():
        from benchmarks.catalogue import open_existing

        real_cat = open_existing(real_dir, "real", "real audio")
        real_cat.name = f"{real_cat.n_clips:,} real-audio"
        catalogues.append(real_cat)

    if "search" in wanted or "recommend" in wanted:
        search, synthetic = _section(
            sections, "search", lambda: _catalogues_and_search(ctx, catalogues, "search" in wanted)
        )
        catalogues.extend(synthetic)

    if "recommend" in wanted and catalogues:
        recommend = _section(sections, "recommend", lambda: _recommend(ctx, catalogues))

    from benchmarks import bench_ivfpq, bench_ray

    ivfpq: IvfpqResults | None = None
    ray_bench: RayResults | None = None
    if "scale" in wanted:
        sizes = [100_000] if ctx.quick else [1_000_000, 10_000_000]
        ivfpq = _section(sections, "scale-ivfpq", lambda: bench_ivfpq.run(args.workdir, sizes))
        ray_bench = _section(sections, "scale-ray", lambda: bench_ray.run(args.workdir, 6))
    else:  # keep the last scale figures in the document (they are not re-measured by default)
        if (args.workdir / bench_ivfpq.RESULTS).is_file():
            ivfpq = load(IvfpqResults, args.workdir / bench_ivfpq.RESULTS)
        if (args.workdir / bench_ray.RESULTS).is_file():
            ray_bench = load(RayResults, args.workdir / bench_ray.RESULTS)

    results = RunRecord(
        command=f".venv/bin/python -m benchmarks.run {argv_shown}".strip(),
        quick=args.quick,
        machine=machine,
        versions=library_versions,
        checkpoint=checkpoint,
        nice=os.nice(0),
        settings=settings,
        sections=sections,
        cell_seconds=ctx.cell_seconds,
        model=model,
        floor=floor,
        indexer=indexer,
        search=search,
        recommend=recommend,
        ivfpq=ivfpq,
        ray_bench=ray_bench,
        notes=ctx.notes,
        total_seconds=time.perf_counter() - started,
        load_end=loadavg(),
    )
    save_json(args.workdir / "results.json", results)  # first: a report that fails can be re-rendered
    text = report.render(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    kept = report.marked_section(args.out, bench_runtime.BEGIN, bench_runtime.END)  # its own script's
    args.out.write_text(text)
    if kept:
        report.update_marked_section(args.out, kept)
    log(f"wrote {args.out} and {args.workdir / 'results.json'} in {results.total_seconds / 60:.1f} min")
    if not args.keep:
        for cat in catalogues:
            if cat.kind == "synthetic":
                shutil.rmtree(cat.directory, ignore_errors=True)
    return 0


def _service_settings() -> dict[str, Any]:
    """The service defaults the figures were taken with."""
    from app.core.settings import Settings

    st = Settings()
    keys = ("search_k", "batch_max_size", "batch_max_wait_ms", "micro_batching", "exact_index_threshold", "workers")
    return {k: getattr(st, k) for k in keys}


def _catalogues_and_search(ctx: Context, real: list[Catalogue], measure: bool) -> tuple[SearchResults, list[Catalogue]]:
    """Write the synthetic catalogues; on each, search-alone figures and the service's search step."""
    from benchmarks.catalogue import write_synthetic
    from model.inference import Matcher

    spec = SyntheticSpec()
    sizes = [10_000] if ctx.quick else [10_000, 100_000, 1_000_000]
    type_sizes = {10_000} if ctx.quick else {100_000, 1_000_000}
    queries = synthetic_queries(100 if ctx.quick else 300, spec)
    matcher = Matcher.load(ctx.checkpoint, "cpu")
    matcher.warmup()
    out = SearchResults(spec=spec.describe(), types=[], live=[], catalogues=[])
    made = []
    for cat in real:
        if measure:
            jpegs, _ = photo_jpegs(640, 480, 64)
            from model.image import open_image

            embs, _ = matcher.embed_images([open_image(j) for j in jpegs])
            out.live.append(bench_search.bench_live(ctx, cat, matcher, embs))
    from app.core.settings import Settings

    threshold = Settings().exact_index_threshold
    for n in sizes:
        directory = ctx.workdir / f"catalogue-{n}"
        cat, ids, embs, index = write_synthetic(
            directory, n, checkpoint_hash=ctx.checkpoint_hash, exact_threshold=threshold, spec=spec
        )
        built = cat.record()
        out.catalogues.append(built)
        if measure and n in type_sizes:
            out.types.append(
                bench_search.bench_index_types(
                    ctx,
                    ids,
                    embs,
                    queries,
                    service_index=index,
                    service_build_s=built.index_build_s,
                    service_build_rss=built.index_build_rss_delta_mib,
                )
            )
        del ids, embs, index
        trim_memory()
        if measure:
            out.live.append(bench_search.bench_live(ctx, cat, matcher, queries))
        made.append(cat)
    bench_search.print_tables(out.types, out.live)
    return out, made


def _recommend(ctx: Context, catalogues: list[Catalogue]) -> RecommendResults:
    concurrencies = [1, 8, 32]
    runs = []
    for cat in catalogues:
        runs.append(bench_recommend.bench_catalogue(ctx, cat, concurrencies))
    # What one OpenMP thread per process does for the target sizes (see the model/search figures).
    targets = [c for c in catalogues if c.kind == "synthetic" and c.n_clips >= (10_000 if ctx.quick else 100_000)]
    for cat in targets:
        runs.append(
            bench_recommend.bench_catalogue(
                ctx, cat, concurrencies, extra_env={"OMP_NUM_THREADS": "1"}, variant="OMP_NUM_THREADS=1"
            )
        )
    bench_recommend.print_table(runs)
    return RecommendResults(runs=runs, concurrencies=concurrencies)


if __name__ == "__main__":
    sys.exit(main())
