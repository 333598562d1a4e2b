"""Image decoding and the image branch's input tensor.

Uploads are untrusted: only raster formats on an allowlist are opened (no EPS, which would
run Ghostscript), the pixel count is checked from the header before any pixel is decoded,
and every Pillow failure becomes :class:`ImageDecodeError` with a one-line reason. Whatever
the mode (palette, alpha, greyscale, CMYK, 16-bit, float), the result is 8-bit RGB the way
it would be displayed: EXIF orientation applied, transparency composited on white.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ImageSource = str | Path | bytes

# Raster formats a photo upload can reasonably be. HEIF appears when pillow-heif is installed.
_ALLOWED_FORMATS = (
    "JPEG", "PNG", "GIF", "WEBP", "AVIF", "HEIF", "BMP", "DIB", "TIFF", "PPM", "QOI", "TGA",
)  # fmt: skip
_SUPPORTED = "JPEG, PNG, GIF, WebP, AVIF, BMP, TIFF"


class ImageDecodeError(ValueError):
    """The input is not a decodable image; ``too_large`` marks decompression bombs."""

    def __init__(self, message: str, *, too_large: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large


def _formats() -> list[str]:
    Image.init()
    return [f for f in _ALLOWED_FORMATS if f in Image.OPEN]


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]


def _too_large(pixels: int, limit: int) -> ImageDecodeError:
    return ImageDecodeError(f"image is too large: {pixels:,} pixels exceeds the limit of {limit:,}", too_large=True)


def _bomb(exc: BaseException, limit: int | None) -> ImageDecodeError:
    """Pillow's own guard fired (at twice its global limit, before ours could look): report it
    against the limit the caller set, not Pillow's internal number."""
    found = re.search(r"\((\d+) pixels\)", str(exc))
    if found and limit is not None:
        return _too_large(int(found.group(1)), limit)
    shown = f" of {limit:,} pixels" if limit is not None else ""
    return ImageDecodeError(f"image is too large: it exceeds the limit{shown}", too_large=True)


def _to_8bit(arr: np.ndarray, assume_16bit: bool) -> Image.Image:
    """Greyscale 8-bit from integer or float pixel data.

    16-bit data (I;16*, or mode I within 0..65535) is scaled by 255/65535, not clipped:
    clipping would turn any normally exposed 16-bit photo white. Float data in [0, 1] is
    scaled by 255; anything else (HDR floats, signed or 32-bit ints) is stretched min..max.
    """
    a = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if assume_16bit and lo >= 0 and hi <= 65535:
        a = a * (255.0 / 65535.0)
    elif not assume_16bit and lo >= 0 and hi <= 1.0:
        a = a * 255.0
    elif hi > lo:
        a = (a - lo) * (255.0 / (hi - lo))
    else:
        a = np.zeros_like(a)
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), mode="L")


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img.copy()
    if mode.startswith("I;16") or mode == "I":
        return _to_8bit(np.asarray(img), assume_16bit=True).convert("RGB")
    if mode == "F":
        return _to_8bit(np.asarray(img), assume_16bit=False).convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode in ("P", "L", "RGB") and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    # P, L, 1, CMYK (Adobe-inverted JPEGs are handled by Pillow), YCbCr, LAB, HSV.
    return img.convert("RGB")


def open_image(
    source: ImageSource | BinaryIO,
    max_pixels: int | None = None,
    *,
    draft_size: int | None = None,
) -> Image.Image:
    """Decode ``source`` (path, bytes or binary file) to an 8-bit RGB image.

    ``max_pixels`` (default: Pillow's ``Image.MAX_IMAGE_PIXELS``) is checked from the header
    before decoding; Pillow itself refuses anything over twice its global limit, so larger
    per-call limits are capped there. ``draft_size`` lets JPEG decode at a reduced scale
    (DCT scaling) while keeping both sides >= draft_size: much faster for large photos that
    will be resized to ``draft_size`` anyway, at slightly different pixels than a full decode.
    Missing files raise ``FileNotFoundError``; bad content raises ImageDecodeError.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        if len(source) == 0:
            raise ImageDecodeError("image input is empty (0 bytes)")
        fh: BinaryIO = io.BytesIO(bytes(source))
    elif isinstance(source, str | Path):
        fh = open(source, "rb")  # noqa: SIM115 - closed below; OSError propagates on purpose
    else:
        fh = source
    limit = max_pixels if max_pixels is not None else Image.MAX_IMAGE_PIXELS
    try:
        try:
            img = Image.open(fh, formats=_formats())
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _bomb(exc, limit) from exc
        except UnidentifiedImageError as exc:
            raise ImageDecodeError(f"not a supported image (expected {_SUPPORTED})") from exc
        except Exception as exc:  # Pillow raises many types on malformed headers
            raise ImageDecodeError(f"corrupt image header: {_one_line(exc)}") from exc
        with img:
            width, height = img.size
            if width <= 0 or height <= 0:
                raise ImageDecodeError(f"image has no pixels ({width}x{height})")
            if limit is not None and width * height > limit:
                raise _too_large(width * height, limit)
            try:
                if getattr(img, "n_frames", 1) > 1:
                    img.seek(0)  # first frame of an animation
                if draft_size is not None and img.format == "JPEG":
                    img.draft(None, (draft_size, draft_size))
                img.load()
                oriented = ImageOps.exif_transpose(img)
                return _to_rgb(oriented)
            except ImageDecodeError:
                raise
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                raise ImageDecodeError(
                    f"image is too large (decompression bomb guard): {_one_line(exc)}",
                    too_large=True,
                ) from exc
            except MemoryError as exc:
                raise ImageDecodeError("image is too large to decode", too_large=True) from exc
            except Exception as exc:  # truncated data, bad chunks, broken EXIF, ...
                raise ImageDecodeError(f"truncated or corrupt image: {_one_line(exc)}") from exc
    finally:
        if fh is not source:
            fh.close()


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
