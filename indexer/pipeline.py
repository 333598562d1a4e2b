"""The indexing run: hash -> skip check -> decode/featurise (process pool) -> embed -> commit.

The steps are the ingest service's (``app.services.ingest``), the rules ``POST /tracks`` follows.

Decoding and features run in spawned worker processes (they never load the model); embedding
runs in this process in batches under ``torch.inference_mode`` (GPU when present) while the
pool keeps decoding, and so do the track's query-bank statistics (``app.services.bank_stats``),
stored with it. Each track is committed with all its clips in one transaction, so a kill
at any moment leaves whole tracks or nothing; a re-run skips what was committed.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from concurrent.futures.thread import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, cast, runtime_checkable

import numpy as np
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from tqdm import tqdm

from app.core.catalogue import find_tracks
from app.core.files import file_sha256
from app.core.text import first_clean
from app.services.bank_stats import BankScorer, BankStats, query_bank, track_bank_stats
from app.services.ingest import embed_song, store_song
from app.services.tracks import Placement, TrackMetadata
from indexer.build import IndexReport
from indexer.scan import LicenseFinder, Rejected, SourceFile
from indexer.worker import Failed, Prepared, init_worker, prepare

log = logging.getLogger(__name__)


class TrackEmbedder(Protocol):
    """What storing one track needs of the model: clip embeddings and the checkpoint's hash."""

    checkpoint_hash: str

    def embed_clip_features(
        self, features: np.ndarray, tagger: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]: ...


class Embedder(TrackEmbedder, Protocol):
    """The part of ``model.inference.Matcher`` the indexer needs."""

    @property
    def dim(self) -> int: ...

    @property
    def needs_tagger_input(self) -> bool: ...


@runtime_checkable
class KnowsBankStats(Protocol):
    """An embedder that already computed the track's query-bank statistics (the Ray writer's)."""

    bank_stats: BankStats | None


def track_stats(embedder: object, embeddings: np.ndarray) -> BankStats | None:
    """The track's query-bank statistics, from the model that embedded it (stored with the track
    so no request computes them): precomputed by the Ray embed actor, else computed here."""
    if isinstance(embedder, KnowsBankStats):
        return embedder.bank_stats
    if query_bank(embedder) is None:
        return None
    return track_bank_stats(cast(BankScorer, embedder), embeddings)


ProgressHook = Callable[[int, int, int, str | None], None]  # done, total, failed, current file


@dataclass
class RunOptions:
    hop_seconds: float = 2.0
    workers: int = 1
    license: str | None = None
    max_seconds: float | None = None
    reembed: bool = False
    progress: bool | None = None  # None: only on a terminal
    audio_store: Any | None = None  # app.core.storage.AudioStore to copy files into, or None
    tagger_input: bool = False  # set from the embedder: workers also cut the tagger's input


@dataclass
class Outcome:
    path: Path
    reason: str
    already_indexed: bool = False  # the same content is stored under this checkpoint: counted apart


def already_indexed(path: Path, track_id: int) -> Outcome:
    """The skip of a file whose content is already indexed with this checkpoint."""
    return Outcome(path, f"already indexed (track {track_id})", already_indexed=True)


@dataclass
class RunSummary:
    """Counts and reasons for the final report."""

    added: list[Path] = field(default_factory=list)
    skipped: list[Outcome] = field(default_factory=list)
    failed: list[Outcome] = field(default_factory=list)
    replaced: int = 0
    clips: int = 0
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    index: IndexReport | None = None
    interrupted: bool = False

    @property
    def realtime_factor(self) -> float:
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def clips_per_second(self) -> float:
        return self.clips / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def format(self) -> str:
        already = sum(1 for s in self.skipped if s.already_indexed)
        lines = [
            "photoscore index: summary",
            f"  tracks added    {len(self.added):,}" + (f" ({self.replaced:,} re-embedded)" if self.replaced else ""),
            f"  tracks skipped  {len(self.skipped):,} ({already:,} already indexed)",
            f"  tracks failed   {len(self.failed):,}",
            f"  clips           {self.clips:,}",
            f"  audio duration  {_hms(self.audio_seconds)}",
            f"  throughput      {self.realtime_factor:.1f}x real time, "
            f"{self.clips_per_second:.1f} clips/s (wall {self.wall_seconds:.1f} s)",
        ]
        if self.index is not None:
            lines.append(f"  index           {self.index.describe()}")
            lines.append(f"  index location  {self.index.directory}")
            if self.index.other_checkpoint_tracks:
                lines.append(
                    f"  note            {self.index.other_checkpoint_tracks:,} catalogue tracks were "
                    "embedded by another checkpoint and are not searchable with this one; "
                    "re-index their files with --reembed"
                )
        if self.interrupted:
            lines.append("  interrupted: committed tracks are kept; run again to resume")
        for title, items in (("skipped", self.skipped), ("failed", self.failed)):
            if items:
                lines.append(f"{title}:")
                lines.extend(f"  {o.path}: {o.reason}" for o in sorted(items, key=lambda o: str(o.path)))
        return "\n".join(lines)


