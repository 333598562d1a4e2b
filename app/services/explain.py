"""The `why` of a recommendation: both moods as numbers and plain words, and how far apart.

Built here, not in the HTTP shell, so every answer that shows a song (``/recommend``,
``/playlist``, a video's soundtrack) explains it the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from app.core.ranking import mood_words


@dataclass(frozen=True)
class Explanation:
    """Why one song suits one photo: the VA points as predicted, their distance, plain words."""

    photo: tuple[float, float]
    song: tuple[float, float] | None
    distance: float | None
    segment: tuple[float, float] | None
    target: tuple[float, float] | None
    photo_words: str
    song_words: str
    segment_words: str
    summary: str


def explain(
    photo: tuple[float, float],
    song: tuple[float, float] | None,
    segment: tuple[float, float] | None,
    target: tuple[float, float] | None,
) -> Explanation:
    """The explanation of one result: photo, song, segment and steering target VA."""
    dist = None if song is None else round(math.dist(photo, song), 4)
    photo_words = mood_words(*photo)
    song_words = mood_words(*song) if song is not None else "unknown"
    summary = f"photo {photo_words} ({photo[0]:.2f}, {photo[1]:.2f})"
    if song is not None:
        summary += f" · song {song_words} ({song[0]:.2f}, {song[1]:.2f}), {dist:.2f} apart"
    if target is not None:
        summary += f" · steered towards ({target[0]:.2f}, {target[1]:.2f})"
    segment_words = mood_words(*segment) if segment is not None else "unknown"
    return Explanation(photo, song, dist, segment, target, photo_words, song_words, segment_words, summary)
