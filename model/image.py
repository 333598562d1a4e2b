"""Image decoding: any supported upload to 8-bit RGB (the tensor it becomes: ``model.transforms``).

Uploads are untrusted: only raster formats on an allowlist are opened (no EPS, which would
run Ghostscript), the pixel count is checked from the header before any pixel is decoded,
and every Pillow failure becomes :class:`ImageDecodeError` with a one-line message and a
:class:`ImageErrorReason`. Whatever
the mode (palette, alpha, greyscale, CMYK, 16-bit, float), the result is 8-bit RGB the way
it would be displayed: EXIF orientation applied, transparency composited on white.
"""

from __future__ import annotations

import enum
import io
from pathlib import Path
from typing import BinaryIO, cast

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from app.core.errors import one_line

ImageSource = str | Path | bytes

# The one list of image formats: Pillow's name for each raster format a photo upload can
# reasonably be, and the name users are told (None: opened, but not advertised). The decoder
# opens exactly these (HEIF only when pillow-heif is installed); SUPPORTED_IMAGES, made from the
# advertised names, is what both the decoder's message and the API's texts say.
_FORMATS: tuple[tuple[str, str | None], ...] = (
    ("JPEG", "JPEG"),
    ("PNG", "PNG"),
    ("WEBP", "WebP"),
    ("GIF", "GIF (first frame)"),
    ("AVIF", "AVIF"),
    ("BMP", "BMP"),
    ("TIFF", "TIFF"),
    ("HEIF", None),
    ("DIB", None),
    ("PPM", None),
    ("QOI", None),
    ("TGA", None),
)
_ALLOWED_FORMATS = tuple(pillow for pillow, _ in _FORMATS)
_SHOWN = [shown for _, shown in _FORMATS if shown]
#: The image formats an upload may be, as users are told: "JPEG, PNG, ..., BMP or TIFF".
SUPPORTED_IMAGES = ", ".join(_SHOWN[:-1]) + " or " + _SHOWN[-1]


class ImageErrorReason(enum.Enum):
    """Why an input is not a usable image (what callers branch on; never the message)."""

    EMPTY = "empty"  # zero bytes
    UNSUPPORTED = "unsupported"  # not one of the formats above (SVG, HTML, EPS, text, ...)
    CORRUPT = "corrupt"  # a supported format whose header or data is broken or truncated
    NO_PIXELS = "no_pixels"  # the header declares a zero width or height
    TOO_LARGE = "too_large"  # over the pixel limit (decompression bomb) or out of memory


class ImageDecodeError(ValueError):
    """The input is not a decodable image; ``reason`` says why, the message says it in words."""

    def __init__(self, message: str, reason: ImageErrorReason) -> None:
        super().__init__(message)
        self.reason = reason


def _formats() -> list[str]:
    Image.init()
    return [f for f in _ALLOWED_FORMATS if f in Image.OPEN]


def _too_large(pixels: int, limit: int) -> ImageDecodeError:
    return ImageDecodeError(
        f"image is too large: {pixels:,} pixels exceeds the limit of {limit:,}", ImageErrorReason.TOO_LARGE
    )


def _declared_pixels(fh: BinaryIO, formats: list[str]) -> int | None:
    """The pixel count the header declares, read the way ``Image.open`` reads it.

    ``Image.open`` refuses a header over twice Pillow's global limit before it returns the image,
    so the size is read again here: the first plugin that accepts the file's first bytes parses
    its header (no pixel is decoded), as ``Image.open`` does, without Pillow's size check.
    None when no plugin reads the header.
    """
    fh.seek(0)
    prefix = fh.read(16)
    for fmt in formats:
        factory, accept = Image.OPEN[fmt]
        accepted = accept is None or accept(prefix)
        if isinstance(accepted, str) or not accepted:
            continue
        try:
            fh.seek(0)
            width, height = factory(fh, "").size
        except Exception:  # noqa: S112 - not this plugin's header; Image.open would try the next
            continue
        return max(1, width) * max(1, height)
    return None


def _bomb(fh: BinaryIO, formats: list[str], limit: int | None) -> ImageDecodeError:
    """Pillow's own guard fired (at twice its global limit, before ours could look): report it
    against the limit the caller set, not Pillow's internal number."""
    pixels = _declared_pixels(fh, formats)
    if pixels is not None and limit is not None:
        return _too_large(pixels, limit)
    shown = f" of {limit:,} pixels" if limit is not None else ""
    return ImageDecodeError(f"image is too large: it exceeds the limit{shown}", ImageErrorReason.TOO_LARGE)


# Rows converted at a time by _to_8bit: the float64 arithmetic then costs a few MiB, not 8 bytes
# for every pixel of the image (a 77 KB 16-bit 6300 x 6300 PNG would need 2.5 GB of temporaries).
_BAND_PIXELS = 1 << 20


