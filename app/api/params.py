"""The query parameters the routes share, documented once (OpenAPI shows their descriptions and
examples), and the one place they become validated ``SearchOptions``."""

from __future__ import annotations

from typing import Annotated

from fastapi import HTTPException, Query, status

from app.core.ranking import MAX_SHIFT, MOOD_STEP, NEAR_EQUAL, OptionError, parse_moods, total_shift
from app.services.ranking import MAX_RANKED, SearchOptions

MAX_TITLE = 200

NQ = Annotated[int, Query(ge=1, le=100, description="How many songs to return.")]
OffsetQ = Annotated[
    int,
    Query(
        ge=0,
        le=1000,
        description="Where the page starts in the ranking: 0, n, 2n, ... (`next_offset` gives the next, "
        f"only when that page holds a song). Pages never repeat a song. Paging cap: offset + n <= {MAX_RANKED} "
        "(422 beyond).",
        examples=[10],
    ),
]
ValenceShiftQ = Annotated[
    float,
    Query(ge=-MAX_SHIFT, le=MAX_SHIFT, description="Move the mood target along valence (+ happier).", examples=[0.2]),
]
ArousalShiftQ = Annotated[
    float,
    Query(
        ge=-MAX_SHIFT,
        le=MAX_SHIFT,
        description="Move the mood target along arousal (+ more energetic).",
        examples=[-0.2],
    ),
]
MoodQ = Annotated[
    list[str] | None,
    Query(
        description="Mood words, repeated or comma separated: happier, sadder, calmer, more energetic "
        f"(each moves the target by {MOOD_STEP}; opposites are refused; added to the shifts, clipped to ±{MAX_SHIFT}).",
        examples=[["calmer", "happier"]],
    ),
]
MaxPerArtistQ = Annotated[
    int, Query(ge=0, le=100, description="At most this many songs by one artist (0: no cap).", examples=[2])
]
DedupeQ = Annotated[
    bool,
    Query(description='Leave out near-duplicates: the same title and artist once normalised ("Numb (Live)" = "Numb").'),
]
SeedQ = Annotated[
    int | None,
    Query(
        ge=0,
        le=2**31 - 1,
        description=f"Reshuffle songs whose scores share a {NEAR_EQUAL}-wide step, deterministically per seed.",
        examples=[7],
    ),
]
SegmentQ = Annotated[
    float,
    Query(
        ge=2.0,
        le=60.0,
        description="Segment length in seconds: the best run of consecutive clips of (at most) this length.",
        examples=[15],
    ),
]
SmoothnessQ = Annotated[
    float,
    Query(
        ge=0.0,
        le=10.0,
        description="Weight of the VA-jump penalty between consecutive songs (0: best match per photo only).",
        examples=[1.0],
    ),
]
TitleQ = Annotated[
    str,
    Query(
        min_length=1,
        max_length=MAX_TITLE,
        description="The playlist's title inside exported files (M3U8 `#PLAYLIST`, XSPF `title`, cue sheet).",
        examples=["Summer in Brittany"],
    ),
]


def search_options(
    n: int,
    offset: int,
    valence_shift: float,
    arousal_shift: float,
    mood: list[str] | None,
    max_per_artist: int,
    dedupe: bool,
    seed: int | None,
    segment_seconds: float,
) -> SearchOptions:
    """Validated options; bad words, shifts or offsets -> 422 with one clear sentence."""
    if offset % n:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"query parameter 'offset': {offset} is not a multiple of n={n}; pages start at 0, n, 2n, ...",
        )
    if offset + n > MAX_RANKED:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"query parameter 'offset': offset + n = {offset + n} is past the paging cap; the first "
            f"{MAX_RANKED} songs of a ranking can be paged through",
        )
    try:
        shift = total_shift(valence_shift, arousal_shift, parse_moods(mood))
    except OptionError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    return SearchOptions(n, offset, shift, max_per_artist, dedupe, seed, segment_seconds)
