"""One-file checkpoints in safetensors: weights plus JSON metadata (config, feature statistics,
label normalisation, training-data summary, validation metrics).

safetensors never executes pickled code, which matters because operators load checkpoints
they did not make. Floating weights may be stored as fp16 to keep the shipped model small.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from app.core.files import file_sha256
from model.features import FeatureStats
from model.networks import CDCML, ModelConfig

FORMAT = "photoscore-cdcml/1"
_OPTIONAL_KEYS = ("image_va_affine", "music_va_affine", "query_bank")


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


def save_checkpoint(path: Path, model: CDCML, meta: CheckpointMeta, *, half: bool = False) -> str:
    """Write atomically (temp file, then rename); returns the file's sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for key, value in model.state_dict().items():
        t = value.detach().cpu().contiguous()
        tensors[key] = t.half() if half and t.is_floating_point() else t
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"photoscore": meta.to_json()})
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; images run as another user
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return file_sha256(path)


def read_meta(path: Path) -> CheckpointMeta:
    try:
        with safe_open(str(path), framework="pt") as fh:
            raw = (fh.metadata() or {}).get("photoscore")
    except FileNotFoundError:
        raise
    except Exception as exc:  # safetensors raises its own error types for damaged headers
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({exc})") from exc
    if raw is None:
        raise CheckpointError(f"{path}: safetensors file without PhotoScore metadata")
    return CheckpointMeta.from_json(raw)


def load_checkpoint(path: Path, device: str | torch.device = "cpu") -> tuple[CDCML, CheckpointMeta]:
    """Rebuild the model from the file alone (no config file), in eval mode, float32."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    meta = read_meta(path)
    cfg = ModelConfig.from_dict({**meta.config.to_dict(), "image_weights": None, "music_weights": None})
    model = CDCML(cfg, pretrained=False)  # every weight comes from the file
    state = {}
    with safe_open(str(path), framework="pt", device="cpu") as fh:
        for key in fh.keys():  # noqa: SIM118 - safe_open is not a mapping
            t = fh.get_tensor(key)
            state[key] = t.float() if t.is_floating_point() else t
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in _OPTIONAL_KEYS]  # older checkpoints: identity calibration
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not match the stored config (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return model.to(device).eval(), meta
