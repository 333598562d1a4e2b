"""Measure mood steering and list variety on a real catalogue (issue 13 figures).

For held-out photos (the checkpoint's test split of OASIS + Emotion6, as `photo_dependence.py`
picks them) this runs the service's own search (`LiveIndex.search`, defaults of /recommend:
max_per_artist 2, dedupe on) and reports:

* steering: mean predicted valence / arousal of the n returned songs without a shift and with
  each mood word, the mean per-photo change and the share of photos where it moved the right way;
* variety: over the first ``--variety-photos`` photos, how many distinct songs take first place
  (plain ranking and defaults), with ``seed`` 1..3, and the largest share one song takes.

    python scripts/steer_variety.py --database-url sqlite:///var/photoscore.db --index-dir var/index \\
        --images ../shared/data/oasis,../shared/data/emotion6 [--photos 120] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from app.core.db import make_engine, make_session_factory
from app.core.live_index import LiveIndex
from app.core.ranking import parse_moods, total_shift
from app.core.settings import DEFAULT_CHECKPOINT
from app.services.ranking import Query, Ranker, SearchOptions
from model.datasets import load_source
from model.inference import Matcher
from model.prepare import SPLITS, assign_split

MOODS = ["happier", "sadder", "calmer", "more energetic"]


def _photos(matcher: Matcher, images: str, split: str, limit: int) -> list:
    items, _ = load_source(images, "image")
    train = matcher.meta.train_config
    if split != "all":
        ids = np.array([f"{it.source}:{it.item_id}" for it in items])
        parts = assign_split(ids, train.get("data", {}).get("split", [0.8, 0.1, 0.1]), int(train.get("seed", 0)))
        items = [it for it, s in zip(items, parts, strict=True) if s == SPLITS[split]]
    rng = np.random.default_rng(0)  # a fixed, varied sample (both data sets, all moods)
    order = rng.permutation(len(items))[:limit]
    return [items[i] for i in sorted(order)]


def measure(
    matcher: Matcher,
    live: LiveIndex,
    photos: list,
    n: int,
    k: int,
    variety_photos: int,
    moods: list[str] = MOODS,
    seeds: tuple[int, ...] = (1, 2, 3),
) -> dict:
    embs, vas = [], []
    for start in range(0, len(photos), 32):
        batch = photos[start : start + 32]
        e, v = matcher.embed_images([Image.open(it.path).convert("RGB") for it in batch])
        embs.extend(e)
        vas.extend(np.clip(v, 0, 1))

    def mean_va(hits) -> np.ndarray:
        return np.mean([[h.valence, h.arousal] for h in hits], axis=0)

    cache: dict[tuple[int, SearchOptions], list] = {}
    ranker = Ranker(live, matcher, k)

    def search(i: int, opts: SearchOptions) -> list:
        if (i, opts) not in cache:
            cache[(i, opts)] = ranker.page(Query(embs[i], vas[i]), opts).results
        return cache[(i, opts)]

    defaults = SearchOptions(n=n, max_per_artist=2, dedupe=True)
    base = np.array([mean_va(search(i, defaults)) for i in range(len(embs))])
    steering: dict[str, dict] = {"none": {"mean_valence": round(float(base[:, 0].mean()), 4)}}
    steering["none"]["mean_arousal"] = round(float(base[:, 1].mean()), 4)
    for word in moods:
        shift = total_shift(0.0, 0.0, parse_moods([word]))
        opts = SearchOptions(n=n, max_per_artist=2, dedupe=True, shift=shift)
        got = np.array([mean_va(search(i, opts)) for i in range(len(embs))])
        axis = 0 if shift[0] else 1
        sign = np.sign(shift[axis])
        delta = got[:, axis] - base[:, axis]
        steering[word] = {
            "mean_valence": round(float(got[:, 0].mean()), 4),
            "mean_arousal": round(float(got[:, 1].mean()), 4),
            "axis": "valence" if axis == 0 else "arousal",
            "mean_change": round(float(delta.mean()), 4),
            "share_moved_right_way": round(float(np.mean(sign * delta > 1e-9)), 3),
            "share_unchanged": round(float(np.mean(np.abs(delta) <= 1e-9)), 3),
        }
    variety: dict[str, dict] = {}
    sample = range(min(variety_photos, len(embs)))
    configs = {
        "plain (no cap, no dedupe)": SearchOptions(n=n),
        "defaults (max_per_artist 2, dedupe)": defaults,
        **{f"defaults + seed {s}": SearchOptions(n=n, max_per_artist=2, dedupe=True, seed=s) for s in seeds},
    }
    for name, opts in configs.items():
        tops = [search(i, opts) for i in sample]
        first = Counter(t[0].track_id for t in tops if t)
        artists = [max(Counter(live.track_info[h.track_id].artist for h in t).values()) for t in tops if t]
        variety[name] = {
            "distinct_first_place": len(first),
            "most_frequent_first_share": round(first.most_common(1)[0][1] / len(tops), 3),
            "distinct_songs_in_any_top_n": len({h.track_id for t in tops for h in t}),
            "max_songs_by_one_artist_in_a_list": int(max(artists)),
        }
    return {
        "photos": len(photos),
        "variety_photos": len(sample),
        "photos_by_source": dict(Counter(it.source for it in photos)),
        "catalogue_tracks": live.n_tracks,
        "n": n,
        "k": k,
        "steering": steering,
        "variety": variety,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--database-url", required=True)
    p.add_argument("--index-dir", type=Path, required=True)
    p.add_argument("--images", required=True, help="image data sets, as for `photoscore evaluate`")
    p.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    p.add_argument("--split", choices=[*SPLITS, "all"], default="test")
    p.add_argument("--photos", type=int, default=120)
    p.add_argument("--variety-photos", type=int, default=50)
    p.add_argument("-n", type=int, default=10)
    p.add_argument("-k", type=int, default=256)
    p.add_argument("--moods", default=",".join(MOODS), help="comma-separated mood words to measure")
    p.add_argument("--seeds", default="1,2,3", help="comma-separated seeds for the variety figures")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

    matcher = Matcher.load(args.checkpoint, device="cpu")
    photos = _photos(matcher, args.images, args.split, args.photos)
    if not photos:
        print(f"steer_variety: no {args.split} photos in {args.images}", file=sys.stderr)
        return 1
    factory = make_session_factory(make_engine(args.database_url))
    live = LiveIndex(factory, checkpoint_hash=matcher.checkpoint_hash, dim=matcher.dim, index_dir=args.index_dir)
    live.load()
    if live.n_tracks == 0:
        print("steer_variety: the catalogue has no track indexed with this checkpoint", file=sys.stderr)
        return 1
    result = {
        "checkpoint": matcher.version,
        "split": args.split,
        **measure(
            matcher,
            live,
            photos,
            args.n,
            args.k,
            args.variety_photos,
            [m for m in args.moods.split(",") if m],
            tuple(int(x) for x in args.seeds.split(",") if x),
        ),
    }
    text = json.dumps(result, indent=1, ensure_ascii=False)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
