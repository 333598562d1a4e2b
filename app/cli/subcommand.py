"""How a ``photoscore`` sub-command registers itself on the command's sub-parsers."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def add_subcommand(
    subparsers: Any, name: str, *, help: str, doc: str | None, handler: Callable[[argparse.Namespace], int]
) -> argparse.ArgumentParser:
    """The ``name`` sub-command: ``help`` is its line in ``photoscore --help``, ``doc`` (its module's
    docstring) its own ``--help`` text as written, ``handler`` what runs with the parsed arguments."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name, help=help, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.set_defaults(handler=handler)
    return parser
