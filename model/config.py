"""Training configuration: one YAML/JSON file, paper defaults, ``--set a.b=value`` overrides."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from model.losses import ABLATIONS, LossWeights
from model.meta import ModelConfig


@dataclass
class DataConfig:
    """Which labelled sets to use and how music is rendered and clipped."""

    root: str = "../shared/data"
    images: list[str] = field(default_factory=lambda: ["oasis", "emotion6"])
    music: list[str] = field(default_factory=lambda: ["vgmidi", "panda4q"])
    programs: list[int] = field(default_factory=lambda: [0, 48, 24])
    max_seconds: float = 60.0
    clip_hop: float = 2.0
    max_items_per_source: int | None = None
    weak_weight: float = 0.5
    split: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    pairs_per_clip: int = 50
    pair_subsample: float | None = None
    image_cache_size: int = 0  # ignored: pixels are cached at image_size (kept so older configs load)
    tagger_input: bool = False  # also cut the pretrained music tagger's input per clip (music_backbone: musicnn)
    cache_dir: str = ".cache/photoscore"
    workers: int = 2


@dataclass
class OptimConfig:
    """Paper defaults: SGD, batch 128, lr 1e-3, x0.1 every 10 epochs."""

    optimizer: str = "sgd"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int = 128
    epochs: int = 30
    step_size: int = 10
    gamma: float = 0.1
    steps_per_epoch: int | None = None
    freeze_image_backbone: bool = False
    freeze_music_backbone: bool = False
    # With a frozen EfficientNet-Lite image backbone: its last N blocks, head convolution and
    # BN train anyway (BN statistics stay fixed), at lr * tune_lr_scale; the part below them is
    # frozen and its output cached (model.train.Trainer). 0: the whole backbone stays frozen.
    image_tune_blocks: int = 0
    tune_lr_scale: float = 0.1
    half_checkpoint: bool = True
    select_metric: str = "ndcg@10"  # validation metric (higher is better) picking the saved epoch, or "last"


@dataclass
class TrainConfig:
    name: str = "photoscore"
    seed: int = 0
    device: str = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossWeights = field(default_factory=LossWeights)
    optim: OptimConfig = field(default_factory=OptimConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        data = dict(data)
        loss = data.pop("loss", {})
        if isinstance(loss, str):
            if loss not in ABLATIONS:
                raise ValueError(f"unknown loss preset {loss!r}; choose from {sorted(ABLATIONS)}")
            loss_w = ABLATIONS[loss]
        else:
            loss_w = LossWeights(**_known(LossWeights, loss, "loss"))
        cfg = cls(
            name=data.get("name", "photoscore"),
            seed=int(data.get("seed", 0)),
            device=data.get("device", "auto"),
            data=DataConfig(**_known(DataConfig, data.get("data", {}), "data")),
            model=ModelConfig(**_known(ModelConfig, data.get("model", {}), "model")),
            loss=loss_w,
            optim=OptimConfig(**_known(OptimConfig, data.get("optim", {}), "optim")),
        )
        m, o = cfg.model, cfg.optim
        if o.image_tune_blocks and not (
            o.freeze_image_backbone and m.image_backbone.startswith("efficientnet_lite") and m.image_pooling == "mean"
        ):
            raise ValueError(
                "optim.image_tune_blocks needs an EfficientNet-Lite image backbone with mean pooling "
                "and optim.freeze_image_backbone: true"
            )
        return cfg


def _known(kind: type, values: dict, section: str) -> dict:
    names = {f.name for f in fields(kind)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"unknown key(s) in '{section}': {sorted(unknown)}; known: {sorted(names)}")
    return values


def load_config(path: Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML or JSON config and apply ``section.key=value`` overrides (YAML values)."""
    data: dict = {}
    if path is not None:
        text = Path(path).read_text()
        data = json.loads(text) if str(path).endswith(".json") else (yaml.safe_load(text) or {})
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a config must be a mapping")
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} is not of the form section.key=value")
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(value)
    return TrainConfig.from_dict(data)
