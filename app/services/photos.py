"""Photo bytes -> network input -> (embedding, predicted VA): the one path every caller takes.

``/recommend``, ``/playlist``, the video soundtrack and the retrieval evaluation all decode with
``decode_photo`` and embed with ``embed_tensors`` (the batch function the inference worker runs
on the model thread), so an evaluation measures exactly what the service answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from model.image import open_image
from model.inference import Matcher
from model.transforms import image_tensor


def decode_photo(data: bytes, max_pixels: int, size: int) -> Any:
    """Photo bytes -> network input tensor (raises ``ImageDecodeError``).

    JPEGs decode in draft mode (DCT scaling to no less than ``size``): several times faster for
    camera photos, and the very pixels training cached (``model.prepare`` decodes the same way)."""
    return image_tensor(open_image(data, max_pixels=max_pixels, draft_size=size), size)


def embed_tensors(matcher: Matcher, tensors: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings [n, dim] and VA [n, 2] of decoded photos, run as one batch."""
    return matcher.embed_image_tensor(np.stack(tensors))


def clean_va(va: np.ndarray) -> tuple[float, float]:
    """Predicted VA as two floats in [0, 1] (NaN -> 0.5)."""
    va = np.clip(np.nan_to_num(np.asarray(va, np.float64), nan=0.5), 0.0, 1.0)
    return float(va[0]), float(va[1])
