"""Export a trained checkpoint to the ONNX graphs that serving and indexing run (PyTorch needed).

Three graphs, written beside the checkpoint (``model.inference.onnx_paths``):

- ``image``: ImageNet-normalised photos [n, 3, S, S] -> embeddings [n, d] and calibrated VA [n, 2];
- ``music``: network-ready spectral features [n, 3, 193, 87] (and, for a tagger backbone, the
  tagger's log-mel windows [n, 187, 96]) -> embeddings [n, d] and calibrated VA [n, 2];
- ``similarity``: photo embeddings [n, d] x clip embeddings [m, d] -> predicted similarity [n, m].

Each graph records the sha256 of the checkpoint it came from, so the runtime refuses graphs that
belong to another model. Before a graph is written, ONNX Runtime runs it on sample input and its
outputs are compared with PyTorch's (:func:`check_parity`): an export that drifts is not written.
:class:`TorchMatcher` is that PyTorch reference, with the runtime's interface; the parity test
and the benchmarks' torch columns use it too.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from PIL import Image
from torch import nn

from app.core.files import atomic_path, file_sha256
from model.checkpoint import load_checkpoint
from model.features import N_FEATURES
from model.inference import (
    GRAPHS,
    META_CHECKPOINT_SHA256,
    META_GRAPH,
    Matcher,
    onnx_paths,
)
from model.meta import CheckpointFacts, CheckpointMeta
from model.networks import CDCML
from model.tagger_input import TAGGER_FRAMES, TAGGER_N_MELS
from model.transforms import image_batch

log = logging.getLogger(__name__)
OPSET = 18
PARITY_ATOL = 1e-4  # embeddings are unit vectors and VA/similarity lie in [0, 1]
CLIP_FRAMES = 87


class ExportError(RuntimeError):
    """The ONNX graphs could not be written, or they do not reproduce PyTorch."""


class _ImageGraph(nn.Module):
    def __init__(self, model: CDCML) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.model.embed_image(image)
        return emb, self.model.image_va(emb)


class _MusicGraph(nn.Module):
    def __init__(self, model: CDCML) -> None:
        super().__init__()
        self.model = model

    def forward(self, spectral: torch.Tensor, tagger: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.model.embed_clips(spectral, tagger)
        return emb, self.model.music_va(emb)


class _SimilarityGraph(nn.Module):
    """Every photo against every clip: rows are paired inside the graph, as ``similarity`` pairs them."""

    def __init__(self, model: CDCML) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, clips: torch.Tensor) -> torch.Tensor:
        n, m, d = images.shape[0], clips.shape[0], images.shape[1]
        a = images.unsqueeze(1).expand(n, m, d).reshape(n * m, d)
        b = clips.unsqueeze(0).expand(n, m, d).reshape(n * m, d)
        return self.model.similarity(a, b).reshape(n, m)


@dataclass
class TorchMatcher(CheckpointFacts):
    """The PyTorch model behind the runtime's interface: the reference ONNX is held to."""

    model: CDCML
    meta: CheckpointMeta
    checkpoint_hash: str
    batch_size: int = 32

    @classmethod
    def load(cls, path: Path) -> TorchMatcher:
        model, meta = load_checkpoint(Path(path), "cpu")
        return cls(model=model, meta=meta, checkpoint_hash=file_sha256(Path(path)))

    @torch.inference_mode()
    def embed_image_tensor(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        emb = self.model.embed_image(torch.as_tensor(np.asarray(batch, np.float32)))
        return emb.numpy(), self.model.image_va(emb).numpy()

    def embed_images(self, images: list[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        return self.embed_image_tensor(image_batch(images, self.image_size))

    @torch.inference_mode()
    def embed_clip_features(
        self, features: np.ndarray, tagger: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        if len(features) == 0:
            return np.zeros((0, self.dim), np.float32), np.zeros((0, 2), np.float32)
        embs, vas = [], []
        for start in range(0, len(features), self.batch_size):
            sl = slice(start, start + self.batch_size)
            spectral = torch.from_numpy(self.meta.feature_stats.to_network_input(features[sl]))
            windows = None
            if self.needs_tagger_input:
                if tagger is None:
                    raise ValueError("this model needs the tagger input of every clip: cut clips with tagger=True")
                windows = torch.from_numpy(np.asarray(tagger[sl], np.float32))
            emb = self.model.embed_clips(spectral, windows)
            embs.append(emb.numpy())
            vas.append(self.model.music_va(emb).numpy())
        return np.concatenate(embs), np.concatenate(vas)

    @torch.inference_mode()
    def similarity_matrix(self, image_embs: np.ndarray, clip_embs: np.ndarray) -> np.ndarray:
        images = torch.as_tensor(np.asarray(image_embs, np.float32))
        clips = torch.as_tensor(np.asarray(clip_embs, np.float32))
        if len(images) == 0 or len(clips) == 0:
            return np.zeros((len(images), len(clips)), np.float32)
        return _SimilarityGraph(self.model)(images, clips).numpy()


def _sample_inputs(meta: CheckpointMeta, n: int = 3, seed: int = 0) -> dict[str, tuple[torch.Tensor, ...]]:
    """Inputs of realistic scale for tracing and the export's own parity check."""
    rng = np.random.default_rng(seed)
    size, d = meta.config.image_size, meta.config.space_dim
    image = torch.from_numpy(rng.standard_normal((n, 3, size, size)).astype(np.float32))
    spectral = torch.from_numpy(rng.standard_normal((n, 3, N_FEATURES, CLIP_FRAMES)).astype(np.float32))
    music: tuple[torch.Tensor, ...] = (spectral,)
    if meta.config.uses_tagger:
        music += (torch.from_numpy(rng.uniform(0, 3, (n, TAGGER_FRAMES, TAGGER_N_MELS)).astype(np.float32)),)
    unit = rng.standard_normal((n + 2, d)).astype(np.float32)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    return {
        "image": (image,),
        "music": music,
        "similarity": (torch.from_numpy(unit[:n]), torch.from_numpy(unit[n:])),
    }


def _graph(kind: str, model: CDCML) -> nn.Module:
    return {"image": _ImageGraph, "music": _MusicGraph, "similarity": _SimilarityGraph}[kind](model)


def _names(kind: str, meta: CheckpointMeta) -> tuple[list[str], list[str], dict[str, dict[int, str]]]:
    if kind == "image":
        return ["image"], ["embedding", "va"], {"image": {0: "n"}, "embedding": {0: "n"}, "va": {0: "n"}}
    if kind == "music":
        inputs = ["spectral", "tagger"] if meta.config.uses_tagger else ["spectral"]
        axes = {name: {0: "n"} for name in [*inputs, "embedding", "va"]}
        return inputs, ["embedding", "va"], axes
    return ["images", "clips"], ["similarity"], {"images": {0: "n"}, "clips": {0: "m"}, "similarity": {0: "n", 1: "m"}}


def _write_graph(kind: str, model: CDCML, meta: CheckpointMeta, sha256: str, path: Path, sample: tuple) -> None:
    inputs, outputs, axes = _names(kind, meta)
    with atomic_path(path, prefix=path.name) as tmp:
        with torch.inference_mode(False), torch.no_grad():
            torch.onnx.export(
                _graph(kind, model).eval(),
                sample,
                tmp,
                input_names=inputs,
                output_names=outputs,
                dynamic_axes=axes,
                opset_version=OPSET,
                dynamo=False,
            )
        proto = onnx.load(tmp)
        for key, value in ((META_CHECKPOINT_SHA256, sha256), (META_GRAPH, kind)):
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        proto.producer_name = "photoscore"
        onnx.checker.check_model(proto)
        onnx.save(proto, tmp)
        os.chmod(tmp, 0o644)


def check_parity(reference: TorchMatcher, runtime: Matcher, samples: dict[str, tuple[torch.Tensor, ...]]) -> float:
    """Largest absolute difference between PyTorch and ONNX Runtime over every graph's outputs."""
    worst = 0.0
    image = samples["image"][0].numpy()
    for a, b in zip(reference.embed_image_tensor(image), runtime.embed_image_tensor(image), strict=True):
        worst = max(worst, float(np.abs(a - b).max()))
    spectral = samples["music"][0].numpy()
    windows = samples["music"][1].numpy() if len(samples["music"]) > 1 else None
    with torch.inference_mode():
        ref = reference.model.embed_clips(
            torch.from_numpy(spectral), None if windows is None else torch.from_numpy(windows)
        )
        ref_va = reference.model.music_va(ref)
    got = runtime.run_music(spectral, windows)
    worst = max(worst, float(np.abs(ref.numpy() - got[0]).max()), float(np.abs(ref_va.numpy() - got[1]).max()))
    images, clips = (t.numpy() for t in samples["similarity"])
    sim = np.abs(reference.similarity_matrix(images, clips) - runtime.similarity_matrix(images, clips))
    return max(worst, float(sim.max()))


def export_onnx(checkpoint: Path) -> dict[str, Path]:
    """Write the checkpoint's three ONNX graphs beside it and check them against PyTorch.

    Returns the written paths by graph name. Raises ``ExportError`` when ONNX Runtime's outputs
    differ from PyTorch's by more than ``PARITY_ATOL``; the written graphs are removed then."""
    checkpoint = Path(checkpoint)
    reference = TorchMatcher.load(checkpoint)
    model, meta = reference.model, reference.meta
    samples = _sample_inputs(meta)
    paths = onnx_paths(checkpoint)
    for kind in GRAPHS:
        log.info("exporting the %s graph to %s", kind, paths[kind])
        _write_graph(kind, model, meta, reference.checkpoint_hash, paths[kind], samples[kind])
    worst = check_parity(reference, Matcher.load(checkpoint, "cpu"), samples)
    if worst > PARITY_ATOL:
        for path in paths.values():
            path.unlink(missing_ok=True)
        raise ExportError(f"ONNX Runtime differs from PyTorch by {worst:.2e} (> {PARITY_ATOL:.0e}); nothing written")
    log.info("ONNX graphs match PyTorch (largest difference %.1e)", worst)
    return paths
