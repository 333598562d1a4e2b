"""One cleaning and length policy for catalogue text, shared by ``POST /tracks`` and ``photoscore index``.

Titles, artists, albums and licences come from strangers (form fields, file tags, file names,
CSV manifests, LICENSE files). Whatever the source, the stored text is NFC-normalised, has no
control characters (C0/C1: NUL breaks PostgreSQL, ESC and BEL drive terminals), no bidi
embeddings/overrides/isolates (``"\\u202egnp.wav"`` displays as ``"vaw.png"``), its whitespace
collapsed to single spaces, trimmed, and fits the same limits. Text with nothing visible left
(only zero-width or other invisible characters) counts as absent, so the caller falls back as
for a missing value (tags, then the file name, then "Untitled").
"""

from __future__ import annotations

import unicodedata

# The catalogue's columns are VARCHAR(512) for these; a licence is TEXT, capped for the page.
MAX_TITLE_CHARS = 512
MAX_ARTIST_CHARS = 512
MAX_ALBUM_CHARS = 512
MAX_LICENSE_CHARS = 2000
MAX_FILE_NAME_TITLE_CHARS = 200  # a title derived from a file name
MAX_QUERY_CHARS = 200

LIMITS = {
    "title": MAX_TITLE_CHARS,
    "artist": MAX_ARTIST_CHARS,
    "album": MAX_ALBUM_CHARS,
    "license": MAX_LICENSE_CHARS,
}

# Bidi embeddings, overrides and isolates (U+202A..U+202E, U+2066..U+2069).
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Characters that draw nothing although their category is not "format" or "separator":
# combining grapheme joiner, variation selectors, Hangul fillers, Mongolian free variation selectors.
_INVISIBLE = frozenset(
    "\u034f\u115f\u1160\u3164\uffa0\u180b\u180c\u180d\u180e\u180f" + "".join(chr(c) for c in range(0xFE00, 0xFE10))
)


def _dropped(ch: str) -> bool:
    return unicodedata.category(ch) in ("Cc", "Cs") or ch in BIDI_CONTROLS


def _visible(ch: str) -> bool:
    return not (unicodedata.category(ch)[0] in "CZ" or ch in _INVISIBLE or 0xE0000 <= ord(ch) <= 0xE0FFF)


def clean_text(value: str | None, limit: int = MAX_TITLE_CHARS) -> str | None:
    """``value`` under the policy above, at most ``limit`` characters; None when nothing visible is left."""
    if value is None:
        return None
    text = unicodedata.normalize("NFC", str(value))
    # Control characters go; tabs and line breaks become spaces before whitespace is collapsed.
    text = "".join(" " if ch.isspace() else ch for ch in text if ch.isspace() or not _dropped(ch))
    text = " ".join(text.split())[:limit].strip()
    if not any(_visible(ch) for ch in text):
        return None
    return text


def clean_field(name: str, value: str | None) -> str | None:
    """``clean_text`` with the limit of catalogue field ``name`` (title, artist, album, license)."""
    return clean_text(value, LIMITS[name])


def first_clean(name: str, *candidates: str | None) -> str | None:
    """The first candidate that is still visible text after cleaning (the metadata fallback chain)."""
    for value in candidates:
        text = clean_field(name, value)
        if text is not None:
            return text
    return None
