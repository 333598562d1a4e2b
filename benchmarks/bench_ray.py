"""Indexing throughput: ``--engine ray`` vs the local engine on the same files (issue 15).

``.venv/bin/python -m benchmarks.bench_ray [--files 6]`` indexes the same real tracks (the
shortest Wesnoth tracks of at least 20 s, Ogg Vorbis) with the shipped model into two fresh
SQLite catalogues: ``python -m indexer FILES --workers 1`` (one decode process + embedding in
the main process: the local engine's 2-core setting) and ``python -m indexer FILES --engine ray
--ray-cpus 2`` (a local Ray: one decode task slot + one embedding actor + the writer). It
records each command's wall time, the run's own summary line and, for Ray, the pipeline's own
execution time (Ray Data's "execution finished in" line: Ray start-up and planning excluded),
into ``<workdir>/ray-bench.json``, then writes a marked section of ``docs/BENCHMARKS.md`` (rendered
by ``benchmarks.report``). Per-node scaling is an estimate from
the measured per-node rate, not a measurement on several nodes.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from benchmarks.common import (
    DEFAULT_DOC,
    DEFAULT_WORKDIR,
    WESNOTH_MUSIC,
    loadavg,
    log,
    run_indexer_command,
    save_json,
    utc_stamp,
    wesnoth_tracks,
)
from benchmarks.records import EngineRun, RayResults, load

RESULTS = "ray-bench.json"  # in the workdir


def pick_files(n: int, min_seconds: float = 20.0) -> list[Path]:
    """The ``n`` shortest tracks of at least ``min_seconds``."""
    import soundfile as sf

    files = sorted(wesnoth_tracks(), key=lambda f: sf.info(str(f)).duration)
    files = [f for f in files if sf.info(str(f)).duration >= min_seconds]
    if len(files) < n:
        raise SystemExit(f"need {n} tracks of at least {min_seconds:g} s in {WESNOTH_MUSIC}")
    return files[:n]


def run_engine(files: list[Path], directory: Path, extra: list[str]) -> EngineRun:
    cmd = run_indexer_command(files, directory, extra, env={"RAY_USAGE_STATS_ENABLED": "0"})
    return EngineRun(
        args=extra,
        command_wall_s=cmd.wall_s,
        run_wall_s=cmd.run_wall_s,
        clips_per_s=cmd.clips_per_s,
        xrt=cmd.xrt,
        clips=cmd.clips,
        audio_s=cmd.audio_s,
        ray_execution_s=cmd.ray_execution_s,
        failed=cmd.failed,
    )


def run(workdir: Path, n_files: int) -> RayResults:
    files = pick_files(n_files)
    started, load_start = utc_stamp(), loadavg()
    log(f"ray bench: {len(files)} files, local engine")
    local = run_engine(files, workdir / "ray-bench-local", ["--workers", "1"])
    log(f"ray bench: local {local.run_wall_s:.1f} s; now --engine ray")
    ray = run_engine(files, workdir / "ray-bench-ray", ["--engine", "ray", "--ray-cpus", "2"])
    log(f"ray bench: ray {ray.run_wall_s:.1f} s (execution {ray.ray_execution_s})")
    res = RayResults(
        started=started,
        load_start=load_start,
        files=[f.name for f in files],
        cores=os.cpu_count(),
        local=local,
        ray=ray,
        load_end=loadavg(),
    )
    save_json(workdir / RESULTS, res)
    return res


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_ray", description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=6)
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--out", type=Path, default=DEFAULT_DOC)
    parser.add_argument("--render-only", action="store_true", help="re-write the section from <workdir>/ray-bench.json")
    args = parser.parse_args(argv)
    res = load(RayResults, args.workdir / RESULTS) if args.render_only else run(args.workdir, args.files)
    from benchmarks import report

    report.update_marked_section(args.out, report.ray_section(res))
    log(f"wrote the Ray section of {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
