"""Finding the files to index: folders, explicit files and CSV manifests; tags, licences, hashes."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from app.core import text as _text
from app.core.errors import one_line
from model.audio import AUDIO_EXTENSIONS

log = logging.getLogger(__name__)

LICENSE_FILES = ("LICENSE", "LICENSE.txt", "LICENSE.md", "LICENCE", "COPYING", "copyright")
MANIFEST_COLUMNS = ("path", "title", "artist", "album", "license")
# The catalogue's licence limit (app.core.text): a LICENSE file is cut to it.
MAX_LICENSE_CHARS = _text.MAX_LICENSE_CHARS


class ScanError(ValueError):
    """A command-line input cannot be used at all (missing path, unreadable manifest)."""


@dataclass
class SourceFile:
    """One audio file to index, with whatever metadata the manifest supplied."""

    path: Path
    title: str | None = None
    artist: str | None = None
    album: str | None = None
    license: str | None = None
    root: Path | None = None  # the folder argument it was found under (licence file lookup)


@dataclass
class Rejected:
    """An input that is not indexed, with a one-line reason."""

    path: Path
    reason: str


def discover(inputs: Sequence[str | Path]) -> tuple[list[SourceFile], list[Rejected]]:
    """Expand folders (recursively), files and ``.csv`` manifests into audio files.

    Raises :class:`ScanError` for an input that does not exist; an explicit file with an
    unsupported extension, or a manifest row naming a missing file, is rejected with a reason.
    Results are de-duplicated by resolved path, in a stable order.
    """
    found: list[SourceFile] = []
    rejected: list[Rejected] = []
    for raw in inputs:
        path = Path(raw).expanduser()
        try:
            exists = path.exists()
        except (OSError, ValueError) as exc:
            raise ScanError(f"unusable path {str(raw)[:200]!r}: {_os_reason(exc)}") from exc
        if not exists:
            raise ScanError(f"no such file or folder: {raw}")
        if path.is_dir():
            found.extend(_walk(path))
        elif path.suffix.lower() == ".csv":
            files, bad = read_manifest(path)
            found.extend(files)
            rejected.extend(bad)
        elif path.suffix.lower() in AUDIO_EXTENSIONS:
            found.append(SourceFile(path.resolve(), root=path.resolve().parent))
        else:
            rejected.append(Rejected(path, f"unsupported file type {path.suffix or '(none)'!r}"))
    seen: set[Path] = set()
    unique = []
    for item in found:
        if item.path not in seen:
            seen.add(item.path)
            unique.append(item)
    return unique, rejected


def _walk(folder: Path) -> Iterable[SourceFile]:
    root = folder.resolve()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if p.suffix.lower() in AUDIO_EXTENSIONS and not name.startswith("."):
                yield SourceFile(p, root=root)


def read_manifest(manifest: Path) -> tuple[list[SourceFile], list[Rejected]]:
    """``path[,title,artist,album,license]`` rows (header optional); paths relative to the CSV."""
    base = manifest.resolve().parent
    try:
        with open(manifest, newline="", encoding="utf-8-sig") as fh:
            rows = [r for r in csv.reader(fh) if r and any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ScanError(f"cannot read manifest {manifest}: {exc}") from exc
    columns = list(MANIFEST_COLUMNS)
    if rows and rows[0][0].strip().lower() == "path":
        columns = [c.strip().lower() for c in rows[0]]
        unknown = set(columns) - set(MANIFEST_COLUMNS)
        if unknown:
            raise ScanError(
                f"manifest {manifest}: unknown columns {sorted(unknown)}; expected {', '.join(MANIFEST_COLUMNS)}"
            )
        rows = rows[1:]
    files: list[SourceFile] = []
    bad: list[Rejected] = []
    for row in rows:
        values = {c: (v.strip() or None) for c, v in zip(columns, row, strict=False)}
        rel = values.get("path")
        if not rel:
            continue
        path = Path(rel).expanduser()
        path = path if path.is_absolute() else base / path
        try:
            path = path.resolve()
            exists = path.is_file()
        except (OSError, ValueError) as exc:  # a name over 255 bytes (ENAMETOOLONG), a NUL, a loop
            bad.append(Rejected(path, f"unusable path (listed in the manifest): {_os_reason(exc)}"))
            continue
        if not exists:
            bad.append(Rejected(path, "file not found (listed in the manifest)"))
            continue
        if path.suffix.lower() not in AUDIO_EXTENSIONS:
            bad.append(Rejected(path, f"unsupported file type {path.suffix or '(none)'!r}"))
            continue
        files.append(
            SourceFile(
                path,
                title=values.get("title"),
                artist=values.get("artist"),
                album=values.get("album"),
                license=values.get("license"),
                root=base,
            )
        )
    return files, bad


def _os_reason(exc: BaseException) -> str:
    """The OS's words without the path (the summary already names it)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return one_line(exc)


class LicenseFinder:
    """The nearest LICENSE/COPYING/copyright file between a track's folder and its scan root."""

    def __init__(self) -> None:
        self._cache: dict[Path, str | None] = {}

    def find(self, path: Path, root: Path | None) -> str | None:
        folder = path.parent
        stop = root if root is not None else folder
        while True:
            text = self._in_folder(folder)
            if text is not None:
                return text
            if folder == stop or folder.parent == folder or stop not in folder.parents:
                return None
            folder = folder.parent

    def _in_folder(self, folder: Path) -> str | None:
        if folder not in self._cache:
            self._cache[folder] = None
            for name in LICENSE_FILES:
                candidate = folder / name
                if candidate.is_file():
                    try:
                        text = candidate.read_text(encoding="utf-8", errors="replace").strip()
                    except OSError:
                        continue
                    if text:
                        self._cache[folder] = text[:MAX_LICENSE_CHARS]
                        break
        return self._cache[folder]
