"""One-file checkpoints in safetensors: weights plus JSON metadata (config, feature statistics,
label normalisation, training-data summary, validation metrics).

safetensors never executes pickled code, which matters because operators load checkpoints
they did not make. Floating weights may be stored as fp16 to keep the shipped model small.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from app.core.files import atomic_path, file_sha256
from model.meta import CheckpointError, CheckpointMeta, ModelConfig, read_meta
from model.networks import CDCML

# Loaded without them, an older checkpoint keeps identity calibration and no query bank.
_OPTIONAL_KEYS = ("image_va_affine", "music_va_affine", "query_bank")
# Single-model checkpoints written before ensemble members existed name member 0's weights so.
_LEGACY_PREFIXES = {
    "image_branch.affect_norm.": "image_branch.members.0.affect_norm.",
    "image_branch.project.": "image_branch.members.0.project.",
    "music_branch.affect_norm.": "music_branch.members.0.affect_norm.",
    "music_branch.project.": "music_branch.members.0.project.",
    "similarity_head.": "similarity_heads.0.",
    "va_head.": "va_heads.0.",
}


def _current_key(key: str) -> str:
    for old, new in _LEGACY_PREFIXES.items():
        if key.startswith(old):
            return new + key[len(old) :]
    return key


__all__ = ["CheckpointError", "CheckpointMeta", "load_checkpoint", "read_meta", "resolve_device", "save_checkpoint"]


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' -> CUDA when PyTorch sees a GPU, else the CPU; anything else as torch reads it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def save_checkpoint(path: Path, model: CDCML, meta: CheckpointMeta, *, half: bool = False) -> str:
    """Write atomically (temp file, fsync, rename); returns the file's sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for key, value in model.state_dict().items():
        t = value.detach().cpu().contiguous()
        tensors[key] = t.half() if half and t.is_floating_point() else t
    with atomic_path(path, prefix=path.name) as tmp:
        save_file(tensors, tmp, metadata={"photoscore": meta.to_json()})
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; images run as another user
    return file_sha256(path)


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
            state[_current_key(key)] = t.float() if t.is_floating_point() else t
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in _OPTIONAL_KEYS]  # older checkpoints: identity calibration
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not match the stored config (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return model.to(device).eval(), meta
