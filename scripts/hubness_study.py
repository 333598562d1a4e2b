"""Hubness corrections of the track ranking, compared on one split (choose on val, report on test).

The service ranks a photo's candidate tracks by the learned similarity (mean over a track's spread
clips) normalised by the track's scores for a bank of training photos. This study indexes the
split's held-out songs with the real indexer (as ``photoscore evaluate-retrieval`` does), scores
every photo against every track once, and ranks by each correction:

- ``raw``: the similarity itself;
- ``z``: (score - bank mean) / bank std, the querybank normalisation (shipped alone until issue 28);
- ``mean``: score - bank mean;
- ``csls{k}``: score - mean of the track's k best bank scores (CSLS, Lample et al. 2018);
- ``isoft{beta}``: beta * score - logsumexp over the bank of beta * bank score (inverted softmax,
  Smith et al. 2017);
- ``mp``: mutual proximity (Schnitzer et al. 2012) with empirical distributions: the share of bank
  photos the track scores below this photo's score, times the share of tracks this photo scores
  below it;

each with the checkpoint's own bank, with a larger bank of training-split photos and with a bank of
as many photos chosen from that larger one to cover valence-arousal space evenly (``vacover``);
and ``blend{w}``: the z-score minus ``w`` times the photo's predicted VA distance to the track's
mean predicted VA (a learned score steered by the two numbers of nearest-by-VA; the service ranks
by ``blend1/bank64``, ``PHOTOSCORE_RANK_VA_WEIGHT``); ``zblend{w}``: the same with the VA distance
itself standardised per track over the larger bank's photos (a song whose predicted VA sits in the
middle is near every photo; standardised, that nearness no longer lifts it for all). Every track
is scored (the service scores a FAISS candidate pool of 4 x (n + 5) tracks, which on these
catalogues of 40-75 songs is nearly all of them).

``--views`` sees each query photo as served (``service``) or averaged over more views
(test-time augmentation): its mirror image (``mirror``), five 224-px crops of the photo at 256 px
(centre and corners, ``crops``), or both (``crops+mirror``: 12 views). The mean embedding is
L2-normalised again and the VA averaged; bank photos stay single-view, as the service stores them.

    python scripts/hubness_study.py --checkpoint model/default/photoscore-default.safetensors \
        --split val --json docs/hubness-val.json
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

import numpy as np
from scipy.special import logsumexp

from app.core.settings import Settings
from app.evaluation.bootstrap import bootstrap_resamples
from app.evaluation.catalogue import build_catalogue
from app.evaluation.metrics import K, method_metrics, modality_figures
from app.evaluation.service import embed_photos
from app.evaluation.split import DEFAULT_IMAGES, DEFAULT_MUSIC, Photo, load_eval_data, split_spec
from app.services.bank_stats import BANK_CLIPS_PER_TRACK, CLIPS_PER_TRACK, bank_clip_positions
from model.inference import Matcher
from model.meta import read_meta

SHOWN = (
    f"quadrant@{K}",
    f"valence_side@{K}",
    f"arousal_side@{K}",
    "top_first_share",
    "distinct_first",
    f"coverage@{K}",
)


def _spread(n: int, limit: int) -> np.ndarray:
    return np.arange(n) if n <= limit else np.linspace(0, n - 1, limit).round().astype(int)


def track_scores(
    matcher: Matcher, queries: np.ndarray, clips: list[np.ndarray], bank: bool, cosine: bool = False
) -> np.ndarray:
    """[n_queries, n_tracks]: mean similarity (or embedding cosine) over each track's clips (its bank
    clips when ``bank``)."""
    out = np.zeros((len(queries), len(clips)))
    for j, embs in enumerate(clips):
        pick = bank_clip_positions(len(embs)) if bank else _spread(len(embs), CLIPS_PER_TRACK)
        sim = queries @ embs[pick].T if cosine else matcher.similarity_matrix(queries, embs[pick])
        out[:, j] = np.asarray(sim, np.float64).mean(axis=1)
    return out


def corrections(s: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    """Each correction's ranking score from photo scores ``s`` [q, t] and bank scores ``b`` [bank, t]."""
    mu, sd = b.mean(axis=0), np.maximum(b.std(axis=0), 1e-3)
    out = {"z": (s - mu) / sd, "mean": s - mu}
    for k in (5, 10):
        out[f"csls{k}"] = s - np.sort(b, axis=0)[-k:].mean(axis=0)
    for beta in (10.0, 30.0):
        out[f"isoft{beta:g}"] = beta * s - logsumexp(beta * b, axis=0)
    track_side = (b[None, :, :] < s[:, None, :]).mean(axis=1)
    photo_side = (s[:, None, :] < s[:, :, None]).mean(axis=2)  # [q, t]: tracks scored below this one
    out["mp"] = track_side * photo_side
    return out


