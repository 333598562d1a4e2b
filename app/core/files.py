"""Content hashes of files: a track's identity in the catalogue and a checkpoint's identity."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: Path) -> str:
    """SHA-256 hex digest of ``path``, streamed (songs and checkpoints can be large)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()
