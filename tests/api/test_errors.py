"""app.api.errors: every reason a decoder gives has one answer, worded as the routes always have."""

from __future__ import annotations

import itertools

import pytest

from app.api.errors import RULES, decode_error
from app.services.video import VideoError, VideoErrorReason
from model.audio import SUPPORTED_AUDIO, AudioDecodeError, AudioErrorReason
from model.image import SUPPORTED_IMAGES, ImageDecodeError, ImageErrorReason, open_image


def test_every_reason_has_a_rule() -> None:
    reasons = set(itertools.chain(ImageErrorReason, AudioErrorReason, VideoErrorReason))
    assert set(RULES) == reasons
    assert {r.status for r in RULES.values()} <= {400, 413, 415, 422}


@pytest.mark.parametrize(
    ("exc", "field", "status", "detail"),
    [
        (
            ImageDecodeError("image is too large: 9 pixels exceeds the limit of 4", ImageErrorReason.TOO_LARGE),
            "image",
            413,
            "image: image is too large: 9 pixels exceeds the limit of 4 (PHOTOSCORE_MAX_IMAGE_PIXELS)",
        ),
        (
            ImageDecodeError("not a supported image (expected ...)", ImageErrorReason.UNSUPPORTED),
            "images[2] ('a.jpg')",
            415,
            f"images[2] ('a.jpg'): not a supported image; send {SUPPORTED_IMAGES}",
        ),
        (ImageDecodeError("truncated or corrupt image: x", ImageErrorReason.CORRUPT), "image", 400,
         "image: truncated or corrupt image: x"),
        (AudioDecodeError("12.0 s long; the limit is 10 s", AudioErrorReason.TOO_LONG), "audio", 413,
         "audio: 12.0 s long; the limit is 10 s (PHOTOSCORE_MAX_AUDIO_SECONDS)"),
        (AudioDecodeError("audio is too large to decode: x", AudioErrorReason.TOO_LARGE), "audio", 413,
         "audio: audio is too large to decode: x (PHOTOSCORE_MAX_AUDIO_SAMPLES)"),
        (AudioDecodeError("unsupported or corrupt audio: {x}", AudioErrorReason.UNSUPPORTED), "audio", 415,
         f"audio: not a supported audio file (unsupported or corrupt audio: {{x}}); send {SUPPORTED_AUDIO}"),
        (AudioDecodeError("audio contains no samples", AudioErrorReason.NO_SAMPLES), "audio", 400,
         "audio: cannot decode: audio contains no samples"),
        (AudioDecodeError("no usable 2-second clip (2 silent, 0 too short)", AudioErrorReason.NO_CLIPS), "audio", 422,
         "audio: no usable 2-second clip (2 silent, 0 too short)"),
        (VideoError(VideoErrorReason.BLACK, "every frame is black"), "video", 422, "video: every frame is black"),
        (VideoError(VideoErrorReason.UNSUPPORTED, "not a supported video"), "video", 415,
         "video: not a supported video"),
    ],
)  # fmt: skip
def test_answers(exc: ImageDecodeError | AudioDecodeError | VideoError, field: str, status: int, detail: str) -> None:
    http = decode_error(exc, field)
    assert (http.status_code, http.detail) == (status, detail)


def test_one_list_of_image_formats() -> None:
    """The decoder names the same formats the API does."""
    with pytest.raises(ImageDecodeError) as err:
        open_image(b"just some text\n")
    assert err.value.reason is ImageErrorReason.UNSUPPORTED
    assert SUPPORTED_IMAGES in str(err.value) and "AVIF" in SUPPORTED_IMAGES
