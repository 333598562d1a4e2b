"""photoscore index: build the music catalogue and its FAISS index from audio files.

Re-running is safe: files already indexed with the same checkpoint are skipped, and the index
is brought in line with the database at the end of every run (also after a crash).

``--engine ray`` runs decoding, embedding and writing on Ray Data (a local Ray, or the cluster at
``--ray-address``); the summary, exit status and resumability are the same.

Exit status: 0 when the run completed (files skipped or failed are listed in the summary);
1 when the database, the index file or Ray failed mid-run (committed tracks are kept);
2 with a one-line reason when the arguments, database or checkpoint cannot be used.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.core.errors import first_line
from app.core.progress import ProgressWriter, State, default_path

if TYPE_CHECKING:
    from indexer.pipeline import ProgressHook

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """Bad input that stops the run before it starts; printed as one line."""


def add_index_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``index`` on the ``photoscore`` sub-command parser."""
    parser = subparsers.add_parser(
        "index",
        help="index music files into the catalogue and FAISS index",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(handler=run_index)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths",
        nargs="*",
        metavar="PATH_OR_MANIFEST",
        help="audio files, folders (searched recursively for wav/flac/ogg/opus/mp3/m4a) or CSV "
        "manifests with columns path[,title,artist,album,license] (paths relative to the CSV)",
    )
    parser.add_argument("--database-url", help="SQLAlchemy URL (default: PHOTOSCORE_DATABASE_URL)")
    parser.add_argument("--index-dir", type=Path, help="FAISS index folder (default: settings)")
    parser.add_argument(
        "--workers", type=int, help="decoding processes (0: in this process; default PHOTOSCORE_WORKERS)"
    )
    parser.add_argument("--checkpoint", type=Path, help="model checkpoint (.safetensors)")
    parser.add_argument("--device", help="'auto', 'cpu' or 'cuda[:N]' for embedding")
    parser.add_argument(
        "--rebuild",
        action="store_true",
        help="rebuild the FAISS index from the embeddings in the database (no audio needed)",
    )
    parser.add_argument(
        "--reembed",
        action="store_true",
        help="re-embed files already indexed with a different checkpoint",
    )
    parser.add_argument("--license", help="licence/attribution text recorded for every track of this run")
    parser.add_argument("--hop", type=float, metavar="SECONDS", help="hop between 2 s clips")
    parser.add_argument("--exact-threshold", type=int, help="clips below which the index is exact (else HNSW)")
    parser.add_argument(
        "--compressed-threshold",
        type=int,
        help="clips from which the index is IVF-PQ, exactly re-scored (default PHOTOSCORE_COMPRESSED_INDEX_THRESHOLD)",
    )
    parser.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: worker processes on this machine; ray: Ray Data (a local Ray, or --ray-address)",
    )
    parser.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="join the Ray cluster at ADDR (e.g. ray-head:6379 or auto) instead of starting a local Ray",
    )
    parser.add_argument("--ray-cpus", type=int, metavar="N", help="CPUs of the local Ray (default: all cores)")
    parser.add_argument("--max-seconds", type=float, default=4 * 3600.0, help="skip files longer than this")
    parser.add_argument(
        "--copy-audio",
        action="store_true",
        help="also copy each file into the content-addressed audio store (audio_dir)",
    )
    progress = parser.add_mutually_exclusive_group()
    progress.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=None,
        help="show the progress bar (default: only on a terminal)",
    )
    progress.add_argument("--no-progress", dest="progress", action="store_false")
    parser.add_argument(
        "--progress-file",
        metavar="PATH",
        help="JSON status file rewritten after every track, which the service shows on /ready and "
        "its page (default: <PHOTOSCORE_DATA_DIR>/indexing.json; 'none' to write none)",
    )
    parser.add_argument(
        "--progress-label",
        default="the library",
        metavar="TEXT",
        help="what the status says is indexed: 'indexing TEXT: 12 of 73 songs' (default: %(default)s)",
    )


