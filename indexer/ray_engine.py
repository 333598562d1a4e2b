"""``photoscore index --engine ray``: the indexing run on Ray Data, for libraries beyond one box.

The same steps as the local engine (``indexer.pipeline``), with Ray doing the scheduling:

1. the driver lists and hashes the files and drops those already indexed (``pipeline._plan``);
2. ``map_batches`` tasks on CPU workers decode, cut and featurise one file each
   (``indexer.worker.prepare``; a task that dies is retried by Ray);
3. an actor pool embeds (one model per actor; one GPU per actor when the cluster has GPUs);
4. a writer actor stores each track whole with ``pipeline._commit`` (one transaction per track;
   the content hash is unique, so a retried write finds the track instead of duplicating it);
5. back in the CLI, the FAISS index is brought in line with the database (``indexer.build``).

Every node must see the audio files at the same paths and reach the database (PostgreSQL for
a cluster) and the checkpoint. Progress is Ray Data's own progress reporting.
"""

from __future__ import annotations

import logging
import os
import pickle
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from app.core.errors import first_line
from indexer.pipeline import Outcome, RunOptions, RunSummary, _commit, _Job, _plan, track_stats
from indexer.scan import LicenseFinder, Rejected, SourceFile
from indexer.worker import Failed, Prepared, prepare

log = logging.getLogger(__name__)

# Fault injection for the tests (never set in production): the first decode task to see this
# variable creates the named marker file and kills its own worker process; Ray retries the task.
CRASH_ONCE_ENV = "PHOTOSCORE_TEST_RAY_CRASH_ONCE"
LOCAL_OBJECT_STORE_MB = 200
DECODE_RETRIES = 3
MAX_BLOCKS = 50_000  # one file per Ray task up to here; beyond, files share tasks (Ray's per-block overhead)


class RayIndexError(RuntimeError):
    """Ray could not run the pipeline (cluster unreachable, tasks failing beyond their retries)."""


@dataclass
class RayOptions:
    address: str | None = None  # None: start a local Ray on this machine
    num_cpus: int | None = None  # local Ray only (default: all cores)
    object_store_mb: int = LOCAL_OBJECT_STORE_MB  # local Ray only
    embed_actors: int | None = None  # default: one per GPU, else one per 4 CPUs (at least 1)


def index_files_ray(
    sources: list[SourceFile],
    rejected: list[Rejected],
    *,
    session_factory: Callable[[], Session],
    database_url: str,
    checkpoint: Path,
    checkpoint_hash: str,
    device: str,
    options: RunOptions,
    ray_options: RayOptions,
) -> RunSummary:
    """Index ``sources`` into the catalogue on Ray (not the FAISS file: see ``indexer.build``)."""
    summary = RunSummary(failed=[Outcome(r.path, r.reason) for r in rejected])
    t0 = time.perf_counter()
    jobs = _plan(sources, summary, session_factory, checkpoint_hash, options.reembed)
    if jobs:
        _run(jobs, summary, database_url, checkpoint, checkpoint_hash, device, options, ray_options)
    summary.wall_seconds = time.perf_counter() - t0
    return summary


