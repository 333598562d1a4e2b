"""The one definition of the model's inputs: how a photo (and a clip's features) becomes a tensor.

As open_clip's ``transform.py`` does, training and serving share one transform so they cannot
drift apart. An image input is built in two steps:

1. geometric, :func:`image_pixels`: short side to ``size`` (bilinear, antialiased), centre
   crop to ``size`` x ``size``, uint8 [3, size, size]. Preparation caches this for training;
2. photometric, :func:`pixels_to_array`: float32 in [0, 1], then ImageNet mean/std
   normalisation (:data:`IMAGENET_MEAN`, :data:`IMAGENET_STD`).

Serving runs both on every photo (:func:`image_tensor`, :func:`image_batch`); training and
evaluation run step 2 on the cached pixels (:func:`image_input`), where training's one
augmentation is a horizontal flip of half the images: crops would change what the service
sees, and colour carries the signal. Networks that need the pixels back (affect features,
a backbone trained with another scaling) undo step 2 with the constants (:func:`model.networks.denormalise`).

Everything here is numpy and PIL: the serving runtime (ONNX Runtime) imports no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:  # only the type: image preprocessing does not load the audio stack
    from model.features import FeatureStats

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_MEAN = np.asarray(IMAGENET_MEAN, np.float32).reshape(3, 1, 1)
_STD = np.asarray(IMAGENET_STD, np.float32).reshape(3, 1, 1)
_SCALE = np.float32(1.0 / 255.0)


def resize_crop(img: Image.Image, size: int) -> Image.Image:
    """Short side to ``size`` (bilinear, antialiased), centre crop to ``size`` x ``size``.

    The one geometric transform of the image branch: training caches its output as pixels,
    evaluation and the service call it on every photo, so all three see the same pixels. It is
    torchvision's ``resize([size])`` + ``center_crop`` on a PIL image, step for step (the same
    output size rule, PIL's bilinear filter, the same rounding of the crop's corner), written
    with PIL alone so serving needs no torch (``tests/model/test_image.py`` holds it to torchvision).
    """
    if img.mode != "RGB":
        img = img.convert("RGB")
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), resample=Image.Resampling.BILINEAR)
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def pixels_to_array(pixels: np.ndarray) -> np.ndarray:
    """uint8 [..., 3, H, W] -> float32 scaled to [0, 1] and ImageNet mean/std normalised
    (torchvision's ``to_dtype(scale=True)`` + ``normalize``, in the same float32 steps)."""
    x = np.asarray(pixels).astype(np.float32) * _SCALE
    return np.ascontiguousarray((x - _MEAN) / _STD, dtype=np.float32)


def image_pixels(img: Image.Image, size: int = 224) -> np.ndarray:
    """uint8 [3, size, size] after :func:`resize_crop` (what training caches)."""
    return np.asarray(resize_crop(img, size), np.uint8).transpose(2, 0, 1)


def image_tensor(img: Image.Image, size: int = 224) -> np.ndarray:
    """float32 [3, size, size]: :func:`resize_crop`, then :func:`pixels_to_array`."""
    return pixels_to_array(image_pixels(img, size))


def image_batch(images: Sequence[Image.Image], size: int = 224) -> np.ndarray:
    """float32 [n, 3, size, size] from :func:`image_tensor` of each image."""
    if not images:
        return np.empty((0, 3, size, size), dtype=np.float32)
    return np.stack([image_tensor(img, size) for img in images])


def image_input(pixels: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """uint8 [n,3,S,S] (cached by :func:`image_pixels`) -> normalised float, as the service sees it.
    Training (``rng`` given) flips half the images; nothing else is augmented: crops would
    change what the service sees, and colour carries the signal."""
    if rng is not None:
        flip = rng.random(len(pixels)) < 0.5
        if flip.any():
            pixels = pixels.copy()
            pixels[flip] = pixels[flip][..., ::-1]
    return pixels_to_array(pixels)


def clip_input(stats: FeatureStats, features: np.ndarray) -> np.ndarray:
    """Raw clip features [n, 193, 87] -> the music branch's spectral input [n, 3, 193, 87]."""
    return stats.to_network_input(features.astype(np.float32))
