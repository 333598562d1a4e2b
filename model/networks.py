"""CDCML networks: image branch, music branch, similarity predictor and shared VA predictor.

Backbones are configurable because no ImageNet weights can be downloaded here: the paper's
ResNet-50 / ResNet-18 are available, as are a small torchvision model and a compact CNN that
trains on a CPU. Optional hand-crafted affect features are computed inside the branches from
the very tensors the backbones see, so the runtime interface stays tensor in, embedding out.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from model.features import N_FEATURES

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_BACKBONES = ("resnet50", "resnet18", "mobilenet_v3_small", "compact")
MUSIC_BACKBONES = ("resnet18", "resnet50", "mobilenet_v3_small", "compact")
N_IMAGE_AFFECT = 24
N_MUSIC_AFFECT = 2 * N_FEATURES


@dataclass
class ModelConfig:
    """Architecture; stored in every checkpoint so it can be rebuilt without a config file."""

    image_backbone: str = "resnet50"
    music_backbone: str = "resnet18"
    embed_dim: int = 512
    dropout: float = 0.5
    image_size: int = 224
    compact_width: int = 32
    affect_features: bool = False
    sim_hidden: tuple[int, int] | None = None  # default (embed_dim // 2, embed_dim // 8), as for 512-d
    va_hidden: tuple[int, int] | None = None  # default (embed_dim // 4, embed_dim // 16)
    image_weights: str | None = None
    music_weights: str | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class CompactCNN(nn.Module):
    """A small CNN that trains on a CPU in minutes: a stride-2 stem, then four
    conv-BN-ReLU-pool stages, global mean and max pooling."""

    def __init__(self, in_channels: int = 3, width: int = 32) -> None:
        super().__init__()
        chans = [width, width * 2, width * 4, width * 8]
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, width, 5, stride=2, padding=2, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        ]
        for cin, cout in zip([width, *chans[:-1]], chans, strict=True):
            layers += [
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2, ceil_mode=True),
            ]
        self.body = nn.Sequential(*layers)
        self.out_features = chans[-1] * 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        return torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)


def _load_local_weights(module: nn.Module, weights: str | None) -> None:
    """Load ImageNet weights only from a local file; never downloads."""
    if not weights:
        return
    path = Path(weights)
    if not path.is_file():
        log.warning("backbone weights %s not found; training from scratch", path)
        return
    state = torch.load(path, map_location="cpu", weights_only=True)
    missing, unexpected = module.load_state_dict(state, strict=False)
    log.info("loaded %s (missing %d, unexpected %d keys)", path, len(missing), len(unexpected))


def build_backbone(name: str, width: int = 32, weights: str | None = None) -> tuple[nn.Module, int]:
    """Return a feature extractor (N,3,H,W) -> (N,F) and its output width F."""
    if name == "compact":
        net = CompactCNN(3, width)
        return net, net.out_features
    if name in ("resnet50", "resnet18"):
        net = getattr(torchvision.models, name)(weights=None)
        _load_local_weights(net, weights)
        out = net.fc.in_features
        net.fc = nn.Identity()
        return net, out
    if name == "mobilenet_v3_small":
        net = torchvision.models.mobilenet_v3_small(weights=None)
        _load_local_weights(net, weights)
        out = net.classifier[0].in_features
        net.classifier = nn.Identity()
        return net, out
    raise ValueError(f"unknown backbone {name!r}; choose from {sorted(set(IMAGE_BACKBONES))}")


def image_affect_features(x: torch.Tensor) -> torch.Tensor:
    """Cheap colour statistics known to track image valence (brightness, saturation, hue,
    colourfulness, gradient energy), computed from an ImageNet-normalised batch."""
    mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    rgb = (x * std + mean).clamp(0, 1)
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    v = rgb.amax(dim=1)
    c = v - rgb.amin(dim=1)
    s = c / v.clamp_min(1e-4)
    hue = torch.atan2(1.7320508 * (g - b), 2 * r - g - b)
    w = s / s.sum(dim=(1, 2), keepdim=True).clamp_min(1e-4)
    hue_cos = (w * torch.cos(hue)).sum(dim=(1, 2))
    hue_sin = (w * torch.sin(hue)).sum(dim=(1, 2))
    rg, yb = r - g, 0.5 * (r + g) - b
    colourful = torch.sqrt(rg.var(dim=(1, 2)) + yb.var(dim=(1, 2)) + 1e-8) + 0.3 * torch.sqrt(
        rg.mean(dim=(1, 2)) ** 2 + yb.mean(dim=(1, 2)) ** 2 + 1e-8
    )
    bins = torch.linspace(-torch.pi, torch.pi, 9, device=x.device)
    hue_hist = torch.stack(
        [(w * ((hue >= lo) & (hue < hi)).float()).sum(dim=(1, 2)) for lo, hi in zip(bins[:-1], bins[1:], strict=True)],
        dim=1,
    )
    grey = rgb.mean(dim=1)
    grad = (grey[:, 1:, :] - grey[:, :-1, :]).abs().mean(dim=(1, 2)) + (grey[:, :, 1:] - grey[:, :, :-1]).abs().mean(
        dim=(1, 2)
    )
    stats = [
        v.mean(dim=(1, 2)),
        v.std(dim=(1, 2)),
        s.mean(dim=(1, 2)),
        s.std(dim=(1, 2)),
        r.mean(dim=(1, 2)),
        g.mean(dim=(1, 2)),
        b.mean(dim=(1, 2)),
        (v < 0.2).float().mean(dim=(1, 2)),
        (v > 0.8).float().mean(dim=(1, 2)),
        hue_cos,
        hue_sin,
        colourful,
        grad,
        (s * v).mean(dim=(1, 2)),
        c.mean(dim=(1, 2)),
        grey.std(dim=(1, 2)),
    ]
    return torch.cat([torch.stack(stats, dim=1), hue_hist], dim=1)


def music_affect_features(x: torch.Tensor) -> torch.Tensor:
    """Pooled spectral statistics: mean and spread over time of each standardised feature row."""
    base = x[:, 0]
    return torch.cat([base.mean(dim=2), base.std(dim=2)], dim=1)


def _mlp_head(d_in: int, hidden: tuple[int, int], d_out: int, dropout: float) -> nn.Sequential:
    """Three FC layers with BatchNorm and ReLU, Sigmoid output (the paper's predictor shape)."""
    h1, h2 = hidden
    return nn.Sequential(
        nn.Linear(d_in, h1),
        nn.BatchNorm1d(h1),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(h1, h2),
        nn.BatchNorm1d(h2),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(h2, d_out),
        nn.Sigmoid(),
    )


class Branch(nn.Module):
    """Backbone (+ optional affect features) -> FC -> L2-normalised embedding."""

    def __init__(self, backbone: nn.Module, width: int, affect, n_affect: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.backbone = backbone
        self.affect = affect
        self.affect_norm = nn.BatchNorm1d(n_affect) if affect is not None else None
        d_in = width + (n_affect if affect is not None else 0)
        self.project = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(d_in, cfg.embed_dim))

    def parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Backbone output and raw affect features; cached when the backbone is frozen."""
        return self.backbone(x), (self.affect(x) if self.affect is not None else None)

    def head(self, h: torch.Tensor, affect: torch.Tensor | None) -> torch.Tensor:
        if affect is not None:
            h = torch.cat([h, self.affect_norm(affect)], dim=1)
        return F.normalize(self.project(h), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(*self.parts(x))


class CDCML(nn.Module):
    """Two branches into one space, a similarity predictor and one VA predictor shared by both."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ib, iw = build_backbone(cfg.image_backbone, cfg.compact_width, cfg.image_weights)
        mb, mw = build_backbone(cfg.music_backbone, cfg.compact_width, cfg.music_weights)
        use = cfg.affect_features
        self.image_branch = Branch(ib, iw, image_affect_features if use else None, N_IMAGE_AFFECT, cfg)
        self.music_branch = Branch(mb, mw, music_affect_features if use else None, N_MUSIC_AFFECT, cfg)
        d = cfg.embed_dim
        sim_hidden = tuple(cfg.sim_hidden or (d // 2, d // 8))
        va_hidden = tuple(cfg.va_hidden or (d // 4, d // 16))
        self.similarity_head = _mlp_head(2 * d, sim_hidden, 1, cfg.dropout)
        self.va_head = _mlp_head(d, va_hidden, 2, cfg.dropout)

    def embed_image(self, x: torch.Tensor) -> torch.Tensor:
        return self.image_branch(x)

    def embed_music(self, x: torch.Tensor) -> torch.Tensor:
        return self.music_branch(x)

    def similarity(self, image_emb: torch.Tensor, music_emb: torch.Tensor) -> torch.Tensor:
        """Predicted similarity in [0,1] for aligned rows of image and music embeddings."""
        return self.similarity_head(torch.cat([image_emb, music_emb], dim=1)).squeeze(1)

    def va(self, emb: torch.Tensor) -> torch.Tensor:
        """Valence and arousal in [0,1] from an embedding of either modality."""
        return self.va_head(emb)