def _run(
    jobs: list[_Job],
    summary: RunSummary,
    database_url: str,
    checkpoint: Path,
    checkpoint_hash: str,
    device: str,
    options: RunOptions,
    ray_options: RayOptions,
) -> None:
    import ray
    from ray.data import ActorPoolStrategy, DataContext

    started = _init_ray(ray_options)
    ctx = DataContext.get_current()
    saved = (ctx.enable_progress_bars, ctx.max_errored_blocks)
    try:
        ctx.enable_progress_bars = options.progress is not False
        # A file whose decoding keeps killing its worker costs that file (reported below), not the run.
        ctx.max_errored_blocks = len(jobs)
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        cpus = int(resources.get("CPU", 1))
        actors = ray_options.embed_actors or (gpus if gpus else max(1, cpus // 4))
        embed_resources: dict[str, Any] = {"num_gpus": 1} if gpus else {"num_cpus": 1}
        # Model options travel as plain values; audio store and licence text are rebuilt per actor.
        writer_options = replace(options, audio_store=None, progress=False)
        audio_dir = str(options.audio_store.root) if options.audio_store is not None else None
        rows = [_row(job) for job in jobs]
        ds: ray.data.Dataset = ray.data.from_items(rows, override_num_blocks=min(len(rows), MAX_BLOCKS))
        with warnings.catch_warnings():
            # Ray Data (2.60) has no named parameter for task retries yet; its default is infinite,
            # which would retry a decoder that crashes its worker for ever.
            warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
            ds = ds.map_batches(
                _decode_batch,  # type: ignore[arg-type]  # Ray's stubs do not know fn_kwargs
                fn_kwargs={"options": writer_options},
                batch_size=1,
                num_cpus=1,
                max_retries=DECODE_RETRIES,
            )
        ds = ds.map_batches(
            _EmbedActor,
            fn_constructor_kwargs={"checkpoint": str(checkpoint), "device": "cuda" if gpus else device},
            batch_size=1,
            compute=ActorPoolStrategy(size=actors),
            **embed_resources,
        )
        ds = ds.map_batches(
            _WriteActor,
            fn_constructor_kwargs={
                "database_url": database_url,
                "checkpoint_hash": checkpoint_hash,
                "options": writer_options,
                "audio_dir": audio_dir,
            },
            batch_size=1,
            compute=ActorPoolStrategy(size=1),
            num_cpus=0,
        )
        seen: set[int] = set()
        by_id = {job.id: job for job in jobs}
        try:
            for row in ds.iter_rows():
                seen.add(int(row["job"]))
                _tally(summary, by_id[int(row["job"])], row)
        except KeyboardInterrupt:
            summary.interrupted = True
            raise
        except Exception as exc:  # ray.exceptions.RayError and Ray Data's wrappers
            raise RayIndexError(first_line(exc)) from exc
        for job in jobs:
            if job.id not in seen:
                summary.failed.append(
                    Outcome(
                        job.source.path,
                        f"its Ray task failed {DECODE_RETRIES + 1} times (a crashing decoder?); see the Ray logs",
                    )
                )
    finally:
        ctx.enable_progress_bars, ctx.max_errored_blocks = saved
        if started:
            ray.shutdown()


def _init_ray(ray_options: RayOptions) -> bool:
    """Join the cluster at ``address``, or start a local Ray; True when this call started it."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # never phone home
    os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
    if ray.is_initialized():
        return False
    try:
        if ray_options.address:
            ray.init(address=ray_options.address, logging_level=logging.WARNING, log_to_driver=True)
        else:
            ray.init(
                num_cpus=ray_options.num_cpus or os.cpu_count() or 1,
                object_store_memory=ray_options.object_store_mb * 1024 * 1024,
                include_dashboard=False,
                logging_level=logging.WARNING,
                log_to_driver=True,
            )
    except Exception as exc:  # ConnectionError, RuntimeError, ValueError from ray.init
        if not ray_options.address:
            raise RayIndexError(f"cannot start Ray locally: {first_line(exc)}") from exc
        raise RayIndexError(
            f"cannot join the Ray cluster at {ray_options.address}: {first_line(exc)} (run this on a node "
            f"of that cluster, or join it first: ray start --address={ray_options.address} --num-cpus=0)"
        ) from exc
    return True


def _row(job: _Job) -> dict[str, Any]:
    src = job.source
    return {
        "job": job.id,
        "path": str(src.path),
        "sha256": job.sha256,
        "replace": -1 if job.replace_track_id is None else int(job.replace_track_id),
        "meta": pickle.dumps(src),
    }


def _decode_batch(batch: dict[str, np.ndarray], options: RunOptions) -> dict[str, Any]:
    """Decode, clip and featurise each file (one per task): ``indexer.worker.prepare``."""
    out = []
    for job, path in zip(batch["job"], batch["path"], strict=True):
        _maybe_crash(str(path))
        result = prepare(int(job), str(path), options.hop_seconds, options.max_seconds, options.tagger_input)
        out.append(pickle.dumps(result, protocol=5))
    return {**batch, "result": np.array(out, dtype=object)}


def _maybe_crash(path: str) -> None:
    marker = os.environ.get(CRASH_ONCE_ENV)
    if not marker:
        return
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.write(fd, path.encode())
    os.close(fd)
    os._exit(1)


class _EmbedActor:
    """One model per actor; replaces each file's features by its clip embeddings, VA and the
    track's query-bank statistics (computed here, where the model is)."""

    def __init__(self, checkpoint: str, device: str) -> None:
        from model.inference import INDEX_CLIP_BATCH, Matcher

        self.matcher = Matcher.load(Path(checkpoint), device, spinning=False, batch_size=INDEX_CLIP_BATCH)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        out = []
        for blob in batch["result"]:
            result = pickle.loads(blob)
            if isinstance(result, Prepared):
                embeddings, va = self.matcher.embed_clip_features(result.features, result.tagger)
                result = replace(result, features=np.empty(0, np.float32), tagger=None)
                embeddings = np.asarray(embeddings, np.float32)
                result = (result, embeddings, np.asarray(va, np.float32), track_stats(self.matcher, embeddings))
            out.append(pickle.dumps(result, protocol=5))
        return {**batch, "result": np.array(out, dtype=object)}


@dataclass
class _Embedded:
    """``pipeline.Embedder`` over embeddings already computed by the actor pool."""

    checkpoint_hash: str
    embeddings: np.ndarray
    va: np.ndarray
    bank_stats: tuple[float, float] | None  # pipeline.KnowsBankStats: stored as computed

    def embed_clip_features(self, features: Any, tagger: Any = None) -> tuple[np.ndarray, np.ndarray]:
        return self.embeddings, self.va


class _WriteActor:
    """Stores each track whole (``pipeline._commit``) and returns a small outcome row."""

    def __init__(self, database_url: str, checkpoint_hash: str, options: RunOptions, audio_dir: str | None) -> None:
        from app.core.db import make_engine, make_session_factory

        self.engine = make_engine(database_url)
        self.session_factory = make_session_factory(self.engine)
        self.checkpoint_hash = checkpoint_hash
        store = None
        if audio_dir is not None:
            from app.core.storage import AudioStore

            store = AudioStore(Path(audio_dir))
        self.options = replace(options, audio_store=store)
        self.licenses = LicenseFinder()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        keys = ("job", "status", "reason", "already_indexed", "clips", "seconds", "replaced")
        cols: dict[str, list[Any]] = {k: [] for k in keys}
        for i in range(len(batch["job"])):
            src: SourceFile = pickle.loads(batch["meta"][i])
            replace_id = int(batch["replace"][i])
            job = _Job(int(batch["job"][i]), src, str(batch["sha256"][i]), None if replace_id < 0 else replace_id)
            result = pickle.loads(batch["result"][i])
            row = self._store(job, result)
            for k in keys:
                cols[k].append(row[k])
        return {k: np.array(v, dtype=object if k in ("status", "reason") else None) for k, v in cols.items()}

    def _store(
        self, job: _Job, result: Failed | tuple[Prepared, np.ndarray, np.ndarray, tuple[float, float] | None]
    ) -> dict[str, Any]:
        row = {
            "job": job.id,
            "status": "failed",
            "reason": "",
            "already_indexed": False,
            "clips": 0,
            "seconds": 0.0,
            "replaced": False,
        }
        if isinstance(result, Failed):
            row["reason"] = result.reason
            return row
        prepared, embeddings, va, stats = result
        local = RunSummary()
        embedded = _Embedded(self.checkpoint_hash, embeddings, va, stats)
        _commit(job, prepared, local, self.session_factory, embedded, self.options, self.licenses)
        if local.added:
            row.update(status="added", clips=local.clips, seconds=local.audio_seconds, replaced=bool(local.replaced))
        elif local.skipped:
            skip = local.skipped[0]
            row.update(status="skipped", reason=skip.reason, already_indexed=skip.already_indexed)
            if job.replace_track_id is None and self._written_by_this_run(job):
                # A retried write whose first attempt committed: the track is ours, not a skip.
                row.update(status="added", reason="", clips=len(embeddings), seconds=prepared.duration)
        else:
            row["reason"] = local.failed[0].reason if local.failed else "not stored"
        return row

    def _written_by_this_run(self, job: _Job) -> bool:
        from app.core.catalogue import find_track

        with self.session_factory() as session:
            track = find_track(session, job.sha256)
            return (
                track is not None
                and track.source == str(job.source.path)
                and track.checkpoint_hash == self.checkpoint_hash
            )


def _tally(summary: RunSummary, job: _Job, row: dict[str, Any]) -> None:
    status, reason = str(row["status"]), str(row["reason"])
    if status == "added":
        summary.added.append(job.source.path)
        summary.clips += int(row["clips"])
        summary.audio_seconds += float(row["seconds"])
        summary.replaced += bool(row["replaced"])
    elif status == "skipped":
        summary.skipped.append(Outcome(job.source.path, reason, already_indexed=bool(row["already_indexed"])))
    else:
        summary.failed.append(Outcome(job.source.path, reason))
