"""`photoscore serve`: run the HTTP service under uvicorn.

Options override the matching `PHOTOSCORE_*` settings for this run only. Each process loads its
own model and live index; run several behind a load balancer (sharing one PostgreSQL) to scale.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from app.cli.subcommand import add_subcommand

log = logging.getLogger(__name__)
_SPARE_FILES = 256  # descriptors beyond the connections: database, index, audio files, logs


def add_serve_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = add_subcommand(
        subparsers, "serve", help="run the recommendation API and web page", doc=__doc__, handler=run_serve
    )
    parser.add_argument("--host", help="bind address (PHOTOSCORE_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="TCP port (PHOTOSCORE_PORT, default 8000)")
    parser.add_argument("--database-url", help="SQLAlchemy URL (PHOTOSCORE_DATABASE_URL)")
    parser.add_argument("--checkpoint", type=Path, help="model checkpoint (PHOTOSCORE_CHECKPOINT)")
    parser.add_argument("--index-dir", type=Path, help="FAISS index directory (PHOTOSCORE_INDEX_DIR)")
    parser.add_argument("--data-dir", type=Path, help="data directory (PHOTOSCORE_DATA_DIR)")
    parser.add_argument("--device", help="'auto', 'cpu' or 'cuda[:N]' (PHOTOSCORE_DEVICE)")
    parser.add_argument("--log-level", help="uvicorn log level (PHOTOSCORE_LOG_LEVEL)")
    parser.add_argument(
        "--proxy-headers",
        action="store_true",
        help="trust X-Forwarded-* from the proxy in front (behind a load balancer)",
    )
    return parser


def _settings_from(args: argparse.Namespace):  # -> Settings (import kept lazy for CLI speed)
    from app.core.settings import Settings

    overrides = {
        name: getattr(args, name)
        for name in ("host", "port", "database_url", "checkpoint", "index_dir", "data_dir", "device", "log_level")
        if getattr(args, name, None) is not None
    }
    return Settings(**overrides)


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.api.admission_connections import RequestGuard, guarded_h11
    from app.api.main import create_app

    try:
        settings = _settings_from(args)
    except Exception as exc:  # pydantic ValidationError: bad environment or option
        print(f"photoscore serve: invalid settings: {exc}", file=sys.stderr)
        return 2
    if not settings.checkpoint.is_file():
        print(
            f"photoscore serve: checkpoint not found: {settings.checkpoint} "
            "(set PHOTOSCORE_CHECKPOINT or --checkpoint)",
            file=sys.stderr,
        )
        return 2
    if not settings.api_keys:
        log.warning(
            "no API key configured: writes (POST/DELETE /tracks) are refused; set PHOTOSCORE_API_KEYS to enable them"
        )
    app = create_app(settings)
    head_limit = settings.max_header_kb * 1024
    waiting = settings.max_connections
    _raise_open_files_limit(settings.max_connections + waiting + _SPARE_FILES)
    config = uvicorn.Config(
        # Outermost: heads over the limit and Content-Length with chunked get 400, requests in
        # flight beyond max_connections 503 (connections that sent no request are not counted).
        RequestGuard(app, max_head_bytes=head_limit, max_in_flight=settings.max_connections),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        proxy_headers=bool(getattr(args, "proxy_headers", False)),
        timeout_graceful_shutdown=10,
        lifespan="on",
        # h11, not httptools: httptools reads request headers of any size (a 40 MB header was
        # accepted, issue 14 F7); h11 refuses a request head over this many bytes with 400. The
        # guarded protocol adds a header timeout and closes the oldest of the connections that
        # wait for a request head beyond `waiting` (issue 24, point 5).
        http=guarded_h11(header_timeout_s=settings.header_timeout_seconds, max_waiting=waiting),
        h11_max_incomplete_event_size=head_limit,
    )
    server = uvicorn.Server(config)
    server.run()
    # uvicorn exits quietly if start-up fails (e.g. database unreachable): report it.
    return 0 if server.started else 1


def _raise_open_files_limit(wanted: int) -> None:
    """Lift the soft open-files limit towards ``wanted`` (never above the hard limit): every
    connection is a descriptor, and the default soft limit (often 1,024) would refuse
    connections at accept() long before the bounds above apply."""
    try:
        import resource
    except ImportError:  # not POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-files limit from %s to %s: %s", soft, target, exc)


def main(argv: list[str] | None = None) -> int:
    """`python -m app.cli.serve` (the same as `photoscore serve`)."""
    parser = argparse.ArgumentParser(prog="photoscore")
    sub = parser.add_subparsers(dest="command")
    serve = add_serve_parser(sub)
    args = serve.parse_args(argv)
    from app.core.logs import configure_logging

    configure_logging()
    return run_serve(args)


if __name__ == "__main__":
    sys.exit(main())
