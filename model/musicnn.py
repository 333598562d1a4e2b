"""Pretrained music tagger for the music branch: a PyTorch port of musicnn's MSD_musicnn (no TensorFlow).

musicnn (Pons & Serra, "musicnn: pre-trained convolutional neural networks for music audio tagging", 2019, ISC
licence) was trained on the 50 most frequent Million Song Dataset tags, several of them moods (happy, sad, Mellow,
chill, party, beautiful...), so its tag probabilities and its 200-d penultimate layer carry emotion cues that a
model trained on a few thousand labelled clips cannot learn from scratch. The weights were converted once from the
TF1 checkpoint in PyPI musicnn 0.1.0 by ``scripts/convert_musicnn.py``; ``tests/model/test_musicnn.py`` checks this port
against TensorFlow's outputs stored by that script.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file
from torch import Tensor, nn

from model.tagger_input import TAGGER_EMBED_DIM, TAGGER_N_MELS, TAGGER_N_TAGS

DEFAULT_WEIGHTS = Path(__file__).parent / "pretrained" / "musicnn-msd.safetensors"


@lru_cache(maxsize=4)
def tag_names(path: Path | None = None) -> tuple[str, ...]:
    """The 50 MSD tags in output order, read from the weights file's metadata (so names and weights travel together)."""
    path = Path(path) if path is not None else DEFAULT_WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(f"musicnn weights not found at {path} (see scripts/convert_musicnn.py)")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "tag_names" not in meta:
        raise ValueError(f"{path} has no 'tag_names' metadata: not a converted musicnn file")
    names = tuple(json.loads(meta["tag_names"]))
    if len(names) != TAGGER_N_TAGS:
        raise ValueError(f"{path} lists {len(names)} tags, expected {TAGGER_N_TAGS}")
    return names


def __getattr__(name: str) -> tuple[str, ...]:
    """``TAG_NAMES`` is read lazily so importing this module does no file I/O."""
    if name == "TAG_NAMES":
        return tag_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------------------------------------------- model


class _FrozenBatchNorm(nn.Module):
    """TF's batch_normalization in inference mode (moving statistics, epsilon 1e-3), over dim 1 of any rank."""

    weight: Tensor
    bias: Tensor
    running_mean: Tensor
    running_var: Tensor

    def __init__(self, n: int, eps: float = 1e-3) -> None:
        super().__init__()
        self.eps = eps
        for name, value in [("weight", 1.0), ("bias", 0.0), ("running_mean", 0.0), ("running_var", 1.0)]:
            self.register_buffer(name, torch.full((n,), value))

    def forward(self, x: Tensor) -> Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


class _ConvBlock(nn.Module):
    """conv -> ReLU -> BN, musicnn's order (BN after the activation)."""

    def __init__(self, conv: nn.Conv1d | nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv
        self.bn = _FrozenBatchNorm(conv.out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(F.relu(self.conv(x)))


class MusicnnTagger(nn.Module):
    """MSD_musicnn in inference mode: log-mel [n, T, 96] -> (50 tag probabilities, 200-d penultimate).

    Front end: timbral filters (7x38, 7x67 time x frequency, 204 each) and temporal filters (128/64/32 x 1, 51 each),
    each max-pooled over frequency; mid end: three dense-connected 7-tap convs (64); back end: max and mean over time,
    dense 200 ('penultimate'), dense 50. Trained on T = 187 (3 s); being fully convolutional it accepts other T.
    """

    def __init__(self) -> None:
        super().__init__()
        self.input_bn = _FrozenBatchNorm(1)
        widths = [int(0.4 * TAGGER_N_MELS), int(0.7 * TAGGER_N_MELS)]  # 38, 67
        self.timbral = nn.ModuleList(_ConvBlock(nn.Conv2d(1, 204, (7, w))) for w in widths)
        self.temporal_kernels = (128, 64, 32)
        self.temporal = nn.ModuleList(_ConvBlock(nn.Conv2d(1, 51, (k, 1))) for k in self.temporal_kernels)
        n_front = 2 * 204 + 3 * 51  # 561
        self.midend = nn.ModuleList(_ConvBlock(nn.Conv1d(c, 64, 7, padding=3)) for c in (n_front, 64, 64))
        n_pool = n_front + 3 * 64  # 753
        self.pool_bn = _FrozenBatchNorm(2 * n_pool)
        self.dense = nn.Linear(2 * n_pool, TAGGER_EMBED_DIM)
        self.dense_bn = _FrozenBatchNorm(TAGGER_EMBED_DIM)
        self.classifier = nn.Linear(TAGGER_EMBED_DIM, TAGGER_N_TAGS)

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        """All outputs the golden test checks: tags, logits, penultimate, mean_pool and max_pool ([n, 753])."""
        if x.ndim != 3 or x.shape[-1] != TAGGER_N_MELS:
            raise ValueError(f"expected [n, frames, {TAGGER_N_MELS}] log-mel patches, got {tuple(x.shape)}")
        h = self.input_bn(x.unsqueeze(1))  # [n, 1, T, 96]
        front = []
        for block in self.timbral:  # TF pads time by 3 and convolves 'valid'
            front.append(block(F.pad(h, (0, 0, 3, 3))).amax(dim=3))
        for k, block in zip(self.temporal_kernels, self.temporal, strict=True):  # TF 'same': the extra pad goes last
            front.append(block(F.pad(h, (0, 0, (k - 1) // 2, k // 2))).amax(dim=3))
        f = torch.cat(front, dim=1)  # [n, 561, T]
        c1 = self.midend[0](f)
        c2 = self.midend[1](c1) + c1
        c3 = self.midend[2](c2) + c2
        feats = torch.cat([f, c1, c2, c3], dim=1)  # [n, 753, T]
        max_pool, mean_pool = feats.amax(dim=2), feats.mean(dim=2)
        pooled = torch.stack([max_pool, mean_pool], dim=2).flatten(1)  # TF's concat on the last axis interleaves
        penultimate = self.dense_bn(F.relu(self.dense(self.pool_bn(pooled))))
        logits = self.classifier(penultimate)
        return {
            "tags": torch.sigmoid(logits),
            "logits": logits,
            "penultimate": penultimate,
            "mean_pool": mean_pool,
            "max_pool": max_pool,
        }

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Tag probabilities [n, 50] (sigmoid, order of :func:`tag_names`) and the penultimate layer [n, 200]."""
        out = self.forward_features(x)
        return out["tags"], out["penultimate"]

    @torch.inference_mode()
    def predict(self, patches: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`forward` on numpy patches from :func:`tagger_input`, batched to bound memory."""
        tags, pen = [], []
        for i in range(0, len(patches), batch_size):
            t, p = self(torch.from_numpy(np.ascontiguousarray(patches[i : i + batch_size], dtype=np.float32)))
            tags.append(t.numpy())
            pen.append(p.numpy())
        if not tags:
            return np.zeros((0, TAGGER_N_TAGS), np.float32), np.zeros((0, TAGGER_EMBED_DIM), np.float32)
        return np.concatenate(tags), np.concatenate(pen)

    @classmethod
    def load(cls, path: Path | None = None) -> MusicnnTagger:
        """The converted weights (default: the file shipped in model/pretrained), frozen, in eval mode."""
        path = Path(path) if path is not None else DEFAULT_WEIGHTS
        tag_names(path)  # a clear error if the file is missing or is not a converted musicnn file
        model = cls()
        model.load_state_dict(load_file(str(path)), strict=True)
        return model.eval().requires_grad_(False)