@dataclass
class _Job:
    id: int
    source: SourceFile
    sha256: str
    replace_track_id: int | None = None
    attempts: int = 0


def index_files(
    sources: list[SourceFile],
    rejected: list[Rejected],
    *,
    session_factory: Callable[[], Session],
    embedder: Embedder,
    options: RunOptions,
    on_progress: ProgressHook | None = None,
) -> RunSummary:
    """Index ``sources`` into the catalogue (not the FAISS file: see ``indexer.build``).

    ``on_progress(done, total, failed, current)`` after planning and after every track, for the
    service's progress display; ``done`` counts the tracks skipped as already indexed, so a
    resumed run continues the count where the stopped one left it."""
    summary = RunSummary(failed=[Outcome(r.path, r.reason) for r in rejected])
    options = replace(options, tagger_input=embedder.needs_tagger_input)
    t0 = time.perf_counter()
    jobs = _plan(sources, summary, session_factory, embedder.checkpoint_hash, options.reembed)
    total = len(sources)
    report = on_progress or (lambda *_: None)
    report(total - len(jobs), total, 0, None)
    if jobs:
        _process(jobs, summary, session_factory, embedder, options, t0, report, total - len(jobs))
    summary.wall_seconds = time.perf_counter() - t0
    return summary


def _plan(
    sources: list[SourceFile],
    summary: RunSummary,
    session_factory: Callable[[], Session],
    checkpoint_hash: str,
    reembed: bool,
) -> list[_Job]:
    """Hash every file (threads: I/O bound) and drop what is already indexed or duplicated."""

    def digest(src: SourceFile) -> str | Outcome:
        try:
            if src.path.stat().st_size == 0:
                return Outcome(src.path, "empty file (0 bytes)")
            return file_sha256(src.path)
        except OSError as exc:
            return Outcome(src.path, f"cannot read file: {exc.strerror or exc}")

    with ThreadPoolExecutor(max_workers=4) as pool:
        digests = list(pool.map(digest, sources))
    hashed: list[tuple[SourceFile, str]] = []
    for src, result in zip(sources, digests, strict=True):
        if isinstance(result, Outcome):
            summary.failed.append(result)
        else:
            hashed.append((src, result))
    with session_factory() as session:
        known = {sha: (t.id, t.checkpoint_hash) for sha, t in find_tracks(session, (s for _, s in hashed)).items()}
    jobs: list[_Job] = []
    first_seen: dict[str, Path] = {}
    for src, sha in hashed:
        if sha in first_seen:
            summary.skipped.append(Outcome(src.path, f"same content as {first_seen[sha]}"))
            continue
        first_seen[sha] = src.path
        if sha in known:
            track_id, stored_hash = known[sha]
            if stored_hash == checkpoint_hash:
                summary.skipped.append(already_indexed(src.path, track_id))
                continue
            if not reembed:
                summary.skipped.append(
                    Outcome(
                        src.path,
                        f"indexed as track {track_id} with another checkpoint "
                        f"({stored_hash[:12]}); re-run with --reembed to re-embed it",
                    )
                )
                continue
            jobs.append(_Job(len(jobs), src, sha, replace_track_id=track_id))
            continue
        jobs.append(_Job(len(jobs), src, sha))
    return jobs


def _process(
    jobs: list[_Job],
    summary: RunSummary,
    session_factory: Callable[[], Session],
    embedder: Embedder,
    options: RunOptions,
    t0: float,
    report: ProgressHook,
    done_before: int,
) -> None:
    licenses = LicenseFinder()
    done = done_before
    failed_before = len(summary.failed)
    bar = tqdm(
        total=len(jobs),
        unit="track",
        desc="indexing",
        file=sys.stderr,
        disable=None if options.progress is None else not options.progress,
        dynamic_ncols=True,
    )

    def on_result(job: _Job, result: Prepared | Failed) -> None:
        if isinstance(result, Failed):
            summary.failed.append(Outcome(job.source.path, result.reason))
        else:
            _commit(job, result, summary, session_factory, embedder, options, licenses)
        elapsed = max(time.perf_counter() - t0, 1e-9)
        bar.set_postfix(
            {"clips/s": f"{summary.clips / elapsed:.1f}", "xRT": f"{summary.audio_seconds / elapsed:.1f}"},
            refresh=False,
        )
        bar.update(1)
        nonlocal done
        done += 1
        report(done, done_before + len(jobs), len(summary.failed) - failed_before, job.source.path.name)

    try:
        if options.workers <= 0:
            for job in jobs:
                on_result(job, _run_job(job, options))
        else:
            _run_pool(jobs, options, on_result, summary)
    except KeyboardInterrupt:
        summary.interrupted = True
        raise
    finally:
        bar.close()