def _to_8bit(img: Image.Image, assume_16bit: bool) -> Image.Image:
    """Greyscale 8-bit from an integer or float single-band image, converted in bands of rows.

    16-bit data (I;16*, or mode I within 0..65535) is scaled by 255/65535, not clipped:
    clipping would turn any normally exposed 16-bit photo white. Float data in [0, 1] is
    scaled by 255; anything else (HDR floats, signed or 32-bit ints) is stretched min..max.
    The range comes from Pillow's own extrema (no copy); NaN/inf count as 0, as in the pixels.
    """
    width, height = img.size
    rows = max(1, _BAND_PIXELS // max(1, width))

    def band(y0: int) -> np.ndarray:
        a = np.asarray(img.crop((0, y0, width, min(height, y0 + rows))))
        return np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)

    lo, hi = np.inf, -np.inf
    if img.mode == "F":  # getextrema would see NaN/inf; scan the bands instead
        for y0 in range(0, height, rows):
            a = band(y0)
            lo, hi = min(lo, float(a.min())), max(hi, float(a.max()))
    else:
        lo, hi = (float(v) for v in cast("tuple[float, float]", img.getextrema()))  # one band: (min, max)
    if assume_16bit and lo >= 0 and hi <= 65535:
        scale, offset = 255.0 / 65535.0, 0.0
    elif not assume_16bit and lo >= 0 and hi <= 1.0:
        scale, offset = 255.0, 0.0
    elif hi > lo:
        scale, offset = 255.0 / (hi - lo), lo
    else:
        scale, offset = 0.0, 0.0
    out = np.empty((height, width), np.uint8)
    for y0 in range(0, height, rows):
        a = band(y0)
        a = (a - offset) * scale if offset else a * scale
        out[y0 : y0 + len(a)] = np.clip(np.rint(a), 0, 255).astype(np.uint8)
    return Image.fromarray(out, mode="L")


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img.copy()
    if mode.startswith("I;16") or mode == "I":
        return _to_8bit(img, assume_16bit=True).convert("RGB")
    if mode == "F":
        return _to_8bit(img, assume_16bit=False).convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode in ("P", "L", "RGB") and "transparency" in img.info)
    if has_alpha:  # composited on white band by band: three full-size RGBA copies cost 480 MB at 40 MP
        width, height = img.size
        out = Image.new("RGB", img.size)
        rows = max(1, _BAND_PIXELS // width)
        for y0 in range(0, height, rows):
            box = (0, y0, width, min(height, y0 + rows))
            band = img.crop(box).convert("RGBA")
            white = Image.new("RGBA", band.size, (255, 255, 255, 255))
            out.paste(Image.alpha_composite(white, band).convert("RGB"), box[:2])
        return out
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
            raise ImageDecodeError("image input is empty (0 bytes)", ImageErrorReason.EMPTY)
        fh: BinaryIO = io.BytesIO(bytes(source))
    elif isinstance(source, str | Path):
        fh = open(source, "rb")  # noqa: SIM115 - closed below; OSError propagates on purpose
    else:
        fh = source
    limit = max_pixels if max_pixels is not None else Image.MAX_IMAGE_PIXELS
    try:
        formats = _formats()
        try:
            img = Image.open(fh, formats=formats)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _bomb(fh, formats, limit) from exc
        except UnidentifiedImageError as exc:
            raise ImageDecodeError(
                f"not a supported image (expected {SUPPORTED_IMAGES})", ImageErrorReason.UNSUPPORTED
            ) from exc
        except Exception as exc:  # Pillow raises many types on malformed headers
            raise ImageDecodeError(f"corrupt image header: {one_line(exc)}", ImageErrorReason.CORRUPT) from exc
        with img:
            width, height = img.size
            if width <= 0 or height <= 0:
                raise ImageDecodeError(f"image has no pixels ({width}x{height})", ImageErrorReason.NO_PIXELS)
            if limit is not None and width * height > limit:
                raise _too_large(width * height, limit)
            try:
                if getattr(img, "n_frames", 1) > 1:
                    img.seek(0)  # first frame of an animation
                if draft_size is not None and img.format == "JPEG":
                    img.draft(None, (draft_size, draft_size))
                img.load()
                ImageOps.exif_transpose(img, in_place=True)  # no full-size copy when upright
                return _to_rgb(img)
            except ImageDecodeError:
                raise
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                raise ImageDecodeError(
                    f"image is too large (decompression bomb guard): {one_line(exc)}",
                    ImageErrorReason.TOO_LARGE,
                ) from exc
            except MemoryError as exc:
                raise ImageDecodeError("image is too large to decode", ImageErrorReason.TOO_LARGE) from exc
            except Exception as exc:  # truncated data, bad chunks, broken EXIF, ...
                raise ImageDecodeError(
                    f"truncated or corrupt image: {one_line(exc)}", ImageErrorReason.CORRUPT
                ) from exc
    finally:
        if fh is not source:
            fh.close()
