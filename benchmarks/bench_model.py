"""Model forward time per image and per clip, for each backbone offered, on this CPU.

Each backbone builds a full CDCML branch as a checkpoint would (backbone + affect features +
projection + L2 norm, embed_dim 128, random weights: timing does not depend on the values)
and is timed under ``torch.inference_mode`` at batch 1 and batch 32 with torch's default
intra-op threads (one per core), and at batch 1 with one thread (what a serving process with
other busy threads gets reliably). Images at the shipped model's 96 px and the paper's 224 px; clips are the
[3, 193, 87] network input. The clip-side preprocessing (standardise + deltas,
``FeatureStats.to_network_input``) is timed on its own: the indexer pays it too.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import Context, fmt, loadavg, log, repeat, stats_ms
from benchmarks.records import ForwardTiming, ModelResults, ModelRow

BACKBONES = ("compact", "mobilenet_v3_small", "resnet18", "resnet50")
SHIPPED: dict[str, Any] = {"compact_width": 16, "embed_dim": 128, "affect_features": True}


def _time_forward(fn: Any, batch: Any, *, quick: bool) -> dict[str, Any]:
    """The fields of a ``ForwardTiming`` for ``fn(batch)``."""
    import torch

    with torch.inference_mode():
        times = repeat(lambda: fn(batch), min_reps=2 if quick else 3, min_seconds=0.5 if quick else 1.5)
    s = stats_ms(times)
    n = batch.shape[0]
    return {
        "batch": n,
        "load_1m": loadavg()[0],
        "ms_per_batch": s.p50,
        "ms_per_item": s.p50 / n,
        "best_ms_per_item": s.min / n,
        "items_per_s": 1000 * n / s.p50,
    }


def run(ctx: Context) -> ModelResults:
    import torch

    from model.features import N_FEATURES, FeatureStats
    from model.networks import CDCML, ModelConfig

    torch.manual_seed(0)
    default_threads = torch.get_num_threads()
    backbones = ("compact", "mobilenet_v3_small") if ctx.quick else BACKBONES
    sizes = (96,) if ctx.quick else (96, 224)
    batches = (1, 8) if ctx.quick else (1, 32)
    thread_counts = sorted({1, default_threads})
    rows: list[ModelRow] = []
    try:
        for name in backbones:
            cfg = ModelConfig(image_backbone=name, music_backbone=name, image_size=96, **SHIPPED)
            model = CDCML(cfg).eval()
            params = sum(p.numel() for p in model.image_branch.parameters())
            mparams = sum(p.numel() for p in model.music_branch.parameters())
            for threads in thread_counts:
                torch.set_num_threads(threads)
                common: dict[str, Any] = {"backbone": name, "threads": threads}
                for size in sizes:
                    for b in batches:
                        if threads != default_threads and b > 1:
                            continue  # one thread matters for serving (batch 1) only
                        x = torch.randn(b, 3, size, size)
                        r = _time_forward(model.embed_image, x, quick=ctx.quick)
                        row = ModelRow(**common, modality="image", input=f"3x{size}x{size}", params_m=params / 1e6, **r)
                        rows.append(row)
                        log(f"model {name} image {size}px batch {b}, {threads} thr: {fmt(row.ms_per_item, 2)} ms/image")
                for b in batches:
                    if threads != default_threads and b > 1:
                        continue
                    x = torch.randn(b, 3, N_FEATURES, 87)
                    r = _time_forward(model.embed_music, x, quick=ctx.quick)
                    row = ModelRow(**common, modality="clip", input=f"3x{N_FEATURES}x87", params_m=mparams / 1e6, **r)
                    rows.append(row)
                    log(f"model {name} clip batch {b}, {threads} thr: {fmt(row.ms_per_item, 2)} ms/clip")
            del model
    finally:
        torch.set_num_threads(default_threads)
    # The indexer embeds a track's clips in batches of Matcher.batch_size: per-clip cost by batch size.
    sweep = []
    cfg = ModelConfig(image_backbone="compact", music_backbone="compact", image_size=96, **SHIPPED)
    model = CDCML(cfg).eval()
    for b in (1, 8, 32, 128, 256):
        x = torch.randn(b, 3, N_FEATURES, 87)
        timing = ForwardTiming(**_time_forward(model.embed_music, x, quick=True))
        sweep.append(timing)
        log(f"model compact clip batch {b}: {fmt(timing.ms_per_item, 2)} ms/clip")
    del model
    stats = FeatureStats(mean=np.zeros(N_FEATURES, np.float32), std=np.ones(N_FEATURES, np.float32))
    feats = np.random.default_rng(0).standard_normal((256, N_FEATURES, 87)).astype(np.float32)
    prep = stats_ms(repeat(lambda: stats.to_network_input(feats), min_reps=3, min_seconds=1.0))
    return ModelResults(
        rows=rows,
        clip_batch_sweep=sweep,
        clip_preprocess_ms_per_clip=prep.p50 / len(feats),
        threads=default_threads,
    )


def print_table(res: ModelResults) -> None:
    print(f"\nModel forward on CPU (torch default {res.threads} threads), ms per item (median, best)")
    print(
        f"{'backbone':>20} {'modality':>8} {'input':>12} {'batch':>5} {'thr':>3} {'ms/item':>9} {'best':>9} "
        f"{'items/s':>9} {'params M':>8}"
    )
    for r in res.rows:
        print(
            f"{r.backbone:>20} {r.modality:>8} {r.input:>12} {r.batch:>5} {r.threads:>3} "
            f"{fmt(r.ms_per_item, 2):>9} {fmt(r.best_ms_per_item, 2):>9} "
            f"{fmt(r.items_per_s):>9} {fmt(r.params_m, 2):>8}"
        )
    print(f"clip preprocessing (standardise + deltas): {fmt(res.clip_preprocess_ms_per_clip, 3)} ms/clip")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    ctx = Context(Path("."), "", "n/a", Path("."), quick=args.quick)
    print_table(run(ctx))


if __name__ == "__main__":
    main()
