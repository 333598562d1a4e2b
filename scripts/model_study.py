"""Backbone comparison and loss ablation (Table 4) on the validation split.

Every variant trains on the same cached data and split with the same step budget as
``configs/default.yaml`` overridden by the variant; results land in ``runs/study`` and a
Markdown table is printed for the model card. Usage:
    python scripts/model_study.py [--epochs N] [--steps N] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from model.checkpoint import read_meta
from model.config import load_config
from model.train import train

VARIANTS: dict[str, list[str]] = {
    "compact+affect (all losses)": [],
    "ablation: sim": ["loss=sim"],
    "ablation: sim+cfr": ["loss=sim+cfr"],
    "ablation: sim+cfr+cfm": ["loss=sim+cfr+cfm"],
    "ablation: sim+va": ["loss=sim+va"],
    "compact": ["model.affect_features=false"],
    "mobilenet_v3_small": [
        "model.image_backbone=mobilenet_v3_small",
        "model.music_backbone=mobilenet_v3_small",
        "model.affect_features=false",
    ],
    "paper-resnet50-resnet18": [
        "model.image_backbone=resnet50",
        "model.music_backbone=resnet18",
        "model.affect_features=false",
    ],
}
COLUMNS = [
    "sim_mse",
    "ndcg@10",
    "map@10",
    "recall@10",
    "image_valence_r",
    "image_arousal_r",
    "music_valence_r",
    "music_arousal_r",
    "real_audio_valence_auc",
    "real_audio_arousal_auc",
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/default.yaml")
    ap.add_argument("--out", default="runs/study")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--only", nargs="*")
    args = ap.parse_args()
    out = Path(args.out)
    results = json.loads((out / "results.json").read_text()) if (out / "results.json").is_file() else {}
    for name, overrides in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        run = out / name.replace(" ", "_").replace(":", "").replace("+", "-").replace("(", "").replace(")", "")
        cfg = load_config(
            Path(args.config),
            overrides
            + [
                f"optim.epochs={args.epochs}",
                f"optim.steps_per_epoch={args.steps}",
                f"optim.step_size={max(1, args.epochs // 2)}",
            ],
        )
        t0 = time.perf_counter()
        ckpt = train(cfg, run, progress=False)
        meta = read_meta(ckpt)
        results[name] = {
            "val": meta.metrics["val"],
            "best_epoch": meta.metrics["epoch"],
            "train_seconds": time.perf_counter() - t0,
            "checkpoint_mb": ckpt.stat().st_size / 2**20,
        }
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(results, indent=2))
        print(name, json.dumps({k: round(results[name]["val"].get(k, float("nan")), 4) for k in COLUMNS}), flush=True)
    print("| variant | " + " | ".join(COLUMNS) + " | train s | MB |")
    print("|---" * (len(COLUMNS) + 3) + "|")
    for name, r in results.items():
        cells = " | ".join(f"{r['val'][k]:.3f}" if k in r["val"] else "-" for k in COLUMNS)
        print(f"| {name} | {cells} | {r['train_seconds']:.0f} | {r['checkpoint_mb']:.1f} |")


if __name__ == "__main__":
    main()
