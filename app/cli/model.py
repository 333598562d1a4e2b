"""Command-line parsers for the model: train, export, evaluate, predict."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _default_checkpoint() -> Path:
    from app.core.settings import Settings

    return Settings().checkpoint


def _train(args: argparse.Namespace) -> int:
    from model.config import load_config
    from model.train import train

    try:
        cfg = load_config(args.config, args.set)
    except (OSError, ValueError) as exc:
        print(f"photoscore train: {exc}", file=sys.stderr)
        return 2
    path = train(cfg, args.out, progress=not args.quiet)
    print(f"checkpoint: {path}")
    return 0


def _export(args: argparse.Namespace) -> int:
    try:
        from model.export import export_onnx
    except ImportError as exc:
        print(
            f"photoscore export: needs PyTorch ({exc.name} missing): pip install 'photoscore[train]'", file=sys.stderr
        )
        return 2
    checkpoint = args.checkpoint or _default_checkpoint()
    try:
        paths = export_onnx(checkpoint)
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"photoscore export: {exc}", file=sys.stderr)
        return 2
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from model.evaluate import evaluate

    try:
        evaluate(
            args.checkpoint or _default_checkpoint(),
            args.images,
            args.music,
            args.split,
            args.json,
            args.device,
            not args.quiet,
        )
    except (OSError, ValueError) as exc:
        print(f"photoscore evaluate: {exc}", file=sys.stderr)
        return 2
    return 0


def _predict(args: argparse.Namespace) -> int:
    from model.predict import run

    try:
        return run(args.checkpoint or _default_checkpoint(), args.files, args.hop, args.device)
    except (OSError, ValueError) as exc:
        print(f"photoscore predict: {exc}", file=sys.stderr)
        return 2


def add_model_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a CDCML model from a config file")
    p.add_argument("--config", type=Path, help="YAML or JSON training config (defaults: the paper's)")
    p.add_argument("--out", type=Path, required=True, help="run directory (checkpoint, state, history)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config value")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler=_train)

    p = sub.add_parser(
        "export", help="write a checkpoint's ONNX graphs beside it (what serving and indexing run; needs PyTorch)"
    )
    p.add_argument("--checkpoint", type=Path, help="default: the shipped model")
    p.set_defaults(handler=_export)

    p = sub.add_parser("evaluate", help="test-split metrics for a checkpoint and every baseline")
    p.add_argument("--checkpoint", type=Path, help="default: the shipped model")
    p.add_argument(
        "--images", required=True, help="image data set folder, data root or manifest (comma-separated list allowed)"
    )
    p.add_argument(
        "--music", required=True, help="music data set folder, data root or manifest (comma-separated list allowed)"
    )
    p.add_argument("--split", default="test", choices=["train", "val", "test", "all"])
    p.add_argument("--json", type=Path, help="also write the results as JSON")
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(handler=_evaluate)

    p = sub.add_parser("predict", help="valence/arousal for image and audio files (JSON lines)")
    p.add_argument("--checkpoint", type=Path, help="default: the shipped model")
    p.add_argument("--hop", type=float, default=2.0, help="seconds between audio clips")
    p.add_argument("--device", default="auto")
    p.add_argument("files", nargs="+", type=Path)
    p.set_defaults(handler=_predict)
