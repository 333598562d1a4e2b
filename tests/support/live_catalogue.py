"""A small live catalogue for the live-index and ranking tests: 8-d unit vectors, matchers whose
similarity is known in closed form, and helpers that add songs and load a ``LiveIndex``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.core import catalogue
from app.core.live_index import LiveIndex
from app.services.ranking import Query, Ranker, SearchOptions

DIM = 8
CKPT = "a" * 64


class DotMatcher:
    """Similarity = (1 + cosine) / 2, like a predictor that agrees with the embedding space."""

    def similarity(self, image_emb: np.ndarray, clip_embs: np.ndarray) -> np.ndarray:
        return ((1.0 + clip_embs @ image_emb) / 2.0).astype(np.float32)


class BankMatcher(DotMatcher):
    """DotMatcher with a query bank, as a checkpoint trained with ``model.query_bank`` has."""

    def __init__(self, bank: np.ndarray) -> None:
        self.query_bank = np.asarray(bank, np.float32)

    def similarity_matrix(self, image_embs: np.ndarray, clip_embs: np.ndarray) -> np.ndarray:
        return np.stack([self.similarity(e, clip_embs) for e in image_embs])


class ConstMatcher:
    def similarity(self, image_emb: np.ndarray, clip_embs: np.ndarray) -> np.ndarray:
        return np.full(len(clip_embs), 0.5, np.float32)


def unit(v) -> np.ndarray:
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


def direction(i: int) -> np.ndarray:
    v = np.zeros(DIM, np.float32)
    v[i % DIM] = 1.0
    return v


def add(factory, name: str, embs: np.ndarray, checkpoint: str = CKPT) -> int:
    n = len(embs)
    batch = catalogue.ClipBatch(
        starts=np.arange(n) * 2.0,
        ends=np.arange(n) * 2.0 + 2.0,
        va=np.full((n, 2), 0.5),
        embeddings=np.asarray(embs, np.float32),
    )
    with factory() as s:
        track, created = catalogue.add_track(
            s,
            sha256=name.ljust(64, "0")[:64],
            title=name,
            artist=None,
            album=None,
            duration=2.0 * n,
            source=None,
            audio_key=None,
            license=None,
            checkpoint_hash=checkpoint,
            clips=batch,
        )
        assert created
        return track.id


def remove(factory, track_id: int) -> None:
    with factory() as s:
        assert catalogue.delete_track(s, track_id)


def live(factory, tmp_path: Path | None = None, **kw) -> LiveIndex:
    idx = LiveIndex(
        factory,
        checkpoint_hash=CKPT,
        dim=DIM,
        index_dir=tmp_path / "index" if tmp_path else None,
        **kw,
    )
    idx.load()
    return idx


def top(idx: LiveIndex, query, n: int = 10, k: int = 256, matcher=None) -> list[int]:
    return [
        h.track_id
        for h in Ranker(idx, matcher or DotMatcher(), search_k=k)
        .page(Query(unit(query)), SearchOptions(n=n, spare=0))
        .results
    ]
