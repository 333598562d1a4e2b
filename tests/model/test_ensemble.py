"""Ensemble members over shared backbones (``model.members``): the joined space ranks by the
members' mean cosine, similarity and VA are the members' means, the ONNX graphs reproduce it, a
checkpoint written before members existed still loads, and training trains every member."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from app.cli import main
from model.checkpoint import load_checkpoint, save_checkpoint
from model.export import export_onnx
from model.features import N_FEATURES, FeatureStats
from model.inference import Matcher
from model.meta import CheckpointMeta, ModelConfig
from model.networks import CDCML
from tests.support.training import tiny_train_args

DIM = 16


def _model(members: int, seed: int = 0) -> CDCML:
    torch.manual_seed(seed)
    cfg = ModelConfig(
        image_backbone="compact",
        music_backbone="compact",
        compact_width=8,
        embed_dim=DIM,
        image_size=32,
        members=members,
        query_bank=4,
    )
    return CDCML(cfg).eval()


def _inputs(n: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 32, 32, generator=g), torch.randn(n, 3, N_FEATURES, 87, generator=g)


def _meta(model: CDCML) -> CheckpointMeta:
    stats = FeatureStats(mean=np.zeros(N_FEATURES, np.float32), std=np.full(N_FEATURES, 10.0, np.float32))
    return CheckpointMeta(config=model.cfg, feature_stats=stats, name="ensemble")


@torch.inference_mode()
def test_joined_space_is_the_members_mean() -> None:
    model = _model(3)
    images, clips = _inputs()
    ei, em = model.embed_image(images), model.embed_clips(clips)
    assert ei.shape == (5, 3 * DIM) and em.shape == (5, 3 * DIM)
    assert torch.allclose(ei.norm(dim=1), torch.ones(5), atol=1e-5)
    own_i = [model.image_branch.head(*model.image_branch.parts(images), k) for k in range(3)]
    own_m = [model.music_branch.head(*model.music_branch.parts(clips), k) for k in range(3)]
    assert not torch.allclose(own_i[0], own_i[1], atol=1e-3)  # members start from different weights
    cos = torch.stack([a @ b.T for a, b in zip(own_i, own_m, strict=True)]).mean(0)
    assert torch.allclose(ei @ em.T, cos, atol=1e-5)
    sim = torch.stack([model.similarity(a, b, k) for k, (a, b) in enumerate(zip(own_i, own_m, strict=True))]).mean(0)
    assert torch.allclose(model.similarity(ei, em), sim, atol=1e-6)
    va = torch.stack([model.va(a, k) for k, a in enumerate(own_i)]).mean(0)
    assert torch.allclose(model.va(ei), va, atol=1e-6)


def test_ensemble_checkpoint_round_trip_and_onnx_graphs(tmp_path: Path) -> None:
    model = _model(3)
    images, clips = _inputs()
    with torch.inference_mode():
        model.query_bank.copy_(model.embed_image(images[:4]))
    path = tmp_path / "ensemble.safetensors"
    save_checkpoint(path, model, _meta(model))
    export_onnx(path)  # raises when ONNX Runtime's outputs differ from PyTorch's
    loaded, _ = load_checkpoint(path)
    with torch.inference_mode():
        assert torch.equal(loaded.embed_image(images), model.embed_image(images))
    runtime = Matcher.load(path, "cpu")
    assert runtime.dim == 3 * DIM
    emb, va = runtime.embed_image_tensor(images.numpy())
    assert emb.shape == (5, 3 * DIM) and va.shape == (5, 2)
    assert runtime.query_bank.shape == (4, 3 * DIM)


def test_single_model_checkpoint_of_the_old_layout_loads(tmp_path: Path) -> None:
    """Checkpoints written before members existed name member 0's weights ``image_branch.project``,
    ``similarity_head`` and so on; they load into member 0 and give the same outputs."""
    model = _model(1)
    legacy = {
        "image_branch.members.0.": "image_branch.",
        "music_branch.members.0.": "music_branch.",
        "similarity_heads.0.": "similarity_head.",
        "va_heads.0.": "va_head.",
    }
    state = {}
    for key, value in model.state_dict().items():
        for new, old in legacy.items():
            key = key.replace(new, old)
        state[key] = value.contiguous()
    assert any(k.startswith("image_branch.project.") for k in state)
    path = tmp_path / "legacy.safetensors"
    save_file(state, str(path), metadata={"photoscore": _meta(model).to_json()})
    loaded, _ = load_checkpoint(path)
    images, clips = _inputs()
    with torch.inference_mode():
        ei, em = loaded.embed_image(images), loaded.embed_clips(clips)
        assert torch.equal(ei, model.embed_image(images))
        assert torch.equal(loaded.similarity(ei, em), model.similarity(ei, em))
        assert torch.equal(loaded.image_va(ei), model.image_va(ei))


@pytest.mark.data
def test_training_trains_every_member(tmp_path: Path, dataset_dir: Path) -> None:
    args = tiny_train_args(
        tmp_path / "run",
        dataset_dir,
        "model.members=2",
        "loss.rank=0.5",
        "optim.freeze_image_backbone=true",
        "optim.freeze_music_backbone=true",
        "optim.half_checkpoint=false",  # the frozen backbone then stays bit-identical to its start
    )
    assert main(args) == 0
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert all(np.isfinite(h["train"]["rank"]) for h in history)
    model, meta = load_checkpoint(tmp_path / "run" / "model.safetensors")
    assert meta.config.members == 2
    first, second = (model.similarity_heads[k][0].weight for k in (0, 1))
    assert first.shape == second.shape and not torch.allclose(first, second)
    torch.manual_seed(meta.train_config["seed"])
    init = CDCML(meta.config)  # the weights training started from (the frozen backbones prove it)
    assert torch.equal(init.image_branch.backbone.body[0].weight, model.image_branch.backbone.body[0].weight)
    for k in (0, 1):  # every member moved
        assert not torch.allclose(init.va_heads[k][0].weight, model.va_heads[k][0].weight)
        assert not torch.allclose(
            init.image_branch.members[k].project[1].weight, model.image_branch.members[k].project[1].weight
        )
