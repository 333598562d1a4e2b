"""The ONNX graphs that serve and index reproduce the PyTorch model they were exported from.

Real inputs: rated photos from OASIS and Emotion6 through the service's decoding, real Panda-4Q
recordings through the indexer's clip cutting. The shipped graphs must be the export of the
shipped checkpoint (recorded hash) and agree with PyTorch to ``PARITY_ATOL``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from app.core.settings import DEFAULT_CHECKPOINT
from app.services.photos import decode_photo
from model.audio import load_audio
from model.export import PARITY_ATOL, TorchMatcher, export_onnx
from model.inference import Matcher, onnx_paths
from model.meta import CheckpointError

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def pair() -> tuple[TorchMatcher, Matcher]:
    return TorchMatcher.load(DEFAULT_CHECKPOINT), Matcher.load(DEFAULT_CHECKPOINT, "cpu")


def _photos(dataset_dir: Path, n: int) -> list[Path]:
    oasis = sorted((dataset_dir / "oasis" / "images").glob("*.jpg"))
    emotion6 = sorted((dataset_dir / "emotion6" / "images").rglob("*.jpg"))
    assert oasis and emotion6, f"no OASIS or Emotion6 photos under {dataset_dir}"
    return oasis[:: max(1, len(oasis) // n)][:n] + emotion6[:: max(1, len(emotion6) // n)][:n]


def test_shipped_graphs_belong_to_the_shipped_checkpoint() -> None:
    paths = onnx_paths(DEFAULT_CHECKPOINT)
    assert all(p.is_file() for p in paths.values()), f"missing ONNX graphs: {paths}"
    total = DEFAULT_CHECKPOINT.stat().st_size + sum(p.stat().st_size for p in paths.values())
    assert total <= 50 * 1024 * 1024, f"shipped model files are {total / 2**20:.1f} MiB (limit 50)"
    Matcher.load(DEFAULT_CHECKPOINT, "cpu")  # raises when a graph's recorded hash differs


def test_image_branch_parity_on_real_photos(pair: tuple[TorchMatcher, Matcher], dataset_dir: Path) -> None:
    ref, rt = pair
    batch = np.stack([decode_photo(p.read_bytes(), 40_000_000, rt.image_size) for p in _photos(dataset_dir, 12)])
    (e_ref, va_ref), (e_rt, va_rt) = ref.embed_image_tensor(batch), rt.embed_image_tensor(batch)
    assert np.abs(e_ref - e_rt).max() < PARITY_ATOL
    assert np.abs(va_ref - va_rt).max() < PARITY_ATOL
    # The photos differ, so equal outputs are not an artefact of a constant graph.
    assert np.abs(e_rt[0] - e_rt[-1]).max() > 1e-2


def test_music_branch_and_similarity_parity_on_real_songs(
    pair: tuple[TorchMatcher, Matcher], dataset_dir: Path
) -> None:
    ref, rt = pair
    songs = sorted((dataset_dir / "panda4q" / "audio").rglob("*.ogg"))[::40][:3]
    assert songs, f"no Panda-4Q recordings under {dataset_dir}"
    photos = np.stack([decode_photo(p.read_bytes(), 40_000_000, rt.image_size) for p in _photos(dataset_dir, 2)])
    images, _ = rt.embed_image_tensor(photos)
    for song in songs:
        clips = rt.featurize(load_audio(song))
        assert len(clips) >= 5
        (e_ref, va_ref), (e_rt, va_rt) = (m.embed_clip_features(clips.features, clips.tagger) for m in (ref, rt))
        assert np.abs(e_ref - e_rt).max() < PARITY_ATOL
        assert np.abs(va_ref - va_rt).max() < PARITY_ATOL
        sim_ref, sim_rt = ref.similarity_matrix(images, e_ref), rt.similarity_matrix(images, e_ref)
        assert sim_rt.shape == (len(images), len(clips))
        assert np.abs(sim_ref - sim_rt).max() < PARITY_ATOL


def test_batching_does_not_change_clip_embeddings(pair: tuple[TorchMatcher, Matcher], dataset_dir: Path) -> None:
    _, rt = pair
    song = sorted((dataset_dir / "panda4q" / "audio").rglob("*.ogg"))[0]
    clips = rt.featurize(load_audio(song))
    whole, _ = rt.embed_clip_features(clips.features, clips.tagger)
    one_by_one = np.concatenate(
        [rt.embed_clip_features(clips.features[i : i + 1], clips.tagger[i : i + 1])[0] for i in range(len(clips))]
    )
    assert np.abs(whole - one_by_one).max() < 1e-5


def test_graphs_of_another_checkpoint_are_refused(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from model.checkpoint import load_checkpoint, save_checkpoint

    model, meta = load_checkpoint(tiny_checkpoint)
    meta.name = "tiny-other"
    other = tmp_path / "other.safetensors"
    save_checkpoint(other, model, meta)
    with pytest.raises(CheckpointError, match="photoscore export"):
        Matcher.load(other, "cpu")  # no graphs beside it yet
    for kind, path in onnx_paths(tiny_checkpoint).items():
        shutil.copy(path, onnx_paths(other)[kind])
    with pytest.raises(CheckpointError, match="exported from another checkpoint"):
        Matcher.load(other, "cpu")
    export_onnx(other)
    assert Matcher.load(other, "cpu").version.startswith("tiny-other@")


def test_grey_photo_features_do_not_depend_on_rounding_noise() -> None:
    """A grey photo has no hue: its colour statistics must not come from float rounding, which
    differs between PyTorch and ONNX Runtime (and moved the shipped model's VA by 0.01)."""
    import torch
    from PIL import Image

    from model.networks import image_affect_features
    from model.transforms import image_tensor

    rng = np.random.default_rng(0)
    grey = Image.fromarray(np.repeat(rng.integers(0, 256, (64, 64, 1), dtype=np.uint8), 3, axis=2))
    x = torch.from_numpy(image_tensor(grey, 64)[None])
    assert torch.equal(image_affect_features(x), image_affect_features(torch.nextafter(x, x + 1)))


def test_model_card_names_the_shipped_graphs_and_their_sha256() -> None:
    from app.core.files import file_sha256

    card = (DEFAULT_CHECKPOINT.parent / "MODEL_CARD.md").read_text()
    for path in onnx_paths(DEFAULT_CHECKPOINT).values():
        assert f"`{path.name}`" in card and file_sha256(path) in card, f"MODEL_CARD.md is stale for {path.name}"


def test_colour_statistics_bin_every_8_bit_colour_alike_in_pytorch_and_onnx(tmp_path: Path) -> None:
    """Hue ties (g = b, 2r = g + b) are common 8-bit colours; each must land in the same hue bin
    in training (PyTorch) and serving (ONNX Runtime). Before, 1 in 256 colours did not."""
    import onnxruntime as ort
    import torch

    from model.networks import IMAGENET_MEAN, IMAGENET_STD, image_affect_features

    class ColourStatistics(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return image_affect_features(x)

    g, b = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")  # every (g, b) for each red level
    rgb = np.stack([np.stack([np.full_like(g, r), g, b]) for r in range(0, 256, 5)]).astype(np.float32) / 255
    mean, std = (np.asarray(v, np.float32).reshape(1, 3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
    x = ((rgb - mean) / std).astype(np.float32)
    path = tmp_path / "colour.onnx"
    torch.onnx.export(
        ColourStatistics().eval(),
        torch.from_numpy(x[:2]),
        path,
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "n"}},
        opset_version=18,
        dynamo=False,
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ref = image_affect_features(torch.from_numpy(x)).numpy()
    out = session.run(None, {"x": x})[0]
    hue_histogram = slice(-8, None)
    assert np.abs(ref[:, hue_histogram].sum(axis=1) - 1).max() < 1e-5, "a saturated pixel fell in no hue bin"
    assert np.abs(ref[:, hue_histogram] - out[:, hue_histogram]).max() < 1e-5
    assert np.abs(ref - out).max() < 1e-3  # means over 65,536 pixels: only summation order differs
