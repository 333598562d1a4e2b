"""Indexing progress through a status file: `photoscore index` writes it, the service reads it.

Why a file and not a call into the service: an indexer runs without the service (or before it
starts, or on another machine that shares the data volume), and a file needs no credentials, no
address and no retry. The indexer replaces the file atomically (write a temporary, fsync, rename)
after every track, so a reader never sees half a file. Default location:
``<PHOTOSCORE_DATA_DIR>/indexing.json``.

The JSON object: ``label`` (what is indexed: "the demo library"), ``done`` (tracks finished, the
already indexed ones included), ``total``, ``failed``, ``current`` (the file last finished),
``state`` (running, done, interrupted, failed), ``started``, ``updated``, ``finished`` (Unix
times; ``finished`` null while running), ``pid`` and ``host`` (who writes it). A reader on the
writer's host reports a run whose process is gone as ``stale`` (killed with no chance to say so).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from app.core.files import atomic_write

log = logging.getLogger(__name__)

FILE_NAME = "indexing.json"
State = Literal["running", "done", "interrupted", "failed", "stale"]


def default_path(data_dir: Path) -> Path:
    """Where the indexer writes and the service looks, unless told otherwise."""
    return data_dir / FILE_NAME


@dataclass(frozen=True)
class Progress:
    """One snapshot of an indexing run."""

    label: str
    done: int = 0
    total: int = 0
    failed: int = 0
    current: str | None = None
    state: State = "running"
    started: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    finished: float | None = None
    pid: int = field(default_factory=os.getpid)
    host: str = field(default_factory=socket.gethostname)

    @property
    def running(self) -> bool:
        return self.state == "running"

    def describe(self) -> str:
        """The sentence the page and `/ready` show: "indexing the demo library: 12 of 73 songs"."""
        songs = f"{self.done} of {self.total} songs"
        if self.state == "running":
            return f"indexing {self.label}: {songs}"
        if self.state == "done":
            return f"indexed {self.label}: {songs}" + (f" ({self.failed} failed)" if self.failed else "")
        return f"indexing {self.label} {self.state} at {songs}; run it again to resume"

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"message": self.describe()}


def write_progress(path: Path, progress: Progress) -> None:
    """Replace ``path`` with ``progress`` atomically (a reader sees the old or the new file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w", encoding="utf-8", tmp=path.with_name(f".{path.name}.{os.getpid()}.tmp")) as fh:
        fh.write(json.dumps(asdict(progress)))


def read_progress(path: Path) -> Progress | None:
    """The last snapshot in ``path``; None when there is none or it cannot be read (never raises:
    progress is information, not a condition of serving)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        progress = Progress(**{k: raw[k] for k in Progress.__dataclass_fields__ if k in raw})
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        log.debug("unreadable progress file %s: %s", path, exc)
        return None
    if progress.running and progress.host == socket.gethostname() and not _alive(progress.pid):
        return replace(progress, state="stale")
    return progress


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # someone else's process, or not a pid we can judge
    return True


class ProgressWriter:
    """The indexer's side: one file, updated as tracks finish; a failed write is logged once and
    never stops the run (the catalogue matters, the report does not)."""

    def __init__(self, path: Path, label: str) -> None:
        self.path = path
        self.progress = Progress(label=label)
        self._warned = False

    def update(self, **changes: Any) -> None:
        self.progress = replace(self.progress, updated=time.time(), **changes)
        try:
            write_progress(self.path, self.progress)
        except OSError as exc:
            if not self._warned:
                log.warning("cannot write indexing progress to %s: %s", self.path, exc)
                self._warned = True

    def finish(self, state: State) -> None:
        self.update(state=state, finished=time.time())
