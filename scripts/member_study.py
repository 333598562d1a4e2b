"""Write checkpoints of the first k members of an ensemble run, for k in ``--keep`` (how much each
added member is worth, with no run-to-run difference between the rows: they are the same members).

A subset is a real checkpoint of its own: the members' weights are copied, then its VA calibration
and query bank are fitted again exactly as training fits them (validation split, seeded bank), and
its ONNX graphs are exported and checked. Score each with ``photoscore evaluate-retrieval``.

    python scripts/member_study.py --run runs/e4 --keep 1 2 --out runs/e4-subsets
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import replace
from pathlib import Path

import torch

from model.checkpoint import load_checkpoint, save_checkpoint
from model.config import load_config
from model.export import export_onnx
from model.networks import CDCML
from model.train import Trainer, build_train_data


def subset(model: CDCML, keep: int) -> dict[str, torch.Tensor]:
    """The state of the first ``keep`` members (backbones included), in a ``keep``-member layout."""
    out = {}
    member_lists = ("members", "similarity_heads", "va_heads")
    for key, value in model.state_dict().items():
        parts = key.split(".")
        member = next((int(parts[i + 1]) for i, p in enumerate(parts[:-1]) if p in member_lists), None)
        if (member is None or member < keep) and key not in ("query_bank", "image_va_affine", "music_va_affine"):
            out[key] = value
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="an ensemble run's folder (config.json, model.safetensors)")
    ap.add_argument("--keep", type=int, nargs="+", required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    full, meta = load_checkpoint(args.run / "model.safetensors")
    cfg = load_config(args.run / "config.json")
    data = build_train_data(cfg, progress=False)
    for keep in args.keep:
        if not 1 <= keep <= full.cfg.members:
            raise SystemExit(f"--keep {keep}: the run has {full.cfg.members} members")
        sub = replace(cfg, model=replace(cfg.model, members=keep))
        out = args.out / f"members-{keep}"
        trainer = Trainer(sub, data, out, progress=False)
        missing, unexpected = trainer.model.load_state_dict(subset(full, keep), strict=False)
        assert not unexpected and set(missing) <= {"query_bank", "image_va_affine", "music_va_affine"}, missing
        calibration = trainer.calibrate()
        trainer.fill_query_bank()
        val = trainer.validate()
        out.mkdir(parents=True, exist_ok=True)
        path = out / "model.safetensors"
        save_checkpoint(
            path, trainer.model, trainer.meta({"val": val, "va_calibration": calibration, "from": str(args.run)})
        )
        export_onnx(path)
        print(
            json.dumps(
                {"members": keep, "checkpoint": str(path), **{k: v for k, v in val.items() if isinstance(v, float)}}
            )
        )


if __name__ == "__main__":
    main()
