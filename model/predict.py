"""``photoscore predict``: valence and arousal for image and audio files, one JSON line each."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

from model.audio import AUDIO_EXTENSIONS, AudioDecodeError, AudioErrorReason, load_audio
from model.datasets import IMAGE_EXTENSIONS
from model.image import ImageDecodeError, open_image
from model.inference import Matcher


def modality_of(path: Path) -> str:
    ext = path.suffix.lower()
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if ext in AUDIO_EXTENSIONS:
        return "audio"
    raise ValueError(
        f"{path}: unknown file type {ext or '(none)'}; "
        f"images {sorted(IMAGE_EXTENSIONS)}, audio {sorted(AUDIO_EXTENSIONS)}"
    )


def predict_file(matcher: Matcher, path: Path, hop_seconds: float = 2.0) -> dict:
    kind = modality_of(path)
    if kind == "image":
        _, va = matcher.embed_images([open_image(path, draft_size=matcher.image_size)])
        return {"path": str(path), "modality": "image", "valence": float(va[0, 0]), "arousal": float(va[0, 1])}
    clips = matcher.featurize(load_audio(path), hop_seconds)
    if len(clips.features) == 0:
        raise AudioDecodeError(
            f"no non-silent 2-second clip (silent clips: {clips.n_silent})", AudioErrorReason.NO_CLIPS
        )
    _, va = matcher.embed_clip_features(clips.features, clips.tagger)
    return {
        "path": str(path),
        "modality": "audio",
        "valence": float(va[:, 0].mean()),
        "arousal": float(va[:, 1].mean()),
        "clips": [
            {"start": float(s), "end": float(e), "valence": float(v), "arousal": float(a)}
            for s, e, (v, a) in zip(clips.starts, clips.ends, va, strict=True)
        ],
    }


def predict_many(
    matcher: Matcher, paths: list[Path], hop_seconds: float = 2.0
) -> Iterator[tuple[dict | None, str | None]]:
    """Yields (result, None) or (None, one-line reason) per file, never stopping on a bad file."""
    for path in paths:
        try:
            yield predict_file(matcher, path, hop_seconds), None
        except (ImageDecodeError, AudioDecodeError, ValueError, OSError) as exc:
            yield None, f"{path}: {exc}"


def run(checkpoint: Path, paths: list[Path], hop_seconds: float, device: str) -> int:
    matcher = Matcher.load(checkpoint, device)
    failed = 0
    for result, error in predict_many(matcher, paths, hop_seconds):
        if error:
            failed += 1
            print(f"photoscore predict: {error}", file=sys.stderr)
        else:
            print(json.dumps(result), flush=True)
    return 1 if failed else 0
