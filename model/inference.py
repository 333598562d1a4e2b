"""Runtime facade over a checkpoint on ONNX Runtime: what the service and the indexer call.

A checkpoint (``.safetensors``: weights and metadata) ships with three ONNX graphs beside it,
exported from it by ``photoscore export`` (``model.export``): the image branch, the music branch
(each with its VA head) and the similarity predictor. Serving and indexing run those graphs on
ONNX Runtime, with the CPU provider everywhere and the CUDA provider where a GPU is visible, so
neither loads PyTorch. The checkpoint itself supplies the metadata (architecture, feature
statistics, name) and the query bank, read with safetensors' numpy backend.

Each graph records the sha256 of the checkpoint it was exported from; loading refuses graphs of
another checkpoint, as a server refuses an index of another model. Loading happens once per
process (the service keeps one ``Matcher`` in its inference worker); nothing here is a
module-level singleton.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from PIL import Image
from safetensors import safe_open

from app.core.files import file_sha256
from model.features import ClipSet, cut_clips
from model.meta import CheckpointError, CheckpointFacts, CheckpointMeta, read_meta
from model.transforms import image_batch

log = logging.getLogger(__name__)

GRAPHS = ("image", "music", "similarity")
META_CHECKPOINT_SHA256 = "photoscore.checkpoint_sha256"
META_GRAPH = "photoscore.graph"
CLIP_BATCH = 8  # clips per music-graph run in the service: bounds memory (~160 MB) whatever the song's length
# The offline indexer: 32 clips a run (~580 MB, still flat in the song's length) index 6 Wesnoth
# songs at 77x real time on 2 cores against 65x with 8 (idle threads not spinning, beside the
# decoding processes: 65x against 61x spinning).
INDEX_CLIP_BATCH = 32
SIMILARITY_PAIRS = 8192  # photo-clip pairs per similarity-graph run (bounded memory for large banks)


def onnx_paths(checkpoint: Path) -> dict[str, Path]:
    """Where a checkpoint's graphs live: ``<name>.<graph>.onnx`` beside ``<name>.safetensors``."""
    checkpoint = Path(checkpoint)
    return {kind: checkpoint.with_name(f"{checkpoint.stem}.{kind}.onnx") for kind in GRAPHS}


def providers_for(device: str = "auto") -> list[Any]:
    """ONNX Runtime execution providers for a ``PHOTOSCORE_DEVICE`` value.

    'auto': CUDA when this onnxruntime build has it (onnxruntime-gpu, the GPU image) and a GPU
    is visible, else the CPU; 'cpu'; 'cuda' or 'cuda:N' (an error when the build lacks CUDA)."""
    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in available:
            raise RuntimeError(
                f"PHOTOSCORE_DEVICE={device}, but this onnxruntime has no CUDA provider "
                "(install the gpu extra: onnxruntime-gpu)"
            )
        index = int(device.partition(":")[2] or 0)
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    if device != "auto":
        raise ValueError(f"unknown device {device!r}: 'auto', 'cpu' or 'cuda[:N]'")
    if "CUDAExecutionProvider" in available and _gpu_visible():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _gpu_visible() -> bool:
    """Whether a CUDA device is visible (onnxruntime-gpu is importable without one)."""
    try:
        import ctypes

        cuda = ctypes.CDLL("libcuda.so.1")
        count = ctypes.c_int(0)
        return cuda.cuInit(0) == 0 and cuda.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0
    except OSError:
        return False


def _session(
    path: Path, checkpoint_hash: str, kind: str, providers: list[Any], threads: int, spinning: bool
) -> ort.InferenceSession:
    if not path.is_file():
        checkpoint = path.with_name(path.name.removesuffix(f".{kind}.onnx") + ".safetensors")
        raise CheckpointError(
            f"{path.name} is missing beside the checkpoint: "
            f"export it with `photoscore export --checkpoint {checkpoint}`"
        )
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # warnings about unused initialisers are noise to an operator
    # Idle intra-op threads spin for work by default: fastest for a server's bursts, but it takes
    # CPU from the indexer's decoding processes on a small machine.
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    meta = session.get_modelmeta().custom_metadata_map
    if meta.get(META_GRAPH) != kind:
        raise CheckpointError(f"{path.name} is not a PhotoScore {kind} graph")
    if meta.get(META_CHECKPOINT_SHA256) != checkpoint_hash:
        raise CheckpointError(
            f"{path.name} was exported from another checkpoint "
            f"({str(meta.get(META_CHECKPOINT_SHA256))[:12]}, not {checkpoint_hash[:12]}): re-export it"
        )
    return session


