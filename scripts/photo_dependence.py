"""How much do a catalogue's recommendations depend on the photo?

NDCG on the labelled test split says whether the model ranks rated clips well; it does not say
whether a real catalogue gives different photos different songs. This runs the service's own
search (FAISS top-K, similarity-predictor rerank, best clip per track) for every test-split
photo against a catalogue built by `photoscore index`, and prints:

* overlap: mean pairwise Jaccard of the top-n track sets, distinct tracks in any top n, distinct
  top-1 tracks and the share of the most frequent one (1.0 would mean one song for every photo);
* direction: Spearman correlation between a photo's valence / arousal (predicted, and human
  ratings) and the mean predicted valence / arousal of its n recommended tracks.

    python scripts/photo_dependence.py --database-url sqlite:///var/photoscore.db \\
        --index-dir var/index --images ../shared/data/oasis,../shared/data/emotion6 [--json out.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.stats import spearmanr
from sqlalchemy import select

from app.core.db import make_engine, make_session_factory
from app.core.live_index import LiveIndex
from app.core.models import Track
from app.core.settings import DEFAULT_CHECKPOINT
from app.services.ranking import Query, Ranker, SearchOptions
from model.datasets import load_source
from model.inference import Matcher
from model.prepare import SPLITS, assign_split


def _std(x: np.ndarray) -> list[float]:
    return [round(float(v), 3) for v in np.asarray(x, np.float64).std(0)]


def _rho(a: np.ndarray, b: np.ndarray) -> float:
    return round(float(spearmanr(a, b).statistic), 3)


def measure(matcher: Matcher, live: LiveIndex, photos: list, track_va: dict[int, tuple[float, float]], n: int, k: int):
    tops: list[list[int]] = []
    ranker = Ranker(live, matcher, k)
    pred, human, rec = [], [], []
    for start in range(0, len(photos), 32):
        batch = photos[start : start + 32]
        embs, va = matcher.embed_images([Image.open(it.path).convert("RGB") for it in batch])
        for item, emb, v in zip(batch, embs, va, strict=True):
            ids = [h.track_id for h in ranker.page(Query(emb), SearchOptions(n=n, spare=0)).results]
            tops.append(ids)
            pred.append(v)
            human.append((item.valence, item.arousal))
            rec.append(np.mean([track_va[t] for t in ids], axis=0))
    pred, human, rec = np.array(pred), np.array(human), np.array(rec)
    jaccard = [len(set(a) & set(b)) / len(set(a) | set(b)) for a, b in itertools.combinations(tops, 2)]
    top1 = Counter(t[0] for t in tops)
    return {
        "photos": len(tops),
        "catalogue_tracks": live.n_tracks,
        "n": n,
        "k": k,
        "mean_pairwise_jaccard": round(float(np.mean(jaccard)), 3),
        "distinct_tracks_in_any_top_n": len(set(itertools.chain(*tops))),
        "distinct_top1": len(top1),
        "most_frequent_top1_share": round(top1.most_common(1)[0][1] / len(tops), 3),
        "spearman_predicted_valence": _rho(pred[:, 0], rec[:, 0]),
        "spearman_predicted_arousal": _rho(pred[:, 1], rec[:, 1]),
        "spearman_human_valence": _rho(human[:, 0], rec[:, 0]),
        "spearman_human_arousal": _rho(human[:, 1], rec[:, 1]),
        "catalogue_track_va_std": _std(np.array(list(track_va.values()))),
        "predicted_image_va_std": _std(pred),
        "recommended_va_std": _std(rec),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--database-url", required=True)
    p.add_argument("--index-dir", type=Path, required=True)
    p.add_argument("--images", required=True, help="image data sets, as for `photoscore evaluate`")
    p.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    p.add_argument("--split", choices=[*SPLITS, "all"], default="test")
    p.add_argument("-n", type=int, default=10)
    p.add_argument("-k", type=int, default=256, help="FAISS candidates reranked (the service's default)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

    matcher = Matcher.load(args.checkpoint, device="cpu")
    train = matcher.meta.train_config
    items, _ = load_source(args.images, "image")
    if args.split != "all":
        ids = np.array([f"{it.source}:{it.item_id}" for it in items])
        split = assign_split(ids, train.get("data", {}).get("split", [0.8, 0.1, 0.1]), int(train.get("seed", 0)))
        items = [it for it, s in zip(items, split, strict=True) if s == SPLITS[args.split]]
    if not items:
        print(f"photo_dependence: no {args.split} photos in {args.images}", file=sys.stderr)
        return 1
    factory = make_session_factory(make_engine(args.database_url))
    with factory() as session:
        track_va = {t.id: (t.valence, t.arousal) for t in session.scalars(select(Track))}
    live = LiveIndex(factory, checkpoint_hash=matcher.checkpoint_hash, dim=matcher.dim, index_dir=args.index_dir)
    live.load()
    if live.n_tracks == 0:
        print("photo_dependence: the catalogue has no track indexed with this checkpoint", file=sys.stderr)
        return 1
    figures = measure(matcher, live, items, track_va, args.n, args.k)
    result = {"checkpoint": matcher.version, "split": args.split, **figures}
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
