"""The service's own path for a photo: decode, embed, rank; called here exactly as ``/recommend`` calls it.

Photos are decoded with ``app.services.photos.decode_photo`` and embedded with
``app.services.photos.embed_tensors``, the batch function the service's inference worker runs,
in micro-batches of ``batch_max_size``; songs are ranked by the service's ``Ranker``. Every
ranking call of the evaluation goes through ``service_ranking``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from app.evaluation.metrics import K

if TYPE_CHECKING:
    from app.core.live_index import LiveIndex
    from app.core.settings import Settings
    from app.evaluation.split import Photo
    from app.services.ranking import Ranker
    from model.inference import Matcher

log = logging.getLogger(__name__)


def embed_photos(matcher: Matcher, photos: Sequence[Photo], settings: Settings) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings and predicted VA of ``photos`` through the service's decode and batch-embed calls.

    A photo the service would refuse gets NaN rows. The VA is the network's, unclipped (the VA
    baselines rank by it as it comes).
    """
    from app.services.photos import decode_photo, embed_tensors
    from model.image import ImageDecodeError

    embs = np.full((len(photos), matcher.dim), np.nan, np.float32)
    vas = np.full((len(photos), 2), np.nan, np.float32)
    size = max(1, int(settings.batch_max_size))
    for start in range(0, len(photos), size):
        tensors, rows = [], []
        for i in range(start, min(start + size, len(photos))):
            try:
                tensors.append(decode_photo(photos[i].path.read_bytes(), settings.max_image_pixels, matcher.image_size))
                rows.append(i)
            except (ImageDecodeError, OSError) as exc:
                log.warning("photo %s not usable: %s", photos[i].path, exc)
        if tensors:
            e, v = embed_tensors(matcher, tensors)
            embs[rows], vas[rows] = np.asarray(e, np.float32), np.asarray(v, np.float32)
    return embs, vas


def service_ranker(live: LiveIndex, matcher: Matcher, settings: Settings, va_weight: float | None = None) -> Ranker:
    """The service's ranker over one catalogue (its FAISS candidate depth and VA-distance weight
    from ``settings``; ``va_weight`` overrides the latter, for the ablation)."""
    from app.services.ranking import Ranker

    weight = settings.rank_va_weight if va_weight is None else va_weight
    return Ranker(live, matcher, settings.search_k, weight)


def service_ranking(ranker: Ranker, emb: np.ndarray, va: np.ndarray, k: int = K) -> list[int]:
    """Track ids of the first page of the service's plain ranking for ``n=k`` (default options:
    no steering, no artist cap, no dedupe, no shuffle), as ``/recommend`` answers it."""
    from app.services.photos import clean_va
    from app.services.ranking import Query, SearchOptions

    page = ranker.page(Query(embedding=emb, va=clean_va(va)), SearchOptions(n=k))
    return [h.track_id for h in page.results]