@dataclass
class Matcher(CheckpointFacts):
    """A checkpoint's ONNX graphs plus its preprocessing, identified by the checkpoint's hash."""

    meta: CheckpointMeta
    checkpoint: Path
    checkpoint_hash: str
    sessions: dict[str, ort.InferenceSession] = field(repr=False)
    device: str = "cpu"
    batch_size: int = CLIP_BATCH

    @classmethod
    def load(
        cls, path: Path, device: str = "auto", threads: int = 0, spinning: bool = True, batch_size: int = CLIP_BATCH
    ) -> Matcher:
        """Load the checkpoint's metadata and its graphs. ``threads``: ONNX Runtime's intra-op
        threads (0: one per physical core); ``spinning``: whether idle ones spin for work;
        ``batch_size``: clips per music-graph run (memory grows with it, not with the song)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint not found: {path}")
        meta = read_meta(path)
        sha = file_sha256(path)
        providers = providers_for(device)
        sessions = {kind: _session(p, sha, kind, providers, threads, spinning) for kind, p in onnx_paths(path).items()}
        used = sessions["image"].get_providers()[0]
        return cls(
            meta=meta,
            checkpoint=path,
            checkpoint_hash=sha,
            sessions=sessions,
            device="cuda" if used == "CUDAExecutionProvider" else "cpu",
            batch_size=max(1, int(batch_size)),
        )

    def embed_image_tensor(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings [n, dim] and VA [n, 2] of preprocessed photos [n, 3, S, S]
        (``model.transforms.image_tensor``)."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if len(x) == 0:
            return np.zeros((0, self.dim), np.float32), np.zeros((0, 2), np.float32)
        emb, va = self.sessions["image"].run(None, {"image": x})
        return emb, va

    def embed_images(self, images: list[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        """L2-normalised embeddings [n,dim] and VA [n,2] in [0,1] for decoded RGB images."""
        return self.embed_image_tensor(image_batch(images, self.image_size))

    def featurize(self, y: np.ndarray, hop_seconds: float = 2.0) -> ClipSet:
        return cut_clips(y, hop_seconds=hop_seconds, tagger=self.needs_tagger_input)

    def run_music(self, spectral: np.ndarray, tagger: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """One run of the music graph on network-ready inputs (no batching)."""
        feeds = {"spectral": np.ascontiguousarray(spectral, dtype=np.float32)}
        if self.needs_tagger_input:
            if tagger is None:
                raise ValueError("this model needs the tagger input of every clip: cut clips with tagger=True")
            feeds["tagger"] = np.ascontiguousarray(tagger, dtype=np.float32)
        emb, va = self.sessions["music"].run(None, feeds)
        return emb, va

    def embed_clip_features(
        self, features: np.ndarray, tagger: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings [n,dim] and VA [n,2] for raw [n,193,87] clip features (and, for a model
        whose music backbone is the pretrained tagger, its [n,187,96] inputs). Runs in batches
        of ``batch_size`` clips, so memory does not grow with the song."""
        if len(features) == 0:
            return np.zeros((0, self.dim), np.float32), np.zeros((0, 2), np.float32)
        if self.needs_tagger_input and (tagger is None or len(tagger) != len(features)):
            raise ValueError("this model needs the tagger input of every clip: cut clips with tagger=True")
        embs = np.empty((len(features), self.dim), np.float32)
        vas = np.empty((len(features), 2), np.float32)
        for start in range(0, len(features), self.batch_size):
            sl = slice(start, start + self.batch_size)
            spectral = self.meta.feature_stats.to_network_input(features[sl])
            embs[sl], vas[sl] = self.run_music(spectral, tagger[sl] if tagger is not None else None)
        return embs, vas

    @cached_property
    def query_bank(self) -> np.ndarray:
        """[R, dim] embeddings of training photos for querybank normalisation (R may be 0;
        unfilled rows are dropped). Read once from the checkpoint."""
        with safe_open(str(self.checkpoint), framework="numpy") as fh:
            bank = fh.get_tensor("query_bank") if "query_bank" in fh.keys() else np.zeros((0, self.dim))  # noqa: SIM118
        bank = np.asarray(bank, np.float32)
        return bank[np.linalg.norm(bank, axis=1) > 0]

    def similarity_matrix(self, image_embs: np.ndarray, clip_embs: np.ndarray) -> np.ndarray:
        """Predicted similarity [n_images, n_clips] of every image against every clip."""
        images = np.ascontiguousarray(image_embs, dtype=np.float32).reshape(-1, self.dim)
        clips = np.ascontiguousarray(clip_embs, dtype=np.float32).reshape(-1, self.dim)
        out = np.zeros((len(images), len(clips)), np.float32)
        if len(images) == 0 or len(clips) == 0:
            return out
        step = max(1, SIMILARITY_PAIRS // len(clips))
        for start in range(0, len(images), step):
            sl = slice(start, start + step)
            out[sl] = self.sessions["similarity"].run(None, {"images": images[sl], "clips": clips})[0]
        return out

    def similarity(self, image_emb: np.ndarray, clip_embs: np.ndarray) -> np.ndarray:
        """The learned similarity predictor's score in [0,1] for one image against k clips."""
        return self.similarity_matrix(np.asarray(image_emb, np.float32).reshape(1, -1), clip_embs)[0]

    def warmup(self) -> None:
        """Run each graph once so the first request does not pay for lazy initialisation."""
        img = Image.new("RGB", (self.image_size, self.image_size), (128, 96, 64))
        emb, _ = self.embed_images([img])
        rng = np.random.default_rng(0)
        y = (0.1 * rng.standard_normal(int(3.5 * 22050))).astype(np.float32)
        clips = self.featurize(y)
        clip_emb, _ = self.embed_clip_features(clips.features, clips.tagger)
        self.similarity(emb[0], clip_emb)
