"""File helpers: content hashes (a track's and a checkpoint's identity) and the one atomic write
(temporary file, fsync, ``os.replace``, fsync of the directory) that every durable file uses, so a
crash never leaves a half-written file under a valid name."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def file_sha256(path: Path) -> str:
    """SHA-256 hex digest of ``path``, streamed (songs and checkpoints can be large)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def fsync_file(path: Path) -> None:
    """Flush ``path``'s contents to disk before it is renamed into place."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: Path) -> None:
    """Persist a rename itself (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(
    path: Path,
    *,
    tmp: Path | None = None,
    prefix: str | None = None,
    suffix: str = ".tmp",
    sync_dir: bool = True,
) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; on a clean exit fsync it, ``os.replace`` it
    onto ``path`` and fsync the directory; on an error remove it. Readers see the old file or the
    new one, never a part.

    ``tmp`` names the temporary (a pattern a sweep recognises, a writer's own name); without it
    ``mkstemp`` makes a fresh one, mode 0600, named ``prefix`` (default ``.<name>.``) + random +
    ``suffix``. ``sync_dir=False`` leaves the directory's fsync to a caller replacing several files.
    """
    path = Path(path)
    if tmp is None:
        prefix = f".{path.name}." if prefix is None else prefix
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=suffix)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if sync_dir:
        fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_write(path: Path, mode: str = "wb", *, encoding: str | None = None, **kwargs: Any) -> Iterator[IO[Any]]:
    """:func:`atomic_path`, opened: yields the temporary file (``mode``, ``encoding``), closed
    before it is synced and renamed. ``kwargs`` go to :func:`atomic_path`."""
    with atomic_path(path, **kwargs) as tmp, open(tmp, mode, encoding=encoding) as fh:
        yield fh