def run_index(args: argparse.Namespace) -> int:
    """Run ``photoscore index`` for parsed ``args``; returns the exit status.

    SIGTERM stops the run as Ctrl+C does (committed tracks kept, the status file says
    "interrupted"): what `docker stop`, systemd and the quickstart send, and the one signal a
    background job started by a script can receive (bash makes those ignore SIGINT)."""
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return _run(args)
    except UsageError as exc:
        print(f"photoscore index: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(
            "photoscore index: interrupted; committed tracks are kept, run again to resume",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError
    from sqlalchemy.exc import SQLAlchemyError

    from app.core.db import (
        DatabaseUnavailableError,
        check_database,
        make_engine,
        make_session_factory,
        migrate_database,
    )
    from app.core.settings import Settings
    from app.core.vector_index import IndexPolicy
    from indexer.build import sync_index
    from indexer.pipeline import RunOptions, RunSummary, index_files
    from indexer.scan import ScanError, discover

    overrides = {
        k: v
        for k, v in {
            "database_url": args.database_url,
            "index_dir": args.index_dir,
            "workers": args.workers,
            "checkpoint": args.checkpoint,
            "device": args.device,
            "clip_hop_seconds": args.hop,
            "exact_index_threshold": args.exact_threshold,
            "compressed_index_threshold": getattr(args, "compressed_threshold", None),
        }.items()
        if v is not None
    }
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = ".".join(str(part) for part in err["loc"])
        raise UsageError(f"invalid setting {name} (PHOTOSCORE_{name.upper()}): {err['msg']}") from exc
    if not args.paths and not args.rebuild:
        raise UsageError("give at least one PATH_OR_MANIFEST, or --rebuild")
    if settings.workers < 0:
        raise UsageError("--workers must be 0 or more")
    if settings.clip_hop_seconds <= 0:
        raise UsageError("--hop must be positive")
    engine_name = getattr(args, "engine", "local")
    ray_address = getattr(args, "ray_address", None)
    ray_cpus = getattr(args, "ray_cpus", None)
    if engine_name != "ray" and (ray_address or ray_cpus is not None):
        raise UsageError("--ray-address and --ray-cpus need --engine ray")
    if ray_cpus is not None and ray_cpus < 1:
        raise UsageError("--ray-cpus must be 1 or more")
    checkpoint = Path(settings.checkpoint)
    if not checkpoint.is_file():
        raise UsageError(f"checkpoint not found: {checkpoint} (use --checkpoint or PHOTOSCORE_CHECKPOINT)")
    try:
        sources, rejected = discover(args.paths)
    except ScanError as exc:
        raise UsageError(str(exc)) from exc
    url = settings.resolved_database_url
    try:
        check_database(url)
        migrate_database(url)
    except DatabaseUnavailableError as exc:
        raise UsageError(str(exc)) from exc
    if engine_name == "ray" and ray_address and url.startswith("sqlite"):
        raise UsageError(
            "--ray-address needs a database every node can reach (PostgreSQL); SQLite is a file on this machine"
        )

    checkpoint_hash, dim, embedder = _model(checkpoint, settings.device, need_model=bool(args.paths))
    reporter = _progress_writer(args, settings.data_dir, len(sources))
    engine = make_engine(url)
    session_factory = make_session_factory(engine)
    state: State = "failed"  # unless the run gets to the end
    try:
        if args.paths:
            store = None
            if args.copy_audio:
                from app.core.storage import AudioStore

                store = AudioStore(settings.resolved_audio_dir)
            options = RunOptions(
                hop_seconds=settings.clip_hop_seconds,
                workers=settings.workers,
                license=args.license,
                max_seconds=args.max_seconds,
                reembed=args.reembed,
                progress=args.progress,
                audio_store=store,
            )
            try:
                if engine_name == "ray":
                    summary = _index_on_ray(
                        args,
                        sources,
                        rejected,
                        session_factory,
                        url,
                        checkpoint,
                        checkpoint_hash,
                        embedder,
                        options,
                        settings.device,
                    )
                else:
                    summary = index_files(
                        sources,
                        rejected,
                        session_factory=session_factory,
                        embedder=embedder,
                        options=options,
                        on_progress=None if reporter is None else _hook(reporter),
                    )
            except _RayFailed as exc:
                print(
                    f"photoscore index: error: Ray failed: {exc}; committed tracks are kept, run again to resume",
                    file=sys.stderr,
                )
                return EXIT_FAILED
            except SQLAlchemyError as exc:
                print(
                    f"photoscore index: error: database failed: {first_line(exc)}; "
                    "committed tracks are kept, run again to resume",
                    file=sys.stderr,
                )
                return EXIT_FAILED
        else:
            summary = RunSummary()
        try:
            summary.index = sync_index(
                session_factory,
                settings.resolved_index_dir,
                checkpoint_hash=checkpoint_hash,
                dim=dim,
                policy=IndexPolicy.from_settings(settings),
                rebuild=args.rebuild,
            )
        except (OSError, SQLAlchemyError, ValueError) as exc:
            print(summary.format())
            print(
                f"photoscore index: error: could not write the index in "
                f"{settings.resolved_index_dir}: {first_line(exc)}; committed tracks are kept, "
                "fix the cause and run `photoscore index --rebuild`",
                file=sys.stderr,
            )
            return EXIT_FAILED
        state = "done"
    except KeyboardInterrupt:
        state = "interrupted"
        raise
    finally:
        engine.dispose()
        if reporter is not None:
            reporter.finish(state)
    print(summary.format())
    return EXIT_OK


def _progress_writer(args: argparse.Namespace, data_dir: Path, total: int) -> ProgressWriter | None:
    """The status file's writer for a run that indexes files (None: --rebuild alone, or 'none')."""
    target = getattr(args, "progress_file", None)
    if not args.paths or (target or "").lower() == "none":
        return None
    path = Path(target) if target else default_path(data_dir)
    writer = ProgressWriter(path, getattr(args, "progress_label", None) or "the library")
    writer.update(total=total)
    return writer


def _hook(writer: ProgressWriter) -> ProgressHook:
    def report(done: int, total: int, failed: int, current: str | None) -> None:
        writer.update(done=done, total=total, failed=failed, current=current)

    return report


class _RayFailed(Exception):
    """Ray could not finish the run (reported as exit status 1)."""


def _index_on_ray(
    args: argparse.Namespace,
    sources: list[Any],
    rejected: list[Any],
    session_factory: Any,
    url: str,
    checkpoint: Path,
    checkpoint_hash: str,
    embedder: Any,
    options: Any,
    device: str,
) -> Any:
    """The run on Ray Data; the driver's model only validated the checkpoint and says what it reads."""
    from dataclasses import replace

    try:
        import ray  # noqa: F401

        from indexer.ray_engine import RayIndexError, RayOptions, index_files_ray
    except ImportError as exc:
        raise UsageError(f"--engine ray needs the ray package (pip install 'ray[data]'): {exc}") from exc
    try:
        return index_files_ray(
            sources,
            rejected,
            session_factory=session_factory,
            database_url=url,
            checkpoint=checkpoint.resolve(),
            checkpoint_hash=checkpoint_hash,
            device=device,
            options=replace(options, tagger_input=embedder.needs_tagger_input),
            ray_options=RayOptions(address=args.ray_address, num_cpus=args.ray_cpus),
        )
    except RayIndexError as exc:
        raise _RayFailed(str(exc)) from exc


def _model(checkpoint: Path, device: str, *, need_model: bool) -> tuple[str, int, Any]:
    """Checkpoint hash and dimension; the loaded model only when there is audio to embed."""
    from app.core.files import file_sha256
    from model.meta import CheckpointError, read_meta

    try:
        if need_model:
            from model.inference import INDEX_CLIP_BATCH, Matcher

            matcher = Matcher.load(checkpoint, device, spinning=False, batch_size=INDEX_CLIP_BATCH)
            return matcher.checkpoint_hash, matcher.dim, matcher
        return file_sha256(checkpoint), int(read_meta(checkpoint).config.space_dim), None
    except (CheckpointError, OSError, ValueError, RuntimeError) as exc:
        # RuntimeError: ONNX Runtime refuses a graph that is damaged or does not fit this version
        hint = " (its ONNX graphs do not fit this version)" if isinstance(exc, RuntimeError) else ""
        raise UsageError(f"cannot load checkpoint {checkpoint}: {first_line(exc)}{hint}") from exc


def main(argv: list[str] | None = None) -> int:
    """``python -m indexer`` (same options as ``photoscore index``)."""
    parser = argparse.ArgumentParser(prog="photoscore index", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    from app.core.logs import configure_logging

    configure_logging(logging.WARNING, fmt="%(levelname)s %(name)s: %(message)s")
    return run_index(args)
