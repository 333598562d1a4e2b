"""Content-addressed audio store.

A stored file's key is `<sha256>.<ext>`, where the extension comes from sniffing the bytes,
never from the uploaded file name (user-supplied names are not paths). Files are sharded as
`<root>/<ab>/<cd>/<key>` to keep directories small, written to a temporary file, fsync'd and
renamed into place, so a crash never leaves a half-written file under a valid key.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from app.core.files import atomic_write

_KEY_RE = re.compile(r"^[0-9a-f]{64}\.[a-z0-9]{1,5}$")

MEDIA_TYPES = {
    "wav": "audio/wav",
    "flac": "audio/flac",
    "ogg": "audio/ogg",
    "opus": "audio/ogg",
    "mp3": "audio/mpeg",
    "m4a": "audio/mp4",
    "aiff": "audio/aiff",
    "bin": "application/octet-stream",
}


def sniff_audio_extension(data: bytes) -> str | None:
    """Audio container from magic bytes, or None if not recognised."""
    head = data[:64]
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "opus" if b"OpusHead" in data[:256] else "ogg"
    if head[4:8] == b"ftyp":
        return "m4a"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "mp3"
    return None


def media_type_for(path_or_key: str | Path) -> str:
    ext = Path(path_or_key).suffix.lstrip(".").lower()
    return MEDIA_TYPES.get(ext, "application/octet-stream")


class AudioStore:
    """Files under `root`, addressed by content hash."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @staticmethod
    def make_key(data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        return f"{digest}.{sniff_audio_extension(data) or 'bin'}"

    def path(self, key: str) -> Path:
        """Where `key` lives; raises ValueError for anything that is not a well-formed key."""
        if not _KEY_RE.match(key):
            raise ValueError(f"not a content-addressed key: {key!r}")
        return self.root / key[:2] / key[2:4] / key

    def exists(self, key: str) -> bool:
        try:
            return self.path(key).is_file()
        except ValueError:
            return False

    def put(self, data: bytes) -> str:
        """Store `data` (idempotent) and return its key."""
        key = self.make_key(data)
        final = self.path(key)
        if final.is_file() and final.stat().st_size == len(data):
            # Fresh mtime: an old orphan about to be referenced again must not look sweepable.
            os.utime(final)
            return key
        final.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(final, prefix=".tmp-", suffix="") as fh:  # `.tmp-*`: what the sweep finds
            fh.write(data)
        return key

    def sweep_temporary(self, older_than_s: float = 3600.0) -> int:
        """Delete the temporary files a crash (kill -9 mid-`put`) left behind; returns how many.

        Only files older than `older_than_s`: a replica sharing this folder may be writing one now.
        """
        cutoff = time.time() - older_than_s
        removed = 0
        for path in self.root.glob("*/*/.tmp-*"):
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
        return removed

    def sweep_unreferenced(
        self,
        referenced: Callable[[list[str]], Iterable[str]],
        older_than_s: float = 3600.0,
        chunk: int = 1000,
    ) -> int:
        """Delete stored files no track references (an upload cut off between storing its file and
        committing its track leaves one); returns how many.

        `referenced(keys)` returns those of `keys` the catalogue still points at. Only files older
        than `older_than_s` are candidates, so an upload in flight on a replica sharing this folder
        is never touched (`put` refreshes the time of a file it reuses).
        """
        cutoff = time.time() - older_than_s
        removed = 0
        candidates: list[Path] = []

        def flush() -> int:
            keep = set(referenced([p.name for p in candidates]))
            n = 0
            for path in candidates:
                if path.name in keep:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    if path.stat().st_mtime < cutoff:  # re-checked: a put may have reused it since
                        path.unlink()
                        n += 1
            candidates.clear()
            return n

        for path in self.root.glob("*/*/*"):
            if not _KEY_RE.match(path.name):
                continue
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < cutoff:
                    candidates.append(path)
            if len(candidates) >= chunk:
                removed += flush()
        if candidates:
            removed += flush()
        return removed

    def delete(self, key: str) -> bool:
        """Remove a stored file; False if it was not there."""
        try:
            self.path(key).unlink()
        except (FileNotFoundError, ValueError):
            return False
        return True
