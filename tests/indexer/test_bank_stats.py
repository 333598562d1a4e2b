"""Query-bank statistics are computed when a track is indexed (local and Ray engines) and stored
with it, equal to the values the ranking used to compute per process on the request path."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from sqlalchemy import select

from app.core.catalogue import load_clips_with_embeddings
from app.core.db import make_engine, make_session_factory, upgrade_database
from app.core.models import Track
from indexer.pipeline import RunOptions
from indexer.worker import prepare
from tests.support.indexing import file_hash, index

BANK_ROWS = 6


@pytest.fixture(scope="module")
def bank_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real tiny CDCML (64-d) whose query bank holds six training-photo embeddings."""
    return _checkpoint(tmp_path_factory.mktemp("bank-ckpt") / "bank.safetensors", BANK_ROWS)


@pytest.fixture(scope="module")
def no_bank_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _checkpoint(tmp_path_factory.mktemp("no-bank-ckpt") / "plain.safetensors", 0)


def _checkpoint(path: Path, rows: int) -> Path:
    from model.checkpoint import CheckpointMeta, save_checkpoint
    from model.features import N_FEATURES, FeatureStats
    from model.networks import CDCML, ModelConfig

    torch.manual_seed(1)
    cfg = ModelConfig(
        image_backbone="compact",
        music_backbone="compact",
        compact_width=8,
        embed_dim=64,
        image_size=64,
        query_bank=rows,
    )
    model = CDCML(cfg).eval()
    model.query_bank.copy_(torch.nn.functional.normalize(torch.randn(rows, 64), dim=1))
    stats = FeatureStats(mean=np.zeros(N_FEATURES, np.float32), std=np.full(N_FEATURES, 10.0, np.float32))
    save_checkpoint(path, model, CheckpointMeta(config=cfg, feature_stats=stats, name="bank"))
    try:  # serving runs on ONNX Runtime: the graphs sit beside the checkpoint
        from model.export import export_onnx
    except ImportError:  # a tree from before the ONNX runtime
        return path
    export_onnx(path)
    return path


def request_path_stats(matcher, embs: np.ndarray) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """``Ranker._bank_norm`` as it was (commit 2dea632), verbatim, fed the ranking's sample."""
    ids = np.arange(len(embs))
    sample = ids if len(ids) <= 32 else ids[np.linspace(0, len(ids) - 1, 32).round().astype(int)]
    embs = embs[sample]
    pick = np.linspace(0, len(embs) - 1, min(len(embs), 8)).round().astype(int)
    per_photo = np.asarray(matcher.similarity_matrix(matcher.query_bank, embs[pick]), np.float64).mean(axis=1)
    return float(per_photo.mean()), max(float(per_photo.std()), 1e-3)


def stored(url: str) -> dict[int, tuple[float | None, float | None, np.ndarray]]:
    """track id -> (bank mean, bank std, clip embeddings in time order)."""
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as s:
            tracks = {t.id: (t.bank_mean, t.bank_std) for t in s.scalars(select(Track))}
            rows, embs = load_clips_with_embeddings(s, dim=64)
        return {t: (*tracks[t], embs[rows.track_ids == t]) for t in tracks}
    finally:
        engine.dispose()


def test_local_indexer_stores_the_request_paths_bank_stats(
    db_url: str, music_library: Path, bank_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from model.inference import Matcher

    code, out, err = index(
        capsys,
        music_library,
        "--database-url",
        db_url,
        "--index-dir",
        tmp_path / "index",
        "--checkpoint",
        bank_checkpoint,
        "--workers",
        "0",
    )
    assert code == 0 and "tracks added    5" in out, err
    matcher = Matcher.load(bank_checkpoint, "cpu")
    assert len(matcher.query_bank) == BANK_ROWS
    found = stored(db_url)
    assert len(found) == 5
    for mean, std, embs in found.values():
        assert mean is not None and std is not None
        assert (mean, std) == request_path_stats(matcher, embs)  # identical, not merely close


def test_a_checkpoint_without_a_bank_stores_none(
    sqlite_url: str, music_library: Path, no_bank_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--database-url", sqlite_url, "--index-dir", tmp_path / "i", "--checkpoint", no_bank_checkpoint]
    code, _, err = index(capsys, music_library, *args, "--workers", "0")
    assert code == 0, err
    assert {(m, s) for m, s, _ in stored(sqlite_url).values()} == {(None, None)}


def test_ray_embed_actor_computes_them_and_the_writer_stores_them(
    sqlite_url: str, music_library: Path, bank_checkpoint: Path
) -> None:
    """The Ray engine's embedding step (the actor holds the model) and its writer, run in process."""
    from indexer.pipeline import _Job
    from indexer.ray_engine import _EmbedActor, _WriteActor
    from indexer.scan import SourceFile
    from model.inference import Matcher

    upgrade_database(sqlite_url)
    path = music_library / "three.wav"
    prepared = prepare(0, str(path), 2.0, None, False)
    batch = {"result": np.array([pickle.dumps(prepared)], dtype=object)}
    embedded = pickle.loads(_EmbedActor(str(bank_checkpoint), "cpu")(batch)["result"][0])
    _, embs, _, stats = embedded
    matcher = Matcher.load(bank_checkpoint, "cpu")
    assert stats == request_path_stats(matcher, embs)
    writer = _WriteActor(sqlite_url, file_hash(bank_checkpoint), RunOptions(progress=False), None)
    job = _Job(0, SourceFile(path=path, root=music_library), file_hash(path))
    assert writer._store(job, embedded)["status"] == "added"
    ((mean, std, _),) = stored(sqlite_url).values()
    assert (mean, std) == stats
