"""The one definition of the model's inputs: how a photo (and a clip's features) becomes a tensor.

As open_clip's ``transform.py`` does, training and serving share one transform so they cannot
drift apart. An image input is built in two steps:

1. geometric, :func:`image_pixels`: short side to ``size`` (bilinear, antialiased), centre
   crop to ``size`` x ``size``, uint8 [3, size, size]. Preparation caches this for training;
2. photometric, :func:`pixels_to_tensor`: float32 in [0, 1], then ImageNet mean/std
   normalisation (:data:`IMAGENET_MEAN`, :data:`IMAGENET_STD`).

Serving runs both on every photo (:func:`image_tensor`, :func:`image_batch`); training and
evaluation run step 2 on the cached pixels (:func:`image_input`), where training's one
augmentation is a horizontal flip of half the images: crops would change what the service
sees, and colour carries the signal. Networks that need the pixels back (affect features,
a backbone trained with another scaling) undo step 2 with :func:`denormalise` or the constants.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

if TYPE_CHECKING:  # only the type: image preprocessing does not load the audio stack
    from model.features import FeatureStats

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resize_crop(img: Image.Image, size: int) -> Image.Image:
    """Short side to ``size`` (bilinear, antialiased), centre crop to ``size`` x ``size``.

    The one geometric transform of the image branch: training caches its output as pixels,
    evaluation and the service call it on every photo, so all three see the same pixels.
    """
    if img.mode != "RGB":
        img = img.convert("RGB")
    img = TF.resize(img, [size], interpolation=InterpolationMode.BILINEAR, antialias=True)
    return TF.center_crop(img, [size, size])


def pixels_to_tensor(pixels: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [..., 3, H, W] -> float32 scaled to [0, 1] and ImageNet mean/std normalised."""
    x = torch.as_tensor(np.ascontiguousarray(pixels)) if isinstance(pixels, np.ndarray) else pixels
    x = TF.to_dtype(x, torch.float32, scale=True)
    return TF.normalize(x, mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD))


def denormalise(x: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised [n, 3, H, W] -> RGB on the [0, 1] scale (not clamped), in ``x``'s dtype."""
    mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return x * std + mean


def image_pixels(img: Image.Image, size: int = 224) -> np.ndarray:
    """uint8 [3, size, size] after :func:`resize_crop` (what training caches)."""
    return np.asarray(resize_crop(img, size), np.uint8).transpose(2, 0, 1)


def image_tensor(img: Image.Image, size: int = 224) -> torch.Tensor:
    """float32 [3, size, size]: :func:`resize_crop`, then :func:`pixels_to_tensor`."""
    return pixels_to_tensor(TF.pil_to_tensor(resize_crop(img, size)))


def image_batch(images: Sequence[Image.Image], size: int = 224) -> torch.Tensor:
    """float32 [n, 3, size, size] from :func:`image_tensor` of each image."""
    if not images:
        return torch.empty((0, 3, size, size), dtype=torch.float32)
    return torch.stack([image_tensor(img, size) for img in images])


def image_input(pixels: np.ndarray, rng: np.random.Generator | None = None) -> torch.Tensor:
    """uint8 [n,3,S,S] (cached by :func:`image_pixels`) -> normalised float, as the service sees it.
    Training (``rng`` given) flips half the images; nothing else is augmented: crops would
    change what the service sees, and colour carries the signal."""
    if rng is not None:
        flip = rng.random(len(pixels)) < 0.5
        if flip.any():
            pixels = pixels.copy()
            pixels[flip] = pixels[flip][..., ::-1]
    return pixels_to_tensor(pixels)


def clip_input(stats: FeatureStats, features: np.ndarray) -> torch.Tensor:
    """Raw clip features [n, 193, 87] -> the music branch's spectral input [n, 3, 193, 87]."""
    return torch.from_numpy(stats.to_network_input(features.astype(np.float32)))
