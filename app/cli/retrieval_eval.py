"""``photoscore evaluate-retrieval``: end-to-end model selection on held-out photos and songs.

Per-modality VA figures do not say whether the shipped path ranks songs well, nor whether one song
takes the first place for every photo (hubness). So, for each checkpoint, the held-out real songs
(Panda-4Q recordings of the training split's test part) are indexed with the real indexer into a
temporary catalogue, the held-out rated photos are decoded and embedded the way the service does
it, and the ranking comes from the service's own ``Ranker`` (FAISS + learned rerank).
Baselines rank the same catalogue by predicted valence-arousal (per track and per clip) and at
random. Every figure has a paired bootstrap 95 % interval over photos (the same resamples for every
method), so methods are compared on the same draws.

Beside the pooled figures: per method, the photo-quadrant x music-quadrant mix of the top 10
(where a quadrant's misses go); per checkpoint, an ablation that ranks every catalogue track by
one signal alone (embedding cosine, the learned predictor without query-bank normalisation) next
to VA distance and the shipped path; and an Emotify check (reported, never selected on) that
correlates each unseen Emotify song's mean predicted clip VA with sums of its raw GEMS votes.

The split is recomputed with ``model.prepare.assign_split`` from each checkpoint's stored seed and
fractions; with several checkpoints only items held out by all of them are used, so no compared
model is tested on what it was trained on.

Exit status: 0 after a completed run; 2 with a one-line reason when the checkpoints, data or
options cannot be used.

The evaluation itself lives in ``app.evaluation``; this module is its command line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from app.cli.subcommand import add_subcommand
from app.core.errors import first_line
from app.evaluation.bootstrap import N_BOOT
from app.evaluation.emotify import EMOTIFY_MAX_SONGS
from app.evaluation.split import DEFAULT_IMAGES, DEFAULT_MUSIC


def add_retrieval_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``evaluate-retrieval`` on the ``photoscore`` sub-command parser."""
    p = add_subcommand(
        subparsers,
        "evaluate-retrieval",
        help="end-to-end model selection: index held-out songs, query held-out photos through the service",
        doc=__doc__,
        handler=run_retrieval_eval,
    )
    p.add_argument("--checkpoint", type=Path, help="default: PHOTOSCORE_CHECKPOINT (the shipped model)")
    p.add_argument(
        "--compare", type=Path, action="append", default=[], metavar="CKPT", help="another checkpoint (repeatable)"
    )
    p.add_argument("--images", default=",".join(DEFAULT_IMAGES), help="image sources, comma-separated")
    p.add_argument("--music", default=",".join(DEFAULT_MUSIC), help="music sources (audio items only), comma-separated")
    p.add_argument("--data-root", type=Path, help="where bare source names live (default: PHOTOSCORE_DATASET_DIR)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--limit-images", type=int, metavar="N", help="seeded, quadrant-stratified subsample of photos")
    p.add_argument("--limit-songs", type=int, metavar="N", help="seeded, quadrant-stratified subsample of songs")
    p.add_argument("--seed", type=int, default=0, help="subsample, random baseline and bootstrap seed")
    p.add_argument("--bootstrap", type=int, default=N_BOOT, metavar="N", help="bootstrap resamples over photos")
    p.add_argument("--workers", type=int, default=1, help="indexer decoding processes (0: in this process)")
    p.add_argument("--device", help="'auto', 'cpu' or 'cuda[:N]' (default: PHOTOSCORE_DEVICE)")
    p.add_argument("--workdir", type=Path, help="keep the catalogues here (must be empty); default: a temp folder")
    p.add_argument("--json", type=Path, metavar="OUT", help="write everything, per-photo top 10s included")
    emotify = p.add_mutually_exclusive_group()
    emotify.add_argument(
        "--emotify", type=Path, metavar="DIR", help="Emotify folder to check (default: <data-root>/emotify if present)"
    )
    emotify.add_argument("--no-emotify", action="store_true", help="skip the Emotify check")
    p.add_argument(
        "--emotify-max-songs",
        type=int,
        default=EMOTIFY_MAX_SONGS,
        metavar="N",
        help="seeded, genre-stratified sample of the held-out Emotify songs",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def run_retrieval_eval(args: argparse.Namespace) -> int:
    """The ``evaluate-retrieval`` handler: 0 on success, 2 with a one-line reason on bad input."""
    from pydantic import ValidationError

    from app.core.settings import Settings
    from app.evaluation import RetrievalEvalError, evaluate_retrieval, format_report
    from model.meta import CheckpointError

    try:
        settings = Settings()
        if args.workers < 0:
            raise RetrievalEvalError("--workers must be 0 or more")
        started = time.perf_counter()
        result = evaluate_retrieval(
            [args.checkpoint or settings.checkpoint, *args.compare],
            images=_names(args.images),
            music=_names(args.music),
            data_root=args.data_root,
            split=args.split,
            limit_images=args.limit_images,
            limit_songs=args.limit_songs,
            seed=args.seed,
            n_boot=args.bootstrap,
            workers=args.workers,
            device=args.device,
            workdir=args.workdir,
            settings=settings,
            progress=False if args.quiet else None,
            emotify=False if args.no_emotify else (args.emotify if args.emotify is not None else True),
            emotify_max_songs=args.emotify_max_songs,
        )
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(result, indent=1) + "\n")
    except (RetrievalEvalError, CheckpointError, OSError, ValueError, ValidationError) as exc:
        print(f"photoscore evaluate-retrieval: error: {first_line(exc)}", file=sys.stderr)
        return 2
    print(format_report(result))
    print(f"\nwall time {time.perf_counter() - started:.1f} s" + (f"; JSON: {args.json}" if args.json else ""))
    return 0


def _names(text: str) -> list[str]:
    return [n.strip() for n in str(text).split(",") if n.strip()]