def _run_job(job: _Job, options: RunOptions) -> Prepared | Failed:
    return prepare(job.id, str(job.source.path), options.hop_seconds, options.max_seconds, options.tagger_input)


def _run_pool(
    jobs: list[_Job],
    options: RunOptions,
    on_result: Callable[[_Job, Prepared | Failed], None],
    summary: RunSummary,
) -> None:
    """Bounded in-flight work; a crashed worker costs only the file that crashed it.

    When a worker dies (decoder segfault, OOM kill) every in-flight future fails; those files
    are retried alone, one at a time, so only the culprit is reported as failed.
    """
    ctx = multiprocessing.get_context("spawn")
    max_inflight = max(2, 2 * options.workers)
    queue: deque[_Job] = deque(jobs)
    suspects: deque[_Job] = deque()

    def new_pool() -> ProcessPoolExecutor:
        return ProcessPoolExecutor(options.workers, mp_context=ctx, initializer=init_worker, initargs=(os.getpid(),))

    pool = new_pool()
    inflight: dict[Future[Prepared | Failed], _Job] = {}
    try:
        while queue or suspects or inflight:
            if suspects:
                if not inflight:
                    job = suspects.popleft()
                    inflight[pool.submit(_run_job, job, options)] = job
            else:
                while queue and len(inflight) < max_inflight:
                    job = queue.popleft()
                    inflight[pool.submit(_run_job, job, options)] = job
            done, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
            broken = False
            for fut in done:
                job = inflight.pop(fut)
                try:
                    result = fut.result()
                except BrokenProcessPool:
                    broken = True
                    job.attempts += 1
                    if job.attempts >= 2:
                        on_result(job, Failed(job.id, "decoder crashed the worker process"))
                    else:
                        suspects.append(job)
                    continue
                except Exception as exc:  # noqa: BLE001 - e.g. unpicklable result
                    result = Failed(job.id, f"worker error: {type(exc).__name__}: {exc}")
                on_result(job, result)
            if broken:
                for fut, job in list(inflight.items()):  # all of them died with the pool
                    fut.cancel()
                    job.attempts += 1
                    suspects.append(job)
                inflight.clear()
                pool.shutdown(wait=False, cancel_futures=True)
                pool = new_pool()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _commit(
    job: _Job,
    prepared: Prepared,
    summary: RunSummary,
    session_factory: Callable[[], Session],
    embedder: TrackEmbedder,
    options: RunOptions,
    licenses: LicenseFinder,
) -> None:
    """Embed one file's clips and write the track with its clips in one transaction."""
    src = job.source
    try:
        embeddings, va = embed_song(embedder, prepared)
        stats = track_stats(embedder, embeddings)
        given = TrackMetadata(
            title=src.title,
            artist=src.artist,
            album=src.album,
            license=first_clean("license", src.license, options.license),
            file_name=src.path.name,
            license_file=licenses.find(src.path, src.root),
        )
        track, created = store_song(
            session_factory,
            prepared,
            embeddings,
            va,
            sha256=job.sha256,
            given=given,
            checkpoint_hash=embedder.checkpoint_hash,
            placement=Placement(
                audio=None if options.audio_store is None else src.path.read_bytes(),
                store=options.audio_store,
                source=str(src.path),
                replace_track_id=job.replace_track_id,
                bank_stats=stats,
            ),
        )
        track_id = track.id
    except Exception as exc:  # noqa: BLE001 - one bad track must not stop the run
        log.debug("commit failed for %s", src.path, exc_info=True)
        summary.failed.append(Outcome(src.path, f"could not store: {_store_error(exc)}"))
        return
    if not created:  # another writer indexed the same content meanwhile
        summary.skipped.append(already_indexed(src.path, track_id))
        return
    summary.added.append(src.path)
    summary.replaced += job.replace_track_id is not None
    summary.clips += len(prepared.starts)
    summary.audio_seconds += prepared.duration


def _store_error(exc: BaseException) -> str:
    """One line naming the database's complaint, never SQLAlchemy's echo of the SQL and its
    parameters (they would print a whole track's metadata and embeddings)."""
    orig = getattr(exc, "orig", None) if isinstance(exc, SQLAlchemyError) else None
    text = " ".join(str(orig if orig is not None else exc).split()) or type(exc).__name__
    if orig is None and isinstance(exc, SQLAlchemyError):
        text = text.split("[SQL:")[0].strip() or type(exc).__name__
    name = type(orig if orig is not None else exc).__name__
    return f"{name}: {text[:200]}"


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h {m:02d}m {s:02d}s" if h else f"{m}m {s:02d}s"
