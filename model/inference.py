"""Runtime facade over a checkpoint: what the indexer and the service call.

Loading happens once per process (the service keeps one ``Matcher`` in its inference worker);
nothing here is a module-level singleton.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from app.core.files import file_sha256
from model.checkpoint import CheckpointMeta, load_checkpoint
from model.features import ClipSet, cut_clips
from model.networks import CDCML
from model.transforms import image_batch


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass
class Matcher:
    """A loaded CDCML model plus its preprocessing, identified by its checkpoint hash."""

    model: CDCML
    meta: CheckpointMeta
    checkpoint_hash: str
    device: torch.device
    batch_size: int = 256

    @classmethod
    def load(cls, path: Path, device: str = "auto") -> Matcher:
        dev = resolve_device(device)
        model, meta = load_checkpoint(Path(path), dev)
        return cls(model=model, meta=meta, checkpoint_hash=file_sha256(Path(path)), device=dev)

    @property
    def dim(self) -> int:
        return self.meta.config.embed_dim

    @property
    def image_size(self) -> int:
        return self.meta.config.image_size

    @property
    def version(self) -> str:
        return f"{self.meta.name}@{self.checkpoint_hash[:12]}"

    @torch.inference_mode()
    def embed_image_tensor(self, batch: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        emb = self.model.embed_image(batch.to(self.device))
        va = self.model.image_va(emb)
        return emb.float().cpu().numpy(), va.float().cpu().numpy()

    def embed_images(self, images: list[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        """L2-normalised embeddings [n,dim] and VA [n,2] in [0,1] for decoded RGB images."""
        return self.embed_image_tensor(image_batch(images, self.image_size))

    @property
    def needs_tagger_input(self) -> bool:
        """Whether clips must carry the pretrained tagger's spectrograms (``cut_clips(tagger=True)``)."""
        return self.meta.config.uses_tagger

    def featurize(self, y: np.ndarray, hop_seconds: float = 2.0) -> ClipSet:
        return cut_clips(y, hop_seconds=hop_seconds, tagger=self.needs_tagger_input)

    @torch.inference_mode()
    def embed_clip_features(
        self, features: np.ndarray, tagger: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings [n,dim] and VA [n,2] for raw [n,193,87] clip features (and, for a model
        whose music backbone is the pretrained tagger, its [n,187,96] inputs)."""
        if len(features) == 0:
            return np.zeros((0, self.dim), np.float32), np.zeros((0, 2), np.float32)
        if self.needs_tagger_input and (tagger is None or len(tagger) != len(features)):
            raise ValueError("this model needs the tagger input of every clip: cut clips with tagger=True")
        embs, vas = [], []
        for start in range(0, len(features), self.batch_size):
            sl = slice(start, start + self.batch_size)
            spectral = torch.from_numpy(self.meta.feature_stats.to_network_input(features[sl])).to(self.device)
            windows = None
            if tagger is not None and self.needs_tagger_input:  # tagger is there when needed (above)
                windows = torch.from_numpy(np.asarray(tagger[sl], np.float32)).to(self.device)
            emb = self.model.embed_clips(spectral, windows)
            embs.append(emb.float().cpu().numpy())
            vas.append(self.model.music_va(emb).float().cpu().numpy())
        return np.concatenate(embs), np.concatenate(vas)

    @cached_property
    def query_bank(self) -> np.ndarray:
        """[R, dim] embeddings of training photos for querybank normalisation (R may be 0;
        unfilled rows are dropped). Read once: the search calls it on every request."""
        bank = self.model.query_bank.float().cpu().numpy()
        return bank[np.linalg.norm(bank, axis=1) > 0]

    @torch.inference_mode()
    def similarity_matrix(self, image_embs: np.ndarray, clip_embs: np.ndarray) -> np.ndarray:
        """Predicted similarity [n_images, n_clips] of every image against every clip."""
        images = torch.as_tensor(np.asarray(image_embs, np.float32), device=self.device)
        clips = torch.as_tensor(np.asarray(clip_embs, np.float32), device=self.device)
        if len(images) == 0 or len(clips) == 0:
            return np.zeros((len(images), len(clips)), np.float32)
        a = images.repeat_interleave(len(clips), dim=0)
        b = clips.repeat(len(images), 1)
        return self.model.similarity(a, b).view(len(images), len(clips)).float().cpu().numpy()

    def similarity(self, image_emb: np.ndarray, clip_embs: np.ndarray) -> np.ndarray:
        """The learned similarity predictor's score in [0,1] for one image against k clips."""
        return self.similarity_matrix(np.asarray(image_emb, np.float32).reshape(1, -1), clip_embs)[0]

    def warmup(self) -> None:
        """Run each network once so the first request does not pay for lazy initialisation."""
        img = Image.new("RGB", (self.image_size, self.image_size), (128, 96, 64))
        emb, _ = self.embed_images([img])
        rng = np.random.default_rng(0)
        y = (0.1 * rng.standard_normal(int(3.5 * 22050))).astype(np.float32)
        clips = self.featurize(y)
        clip_emb, _ = self.embed_clip_features(clips.features, clips.tagger)
        self.similarity(emb[0], clip_emb)
