"""Song metadata from the audio file's own tags, the same for uploads and indexed files.

Each field takes the first tag that has text: the artist falls back to the album artist, then the
performer; the licence to the copyright notice. Values are whitespace-collapsed and cut to the
catalogue's limit here; ``app.core.text`` cleans them further when they are stored.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import mutagen

from app.core.text import MAX_TITLE_CHARS as MAX_TAG_CHARS

log = logging.getLogger(__name__)


def read_tags(source: Path | bytes) -> dict[str, str]:
    """Title, artist, album and licence/copyright from a file's tags (missing keys omitted)."""
    try:
        meta = mutagen.File(io.BytesIO(source) if isinstance(source, bytes) else source, easy=True)
    except Exception as exc:  # noqa: BLE001 - mutagen raises many types on odd files
        log.debug("no tags: %s", exc)
        return {}
    if meta is None or not getattr(meta, "tags", None):
        return {}
    tags: dict[str, str] = {}
    for key, names in (
        ("title", ("title",)),
        ("artist", ("artist", "albumartist", "performer")),
        ("album", ("album",)),
        ("license", ("license", "copyright")),
    ):
        for name in names:
            try:
                value = meta.tags.get(name)
            except (KeyError, ValueError):
                value = None
            text = _tag_text(value)
            if text:
                tags[key] = text
                break
    return tags


def _tag_text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, list | tuple):
        value = next((v for v in value if str(v).strip()), None)
        if value is None:
            return None
    text = " ".join(str(value).split())
    return text[:MAX_TAG_CHARS] or None