def view_embeddings(
    matcher: Matcher, photos: list[Photo], settings: Settings, views: str
) -> tuple[np.ndarray, np.ndarray]:
    """Each photo's embedding (mean over its views, L2-normalised) and VA (mean) for ``views``."""
    from app.services.photos import decode_photo, embed_tensors
    from model.image import open_image
    from model.transforms import image_pixels, pixels_to_array

    size = matcher.image_size
    embs, vas = [], []
    for photo in photos:
        data = photo.path.read_bytes()
        tensors = [decode_photo(data, settings.max_image_pixels, size)]  # the served view
        if "crops" in views:
            wide = size * 8 // 7  # 256 px for 224
            big = image_pixels(open_image(data, max_pixels=settings.max_image_pixels, draft_size=wide), wide)
            m = big.shape[-1] - size
            corners = ((m // 2, m // 2), (0, 0), (0, m), (m, 0), (m, m))
            tensors += [pixels_to_array(big[:, y : y + size, x : x + size]) for y, x in corners]
        if "mirror" in views:
            tensors += [np.ascontiguousarray(t[..., ::-1]) for t in tensors]
        e, v = embed_tensors(matcher, tensors)
        mean = np.asarray(e, np.float64).mean(axis=0)
        embs.append(mean / np.linalg.norm(mean))
        vas.append(np.asarray(v, np.float64).mean(axis=0))
    return np.asarray(embs, np.float32), np.asarray(vas, np.float32)


def va_covering(va: np.ndarray, n: int) -> np.ndarray:
    """Indices of ``n`` photos spread evenly over VA space: the photo nearest each cell centre of a
    ``sqrt(n)``-square grid over the photos' VA range, then farthest-point picks to fill up."""
    side = int(np.sqrt(n))
    lo, hi = va.min(axis=0), va.max(axis=0)
    centres = lo + (np.stack(np.meshgrid(np.arange(side), np.arange(side)), -1).reshape(-1, 2) + 0.5) / side * (hi - lo)
    picked: list[int] = []
    for c in centres:
        order = np.argsort(np.linalg.norm(va - c, axis=1))
        picked.append(int(next(i for i in order if i not in picked)))
    while len(picked) < min(n, len(va)):
        d = np.linalg.norm(va[:, None] - va[picked][None], axis=2).min(axis=1)
        picked.append(int(np.argmax(d)))
    return np.sort(np.array(picked))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--split", default="val", choices=("val", "test"))
    ap.add_argument("--data-root", type=Path, default=None)
    ap.add_argument("--bank-size", type=int, default=512, help="training photos in the larger bank")
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--views", choices=("service", "mirror", "crops", "crops+mirror"), default="service")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    settings = Settings()
    root = Path(args.data_root or settings.dataset_dir)
    specs = [split_spec(read_meta(args.checkpoint).train_config)]
    data = load_eval_data(root, DEFAULT_IMAGES, DEFAULT_MUSIC, specs, args.split)
    train = load_eval_data(root, DEFAULT_IMAGES, DEFAULT_MUSIC, specs, "train", limit_images=args.bank_size)
    matcher = Matcher.load(args.checkpoint, "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        cat = build_catalogue(matcher, data.songs, Path(tmp) / "cat", settings, progress=False)
        try:
            snap = cat.live.snapshot()
            tids = [cat.track_of_song[int(s)] for s in cat.songs]
            clips = [c.embeddings for c in snap.track_clips(tids)]
        finally:
            cat.close()
    if args.views == "service":
        emb, pred_va = embed_photos(matcher, data.photos, settings)
    else:
        emb, pred_va = view_embeddings(matcher, data.photos, settings, args.views)
    big_bank, big_bank_va = embed_photos(matcher, train.photos, settings)
    own_bank = np.asarray(matcher.query_bank, np.float32)
    s = track_scores(matcher, emb, clips, bank=False)
    train_va = np.array([[p.valence, p.arousal] for p in train.photos])
    cover = big_bank[va_covering(train_va, len(own_bank))]
    banks = {f"bank{len(own_bank)}": own_bank, f"train{len(big_bank)}": big_bank, f"vacover{len(cover)}": cover}
    cos = track_scores(matcher, emb, clips, bank=False, cosine=True)
    track_va = np.array([np.asarray(v, float) for v in cat.track_va])
    ranked: dict[str, np.ndarray] = {"raw": s, "cosine": cos}
    ranked["va-distance"] = -np.linalg.norm(pred_va[:, None, :] - track_va[None], axis=2)
    bank_d = np.linalg.norm(big_bank_va[:, None, :] - track_va[None], axis=2)
    va_z = (-ranked["va-distance"] - bank_d.mean(axis=0)) / np.maximum(bank_d.std(axis=0), 1e-3)
    for name, bank in banks.items():
        b = track_scores(matcher, bank, clips, bank=True)
        ranked |= {f"{c}/{name}": v for c, v in corrections(s, b).items()}
        bc = track_scores(matcher, bank, clips, bank=True, cosine=True)
        ranked |= {f"cosine-{c}/{name}": v for c, v in corrections(cos, bc).items() if c in ("z", "mean")}
        for w in (1.0, 2.0, 4.0, 8.0):
            ranked[f"blend{w:g}/{name}"] = ranked[f"z/{name}"] - w * -ranked["va-distance"]
        for w in (0.25, 0.5, 1.0):
            ranked[f"zblend{w:g}/{name}"] = ranked[f"z/{name}"] - w * va_z
    song_q = np.array([song.quadrant for song in data.songs])
    resamples = bootstrap_resamples(len(data.photos), args.bootstrap, 0)
    results = {}
    for name, score in ranked.items():
        top = [[int(cat.songs[j]) for j in np.lexsort((np.arange(len(r)), -r))[:K]] for r in score]
        m = method_metrics(top, data.photos, pred_va, song_q, list(cat.songs), resamples)
        results[name] = {key: round(m[key]["value"], 4) for key in SHOWN}
    modality = {k: round(v, 4) for k, v in modality_figures(data.photos, pred_va, song_q, cat).items()}
    print(f"{args.split}: {len(data.photos)} photos, {len(data.songs)} songs; banks {list(banks)}; views {args.views}")
    print(f"image VA r: valence {modality['image_valence_r']:.3f}, arousal {modality['image_arousal_r']:.3f}")
    print("| correction | " + " | ".join(SHOWN) + " |")
    print("|---" * (len(SHOWN) + 1) + "|")
    for name, row in results.items():
        print(
            f"| {name} | "
            + " | ".join(f"{row[k]:.3f}" if k != "distinct_first" else f"{row[k]:.0f}" for k in SHOWN)
            + " |"
        )
    if args.json:
        meta = {"checkpoint_sha256": matcher.checkpoint_hash, "split": args.split, "photos": len(data.photos)}
        meta |= {"views": args.views, "modality": modality}
        meta |= {"songs": len(data.songs), "bank_clips_per_track": BANK_CLIPS_PER_TRACK}
        args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
