"""Write checkpoints of the first k members of an ensemble run, for k in ``--keep`` (how much each
added member is worth, with no run-to-run difference between the rows: they are the same members),
and of single members, for j in ``--alone`` (several draws of one recipe from one run).

A subset is a real checkpoint of its own: the members' weights are copied, then its VA calibration
and query bank are fitted again exactly as training fits them (validation split, seeded bank), and
its ONNX graphs are exported and checked. Score each with ``photoscore evaluate-retrieval``.

    python scripts/member_study.py --run runs/e4 --keep 1 2 --alone 2 --out runs/e4-subsets
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch

from model.checkpoint import load_checkpoint, save_checkpoint
from model.config import load_config
from model.export import export_onnx
from model.networks import CDCML
from model.train import Trainer, build_train_data


def subset(model: CDCML, members: Sequence[int]) -> dict[str, torch.Tensor]:
    """The state of the given members (0-based; backbones included), renumbered 0.. in that order."""
    out = {}
    member_lists = ("members", "similarity_heads", "va_heads")
    for key, value in model.state_dict().items():
        if key in ("query_bank", "image_va_affine", "music_va_affine"):
            continue
        parts = key.split(".")
        at = next((i + 1 for i, p in enumerate(parts[:-1]) if p in member_lists), None)
        if at is None:
            out[key] = value
        elif int(parts[at]) in members:
            parts[at] = str(list(members).index(int(parts[at])))
            out[".".join(parts)] = value
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="an ensemble run's folder (config.json, model.safetensors)")
    ap.add_argument("--keep", type=int, nargs="*", default=[], help="write the first k members, for each k")
    ap.add_argument("--alone", type=int, nargs="*", default=[], help="write member j (1-based) alone, for each j")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    full, meta = load_checkpoint(args.run / "model.safetensors")
    cfg = load_config(args.run / "config.json")
    data = build_train_data(cfg, progress=False)
    chosen = [(f"members-{k}", list(range(k))) for k in args.keep] + [(f"member-{j}", [j - 1]) for j in args.alone]
    for name, members in chosen:
        if not members or not all(0 <= j < full.cfg.members for j in members):
            raise SystemExit(f"{name}: the run has {full.cfg.members} members")
        sub = replace(cfg, model=replace(cfg.model, members=len(members)))
        out = args.out / name
        trainer = Trainer(sub, data, out, progress=False)
        missing, unexpected = trainer.model.load_state_dict(subset(full, members), strict=False)
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
                {
                    "members": [j + 1 for j in members],
                    "checkpoint": str(path),
                    **{k: v for k, v in val.items() if isinstance(v, float)},
                }
            )
        )


if __name__ == "__main__":
    main()
