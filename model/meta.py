"""What a PhotoScore checkpoint says about itself, readable without PyTorch.

The architecture (:class:`ModelConfig`) and the metadata beside the weights
(:class:`CheckpointMeta`) are all that serving needs besides the exported ONNX graphs, so this
module imports no torch: the runtime (``model.inference``) and the indexer read checkpoints
through it, and only training and export (``model.checkpoint``) load the weights into PyTorch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from safetensors import safe_open

from model.features import FeatureStats


@dataclass
class ModelConfig:
    """Architecture; stored in every checkpoint so it can be rebuilt without a config file."""

    image_backbone: str = "resnet50"
    music_backbone: str = "resnet18"
    embed_dim: int = 512
    dropout: float = 0.5
    image_size: int = 224
    compact_width: int = 32
    # "mean": the image backbone's last feature map, mean-pooled; "stages" (EfficientNet-Lite):
    # also the mean and spread of its intermediate stages' outputs (model.networks.EfficientNetLite)
    image_pooling: str = "mean"
    affect_features: bool = False
    sim_hidden: tuple[int, int] | None = None  # default (embed_dim // 2, embed_dim // 8), as for 512-d
    va_hidden: tuple[int, int] | None = None  # default (embed_dim // 4, embed_dim // 16)
    proj_hidden: int | None = None  # None: one linear projection into the space; else an MLP this wide
    # Similarity predictor input: "concat" [ei, em] (the paper's), or "interaction" [ei * em, |ei - em|],
    # which gives the predictor no song-only input to learn a per-song bias from (a source of hub songs).
    sim_input: str = "concat"
    # Photos whose embeddings the checkpoint keeps as a query bank: the service scores each song
    # against them once and ranks songs by their score relative to that (querybank normalisation),
    # so a song that suits every photo (a hub) stops opening every list. 0: no bank.
    query_bank: int = 0
    # Ensemble members over the shared backbones (see model.networks.CDCML); the space the
    # service indexes is their spaces joined, members * embed_dim wide.
    members: int = 1
    image_weights: str | None = None
    music_weights: str | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def space_dim(self) -> int:
        """Width of the embeddings the runtime returns and the index stores."""
        return self.embed_dim * self.members

    @property
    def uses_tagger(self) -> bool:
        """Whether the music backbone reads the pretrained tagger's spectrogram windows."""
        return self.music_backbone == "musicnn"

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


FORMAT = "photoscore-cdcml/1"


class CheckpointError(ValueError):
    """The file is not a PhotoScore checkpoint, or it is damaged."""


@dataclass
class CheckpointMeta:
    """Everything besides the weights that inference and evaluation need."""

    config: ModelConfig
    feature_stats: FeatureStats
    name: str = "photoscore"
    sigma: float = 0.5
    label_normalisation: dict = field(default_factory=dict)
    data_summary: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    train_config: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": FORMAT,
                "name": self.name,
                "config": self.config.to_dict(),
                "feature_stats": self.feature_stats.to_dict(),
                "sigma": self.sigma,
                "label_normalisation": self.label_normalisation,
                "data_summary": self.data_summary,
                "metrics": self.metrics,
                "train_config": self.train_config,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> CheckpointMeta:
        data = json.loads(text)
        if data.get("format") != FORMAT:
            raise CheckpointError(f"unsupported checkpoint format {data.get('format')!r}")
        return cls(
            config=ModelConfig.from_dict(data["config"]),
            feature_stats=FeatureStats.from_dict(data["feature_stats"]),
            name=data.get("name", "photoscore"),
            sigma=float(data.get("sigma", 0.5)),
            label_normalisation=data.get("label_normalisation", {}),
            data_summary=data.get("data_summary", {}),
            metrics=data.get("metrics", {}),
            train_config=data.get("train_config", {}),
        )


def read_meta(path: Path) -> CheckpointMeta:
    try:
        with safe_open(str(path), framework="numpy") as fh:
            raw = (fh.metadata() or {}).get("photoscore")
    except FileNotFoundError:
        raise
    except Exception as exc:  # safetensors raises its own error types for damaged headers
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({exc})") from exc
    if raw is None:
        raise CheckpointError(f"{path}: safetensors file without PhotoScore metadata")
    return CheckpointMeta.from_json(raw)


class CheckpointFacts:
    """What every runtime of a checkpoint says about it, from its metadata and file hash
    (``model.inference.Matcher`` on ONNX Runtime, ``model.export.TorchMatcher`` in PyTorch)."""

    meta: CheckpointMeta
    checkpoint_hash: str

    @property
    def dim(self) -> int:
        return self.meta.config.space_dim

    @property
    def image_size(self) -> int:
        return self.meta.config.image_size

    @property
    def needs_tagger_input(self) -> bool:
        """Whether clips must carry the pretrained tagger's spectrograms (``cut_clips(tagger=True)``)."""
        return self.meta.config.uses_tagger

    @property
    def version(self) -> str:
        return f"{self.meta.name}@{self.checkpoint_hash[:12]}"
