"""Run every benchmark and write docs/BENCHMARKS.md: ``.venv/bin/python -m benchmarks.run``.

Sections (in order): model forward per backbone; the floor (decode + image branch); the
indexer on real music (which also leaves a ~10^3-clip real-audio catalogue); synthetic
catalogues of 10^4, 10^5 and 10^6 clips (DB + FAISS file) with search-alone figures; then
`/recommend` end to end on a real server for every catalogue, micro-batching on and off.

``--quick`` is a smoke run (3 tracks, a 10^4 catalogue, 2 s per cell, fewer backbones). The
full run takes about 20-25 minutes on a 2-core machine. Scratch data lives in ``--workdir``
(default var/benchmarks, git-ignored) and the raw figures in ``<workdir>/results.json``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import bench_floor, bench_indexer, bench_model, bench_recommend, bench_search, report
from benchmarks.common import (
    ROOT,
    Context,
    SyntheticSpec,
    loadavg,
    log,
    machine_info,
    photo_jpegs,
    resolve_checkpoint,
    save_json,
    synthetic_queries,
    trim_memory,
    versions,
)

SECTIONS = ("model", "floor", "indexer", "search", "recommend")
OPT_IN = ("scale",)  # issue 15: IVF-PQ at 10^6 and 10^7 clips, Ray vs local indexing (tens of minutes)


def _section(results: dict[str, Any], ctx: Context, name: str, fn: Callable[[], Any]) -> Any:
    """Run one section, recording its time and load; a failure is reported, not fatal."""
    load0 = loadavg()
    t0 = time.perf_counter()
    log(f"=== {name} (load average {load0[0]:.2f})")
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - one broken section must not lose the others
        ctx.note(f"section '{name}' failed: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}")
        traceback.print_exc()
        return None
    finally:
        results["sections"][name] = {
            "seconds": time.perf_counter() - t0,
            "load_start": load0,
            "load_end": loadavg(),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: small catalogues, 2 s per cell")
    parser.add_argument("--checkpoint", help="checkpoint to time (default: the shipped model, else a stand-in)")
    parser.add_argument("--workdir", type=Path, default=ROOT / "var" / "benchmarks")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "BENCHMARKS.md")
    parser.add_argument("--cell-seconds", type=float, help="measured seconds per /recommend cell (default 10, quick 2)")
    parser.add_argument(
        "--only", nargs="+", choices=SECTIONS + OPT_IN, help="run only these sections ('scale' only when named)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the catalogues in the workdir afterwards")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    args.workdir.mkdir(parents=True, exist_ok=True)
    ckpt, kind = resolve_checkpoint(args.checkpoint, args.workdir)
    from model.checkpoint import file_sha256, read_meta

    ctx = Context(
        checkpoint=ckpt,
        checkpoint_hash=file_sha256(ckpt),
        checkpoint_kind=kind,
        workdir=args.workdir,
        quick=args.quick,
        cell_seconds=args.cell_seconds or (2.0 if args.quick else 10.0),
    )
    wanted = set(args.only or SECTIONS)
    argv_shown = " ".join(sys.argv[1:] if argv is None else argv)
    results: dict[str, Any] = {
        "command": f".venv/bin/python -m benchmarks.run {argv_shown}".strip(),
        "quick": args.quick,
        "machine": machine_info(),
        "versions": versions(),
        "checkpoint": {
            "path": str(ckpt.relative_to(ROOT) if ckpt.is_relative_to(ROOT) else ckpt),
            "kind": kind,
            "sha256": ctx.checkpoint_hash,
            "config": read_meta(ckpt).config.to_dict(),
        },
        "nice": os.nice(0),
        "settings": _service_settings(),
        "sections": {},
        "cell_seconds": ctx.cell_seconds,
    }
    log(f"checkpoint: {results['checkpoint']['path']} ({kind}); workdir {args.workdir}")

    if "model" in wanted:
        results["model"] = _section(results, ctx, "model", lambda: bench_model.run(ctx))
        if results["model"]:
            bench_model.print_table(results["model"])
    if "floor" in wanted:
        results["floor"] = _section(results, ctx, "floor", lambda: bench_floor.run(ctx))
        if results["floor"]:
            bench_floor.print_table(results["floor"])

    catalogues: list[Any] = []
    real_dir = args.workdir / "catalogue-real"
    if "indexer" in wanted:
        out = _section(results, ctx, "indexer", lambda: bench_indexer.run(ctx))
        if out is not None:
            results["indexer"], real_cat = out
            bench_indexer.print_tables(results["indexer"])
            catalogues.append(real_cat)
    elif "recommend" in wanted and (real_dir / "photoscore.db").is_file():
        from benchmarks.catalogue import open_existing

        real_cat = open_existing(real_dir, "real", "real audio")
        real_cat.name = f"{real_cat.n_clips:,} real-audio"
        catalogues.append(real_cat)

    if "search" in wanted or "recommend" in wanted:
        out = _section(results, ctx, "search", lambda: _catalogues_and_search(ctx, catalogues, "search" in wanted))
        if out is not None:
            results["search"], synthetic = out
            catalogues.extend(synthetic)

    if "recommend" in wanted and catalogues:
        results["recommend"] = _section(results, ctx, "recommend", lambda: _recommend(ctx, catalogues))

    from benchmarks import bench_ivfpq, bench_ray

    if "scale" in wanted:
        sizes = [100_000] if ctx.quick else [1_000_000, 10_000_000]
        results["ivfpq"] = _section(results, ctx, "scale-ivfpq", lambda: bench_ivfpq.run(args.workdir, sizes))
        results["ray_bench"] = _section(results, ctx, "scale-ray", lambda: bench_ray.run(args.workdir, 6))
    else:  # keep the last scale figures in the document (they are not re-measured by default)
        import json

        for key, name in (("ivfpq", "ivfpq.json"), ("ray_bench", "ray-bench.json")):
            if (args.workdir / name).is_file():
                results[key] = json.loads((args.workdir / name).read_text())

    results["notes"] = ctx.notes
    results["total_seconds"] = time.perf_counter() - started
    results["load_end"] = loadavg()
    save_json(args.workdir / "results.json", results)
    text = report.render(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    log(f"wrote {args.out} and {args.workdir / 'results.json'} in {results['total_seconds'] / 60:.1f} min")
    if not args.keep:
        for cat in catalogues:
            if cat.kind == "synthetic":
                shutil.rmtree(cat.directory, ignore_errors=True)
    return 0


def _service_settings() -> dict[str, Any]:
    """The service defaults the figures were taken with."""
    from app.settings import Settings

    st = Settings()
    keys = ("search_k", "batch_max_size", "batch_max_wait_ms", "micro_batching", "exact_index_threshold", "workers")
    return {k: getattr(st, k) for k in keys}


def _catalogues_and_search(ctx: Context, real: list[Any], measure: bool) -> tuple[dict[str, Any], list[Any]]:
    """Write the synthetic catalogues; on each, search-alone figures and the service's search step."""
    from benchmarks.catalogue import write_synthetic
    from model.inference import Matcher

    spec = SyntheticSpec()
    sizes = [10_000] if ctx.quick else [10_000, 100_000, 1_000_000]
    type_sizes = {10_000} if ctx.quick else {100_000, 1_000_000}
    queries = synthetic_queries(100 if ctx.quick else 300, spec)
    matcher = Matcher.load(ctx.checkpoint, "cpu")
    matcher.warmup()
    out: dict[str, Any] = {"spec": spec.describe(), "types": [], "live": [], "catalogues": []}
    made = []
    for cat in real:
        if measure:
            jpegs, _ = photo_jpegs(640, 480, 64)
            from model.image import open_image

            embs, _ = matcher.embed_images([open_image(j) for j in jpegs])
            out["live"].append(bench_search.bench_live(ctx, cat, matcher, embs))
    from app.settings import Settings

    threshold = Settings().exact_index_threshold
    for n in sizes:
        directory = ctx.workdir / f"catalogue-{n}"
        cat, ids, embs, index = write_synthetic(
            directory, n, checkpoint_hash=ctx.checkpoint_hash, exact_threshold=threshold, spec=spec
        )
        out["catalogues"].append({"name": cat.name, "n_clips": n, "n_tracks": cat.n_tracks, **cat.info})
        if measure and n in type_sizes:
            out["types"].append(
                bench_search.bench_index_types(
                    ctx,
                    ids,
                    embs,
                    queries,
                    service_index=index,
                    service_build_s=cat.info["index_build_s"],
                    service_build_rss=cat.info["index_build_rss_delta_mib"],
                )
            )
        del ids, embs, index
        trim_memory()
        if measure:
            out["live"].append(bench_search.bench_live(ctx, cat, matcher, queries))
        made.append(cat)
    bench_search.print_tables(out["types"], out["live"])
    return out, made


def _recommend(ctx: Context, catalogues: list[Any]) -> dict[str, Any]:
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
    return {"runs": runs, "concurrencies": concurrencies}


if __name__ == "__main__":
    sys.exit(main())
