"""Exception text for one-line reasons (CLI errors, HTTP details, per-file failures).

Messages from decoders, drivers and SQLAlchemy span lines and can echo whole payloads; every
place that shows one to a person goes through these two, so they read the same everywhere.
"""

from __future__ import annotations


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of ``exc``'s message, at most ``limit`` characters (SQLAlchemy appends the
    SQL and its parameters below it)."""
    lines = str(exc).strip().splitlines()
    return lines[0][:limit] if lines else type(exc).__name__


def one_line(exc: object, limit: int = 200) -> str:
    """``exc``'s message with its whitespace collapsed, cut to ``limit`` characters."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
