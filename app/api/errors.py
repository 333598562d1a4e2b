"""The one place decode failures become HTTP answers.

Decoders raise typed errors (:class:`~model.image.ImageDecodeError`,
:class:`~model.audio.AudioDecodeError`, :class:`~app.services.video.VideoError`) whose
``reason`` says why; :data:`RULES` maps every reason to a status code and the detail text, and
:func:`decode_error` applies it. Nothing here, nor in any route, reads an error's message to
decide anything: the message is only shown.

The detail starts with the field it concerns: ``"image: ..."`` for ``/recommend``,
``"images[2] ('beach.jpg'): ..."`` for the third photo of a playlist, and so on.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import HTTPException, status

from app.services.video import VideoError, VideoErrorReason
from model.audio import SUPPORTED_AUDIO, AudioDecodeError, AudioErrorReason
from model.image import SUPPORTED_IMAGES, ImageDecodeError, ImageErrorReason

DecodeError = ImageDecodeError | AudioDecodeError | VideoError
Reason = ImageErrorReason | AudioErrorReason | VideoErrorReason


@dataclass(frozen=True)
class Rule:
    """The answer to one reason: its status and its detail, with ``{field}``, ``{message}`` (the
    error's own words) and ``{images}`` / ``{audio}`` (the formats taken) filled in."""

    status: int
    detail: str = "{field}: {message}"


_400 = status.HTTP_400_BAD_REQUEST
_413 = status.HTTP_413_CONTENT_TOO_LARGE
_415 = status.HTTP_415_UNSUPPORTED_MEDIA_TYPE
_422 = status.HTTP_422_UNPROCESSABLE_CONTENT
_AUDIO_400 = Rule(_400, "{field}: cannot decode: {message}")

#: Every reason a decoder (or the ingest rules) gives, and the answer it gets.
RULES: dict[Reason, Rule] = {
    ImageErrorReason.EMPTY: Rule(_400),
    ImageErrorReason.UNSUPPORTED: Rule(_415, "{field}: not a supported image; send {images}"),
    ImageErrorReason.CORRUPT: Rule(_400),
    ImageErrorReason.NO_PIXELS: Rule(_400),
    ImageErrorReason.TOO_LARGE: Rule(_413, "{field}: {message} (PHOTOSCORE_MAX_IMAGE_PIXELS)"),
    AudioErrorReason.EMPTY: _AUDIO_400,
    AudioErrorReason.UNDECODABLE: _AUDIO_400,
    AudioErrorReason.UNSUPPORTED: Rule(_415, "{field}: not a supported audio file ({message}); send {audio}"),
    AudioErrorReason.CORRUPT: _AUDIO_400,
    AudioErrorReason.NO_SAMPLES: _AUDIO_400,
    AudioErrorReason.TIMEOUT: _AUDIO_400,
    AudioErrorReason.TOO_LONG: Rule(_413, "{field}: {message} (PHOTOSCORE_MAX_AUDIO_SECONDS)"),
    AudioErrorReason.TOO_LARGE: Rule(_413, "{field}: {message} (PHOTOSCORE_MAX_AUDIO_SAMPLES)"),
    AudioErrorReason.TOO_SHORT: Rule(_422),
    AudioErrorReason.NO_CLIPS: Rule(_422),
    VideoErrorReason.TOO_LARGE: Rule(_413),
    VideoErrorReason.TOO_LONG: Rule(_413),
    VideoErrorReason.TOO_MANY_SHOTS: Rule(_422),
    VideoErrorReason.UNSUPPORTED: Rule(_415),
    VideoErrorReason.NO_VIDEO: Rule(_422),
    VideoErrorReason.CORRUPT: Rule(_400),
    VideoErrorReason.BLACK: Rule(_422),
}


def decode_error(exc: DecodeError, field: str) -> HTTPException:
    """The 4xx for ``exc``, its detail prefixed with ``field`` ("image", "audio", "images[2]")."""
    rule = RULES[exc.reason]
    detail = rule.detail.format(field=field, message=exc, images=SUPPORTED_IMAGES, audio=SUPPORTED_AUDIO)
    return HTTPException(rule.status, detail)
