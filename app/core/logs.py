"""Logging for the command-line entry points: the project's own INFO lines, libraries' warnings.

At the default level some libraries narrate their start-up at INFO (faiss's loader tries each
CPU build and logs a ``ModuleNotFoundError`` for every one it lacks; alembic lists each plugin it
sets up). Those lines read like errors to a new user and say nothing they can act on, so those
loggers start at WARNING: their warnings and errors still show. ``-v`` (DEBUG) shows everything.
"""

from __future__ import annotations

import logging

# Libraries whose INFO output is start-up narration, not something an operator acts on.
QUIET_LIBRARIES = ("faiss", "alembic", "numba", "urllib3", "httpx", "PIL", "multipart", "python_multipart")
DEFAULT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: int = logging.INFO, *, verbose: bool = False, fmt: str = DEFAULT_FORMAT) -> None:
    """Root handler at ``level`` (DEBUG when verbose); noisy libraries at WARNING unless verbose."""
    logging.basicConfig(level=logging.DEBUG if verbose else level, format=fmt)
    library_level = logging.NOTSET if verbose else logging.WARNING
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(library_level)
