"""Fixtures: the labelled data root and a real tiny CDCML checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.support import REPO


@pytest.fixture(scope="session")
def dataset_dir() -> Path:
    """The labelled data root; a clear failure (not a skip) when it is missing."""
    root = Path(os.environ.get("PHOTOSCORE_DATASET_DIR", REPO.parent / "shared" / "data"))
    if not (root / "README.md").is_file():
        pytest.fail(f"dataset not found at {root}: set PHOTOSCORE_DATASET_DIR to ../shared/data")
    return root


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real, randomly initialised compact CDCML (64-d) saved as a PhotoScore checkpoint, with
    its ONNX graphs beside it (what the service and the indexer run)."""
    from model.checkpoint import CheckpointMeta, save_checkpoint
    from model.export import export_onnx
    from model.features import N_FEATURES, FeatureStats
    from model.networks import CDCML, ModelConfig

    torch.manual_seed(0)
    cfg = ModelConfig(image_backbone="compact", music_backbone="compact", compact_width=8, embed_dim=64, image_size=64)
    model = CDCML(cfg).eval()
    stats = FeatureStats(mean=np.zeros(N_FEATURES, np.float32), std=np.full(N_FEATURES, 10.0, np.float32))
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(path, model, CheckpointMeta(config=cfg, feature_stats=stats, name="tiny"))
    export_onnx(path)
    return path
