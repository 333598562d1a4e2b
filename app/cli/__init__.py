"""The single ``photoscore`` command: train, evaluate, predict, index, serve, soundtrack."""

from __future__ import annotations

import argparse
import sys

from app.core.logs import configure_logging


def build_parser() -> argparse.ArgumentParser:
    from app.cli.model import add_model_parsers
    from app.cli.retrieval_eval import add_retrieval_parser
    from app.cli.serve import add_serve_parser
    from app.cli.soundtrack import add_soundtrack_parser
    from indexer.cli import add_index_parser

    parser = argparse.ArgumentParser(prog="photoscore", description="Image-to-music recommendation by emotion.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    add_model_parsers(sub)
    add_index_parser(sub)
    add_retrieval_parser(sub)
    add_serve_parser(sub)
    add_soundtrack_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(verbose=args.verbose)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("photoscore: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
