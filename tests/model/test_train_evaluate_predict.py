"""A tiny real run on the shared data: train -> evaluate -> predict, all on the CPU."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from app.cli import main
from model.checkpoint import load_checkpoint, read_meta
from model.networks import build_backbone
from tests.support.training import tiny_train_args


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, dataset_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("run") / "run"
    rc = main(tiny_train_args(out, dataset_dir))
    assert rc == 0
    return out


def test_checkpoint_is_self_contained(tiny_run: Path) -> None:
    ckpt = tiny_run / "model.safetensors"
    meta = read_meta(ckpt)
    assert meta.config.embed_dim == 64 and meta.sigma > 0
    assert meta.feature_stats.mean.shape == (193,)
    assert "val" in meta.metrics and "sim_mse" in meta.metrics["val"]
    assert meta.data_summary["clips"]["train"] > 0
    model, _ = load_checkpoint(ckpt)
    assert not model.training
    # the query bank holds 8 training photos' (L2-normalised) embeddings for the service
    assert tuple(model.query_bank.shape) == (8, 64)
    assert np.allclose(model.query_bank.norm(dim=1).numpy(), 1.0, atol=1e-4)
    # VA calibration: fitted on the validation split when it has at least 10 items (this tiny run's
    # 5 validation photos leave the identity), recorded in the metrics, a finite scale and shift per axis
    assert "va_calibration" in meta.metrics
    for affine in (model.image_va_affine, model.music_va_affine):
        assert tuple(affine.shape) == (2, 2) and bool(affine.isfinite().all()) and bool((affine[0] > 0).all())
    history = json.loads((tiny_run / "history.json").read_text())
    assert len(history) == 2


def test_resume_does_not_repeat_epochs(tiny_run: Path, dataset_dir: Path) -> None:
    before = (tiny_run / "history.json").read_text()
    rc = main(tiny_train_args(tiny_run, dataset_dir, "optim.epochs=3"))  # the fixture's cache, too
    assert rc == 0
    after = json.loads((tiny_run / "history.json").read_text())
    assert [h["epoch"] for h in after] == [1, 2, 3]
    assert json.loads(before)[:2] == after[:2]


def test_evaluate_prints_every_method(tiny_run: Path, dataset_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "eval.json"
    rc = main(
        [
            "evaluate",
            "--checkpoint",
            str(tiny_run / "model.safetensors"),
            "--quiet",
            "--images",
            str(dataset_dir / "oasis"),
            "--music",
            str(dataset_dir / "vgmidi"),
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert set(result["table"]) == {"cdcml", "nearest_va", "random", "sp_net", "acp_net"}
    for name, row in result["table"].items():
        assert name in printed
        assert 0 <= row["ndcg@10"] <= 1 and row["sim_mse"] >= 0
    assert "image_valence_r" in result["table"]["cdcml"]


def test_predict_image_and_audio(tiny_run: Path, tmp_path: Path, capsys) -> None:
    import soundfile as sf

    img = tmp_path / "red.png"
    Image.new("RGB", (80, 60), (220, 30, 30)).save(img)
    wav = tmp_path / "tone.wav"
    t = np.arange(int(22050 * 5)) / 22050
    sf.write(wav, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 22050)
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    rc = main(["predict", "--checkpoint", str(tiny_run / "model.safetensors"), str(img), str(wav), str(bad)])
    captured = capsys.readouterr()
    lines = [json.loads(x) for x in captured.out.splitlines()]
    assert rc == 1  # one bad file
    assert "bad.jpg" in captured.err
    assert [x["modality"] for x in lines] == ["image", "audio"]
    assert all(0 <= x["valence"] <= 1 and 0 <= x["arousal"] <= 1 for x in lines)
    # 5 s: clips at 0 s and ~2 s (a hop of 86 frames), then one aligned to the end of the signal
    clips = lines[1]["clips"]
    assert len(clips) == 3 and clips[1]["start"] == pytest.approx(2.0, abs=0.01)
    assert clips[-1]["end"] == pytest.approx(5.0, abs=0.01)


def test_category_term_trains_a_head_that_stays_out_of_the_checkpoint(tmp_path: Path, dataset_dir: Path) -> None:
    """With ``loss.categories`` the Emotion6 photos' category term is trained beside Eq. 8 (it
    appears in the history and is finite) and resumes; its head is a training aid, absent from the
    checkpoint, which loads as any other."""
    args = tiny_train_args(tmp_path / "run", dataset_dir, "data.images=[oasis,emotion6]", "loss.categories=1.0")
    assert main([*args, "--set", "optim.epochs=1"]) == 0
    assert main(args) == 0  # resumes for the second epoch, category head included
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(np.isfinite(h["train"]["categories"]) and h["train"]["categories"] > 0 for h in history)
    model, meta = load_checkpoint(tmp_path / "run" / "model.safetensors")
    assert meta.train_config["loss"]["categories"] == 1.0
    assert not any("category" in k for k in model.state_dict())


def test_image_tune_blocks_trains_only_the_top_and_keeps_its_cache_across_resume(
    tmp_path: Path, dataset_dir: Path
) -> None:
    """``optim.image_tune_blocks=1`` on a frozen EfficientNet-Lite0: the last block, head
    convolution and BN move away from the ImageNet weights, every other backbone weight stays
    bit-identical, and the cached input of the top is found again when training resumes (its key
    leaves the tuned weights out), so one cache file serves both epochs."""
    run = tmp_path / "run"
    args = tiny_train_args(
        run,
        dataset_dir,
        "data.max_items_per_source=12",
        "model.image_backbone=efficientnet_lite0",
        "optim.freeze_image_backbone=true",
        "optim.image_tune_blocks=1",
        "optim.half_checkpoint=false",  # the checkpoint holds the weights bit for bit
    )
    assert main([*args, "--set", "optim.epochs=1"]) == 0
    assert main(args) == 0
    caches = sorted((tmp_path / "run-cache").glob("frozen-image-*.pt"))
    assert len(caches) == 1
    model, meta = load_checkpoint(run / "model.safetensors")
    assert meta.train_config["optim"]["image_tune_blocks"] == 1
    pretrained, _ = build_backbone("efficientnet_lite0")
    tuned = model.image_branch.backbone.state_dict()
    top = tuple(f"{name}." for name, _ in pretrained.top_modules(1))
    changed = {k for k, v in pretrained.state_dict().items() if not torch.equal(v, tuned[k])}
    assert changed and all(k.startswith(top) for k in changed)
    assert any(k.startswith("net._blocks.15.") and k.endswith("weight") for k in changed)


def test_cached_photo_features_are_not_reused_once_the_colour_statistics_change(
    tmp_path: Path, dataset_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The frozen backbone's cache holds the colour statistics too: when their code changes
    (``IMAGE_AFFECT_VERSION``), a resumed run computes a new cache instead of reusing the old one."""
    import model.train

    args = tiny_train_args(
        tmp_path / "run",
        dataset_dir,
        "data.max_items_per_source=12",
        "model.image_backbone=efficientnet_lite0",
        "optim.freeze_image_backbone=true",
        "model.affect_features=true",
    )
    assert main([*args, "--set", "optim.epochs=1"]) == 0
    assert len(list((tmp_path / "run-cache").glob("frozen-image-*.pt"))) == 1
    monkeypatch.setattr(model.train, "IMAGE_AFFECT_VERSION", model.train.IMAGE_AFFECT_VERSION + 1)
    assert main(args) == 0
    assert len(list((tmp_path / "run-cache").glob("frozen-image-*.pt"))) == 2


def test_image_tune_blocks_needs_a_frozen_efficientnet(tmp_path: Path, dataset_dir: Path, capsys) -> None:
    """A clear one-line refusal, before any data is prepared, when the option cannot apply."""
    args = tiny_train_args(tmp_path / "run", dataset_dir, "optim.image_tune_blocks=1")
    assert main(args) == 2
    assert "optim.image_tune_blocks needs an EfficientNet-Lite image backbone" in capsys.readouterr().err
    assert not (tmp_path / "run-cache").exists()
