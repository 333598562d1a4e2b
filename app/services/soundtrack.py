"""Score a video: its scenes in, one song segment per scene (or per group of calm scenes) out.

The video's scenes (``app.services.video``) are treated like the photos of an album: each
scene's few sampled frames are embedded on the model thread (micro-batched like any photo) and
averaged, then ``Recommender.playlist`` plans one song per scene with the playlist's smoothness
and mood steering. Each segment is the scene's length, taken around the song's best-matching
window. With ``max_songs`` below the number of scenes, adjacent scenes are grouped first
(``group_scenes``): the closest pair in VA, calm pairs before lively ones, until few enough
remain, so a quiet stretch shares one song while energetic scenes keep their own.

The preview (``render_preview``) lays each segment at its scene's start with short crossfades
and encodes one mono Opus stream in Ogg: its length is the video's, its size at most
``PREVIEW_BITRATE`` times that.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import av
import av.error
import numpy as np
from anyio import to_thread

from app.core.models import Track
from app.services.ranking import Hit, Query, SearchOptions
from app.services.recommend import PlaylistOptions, Recommender
from app.services.video import Scene, VideoAnalysis
from model.audio import SAMPLE_RATE
from model.transforms import image_tensor

EXTRA_CANDIDATES = 10  # candidates per scene group beyond the number of groups (as /playlist)
MAX_CANDIDATES = 60
CALM_WEIGHT = 0.5  # grouping cost per unit of the pair's mean arousal: calm scenes merge first
CROSSFADE_SECONDS = 0.5
PREVIEW_RATE = 48_000  # Opus runs at 48 kHz
PREVIEW_BITRATE = 48_000  # bits per second: a 5-minute preview is under 2 MB
PREVIEW_HEADROOM = 0.9  # peak level the mixed preview is scaled to, at most


@dataclass(frozen=True)
class Part:
    """One song's stretch of the video: the scenes it covers and the segment it plays."""

    scenes: list[int]
    start: float  # seconds into the video
    end: float
    va: tuple[float, float]  # the scenes' duration-weighted mean VA
    hit: Hit  # the song and its segment (as long as the stretch, where the song allows)

    @property
    def duration(self) -> float:
        return max(0.0, self.end - self.start)


@dataclass(frozen=True)
class Soundtrack:
    """The planned soundtrack of one video."""

    analysis: VideoAnalysis
    scene_va: list[tuple[float, float]]
    parts: list[Part]
    tracks: dict[int, Track]
    segment_va: dict[int, tuple[float, float]]
    total_score: float
    model_version: str


def group_scenes(vas: Sequence[Sequence[float]], durations: Sequence[float], max_songs: int | None) -> list[list[int]]:
    """Adjacent scenes grouped into at most ``max_songs`` runs (each scene alone without a cap).

    Greedy agglomeration: the adjacent pair of runs whose mean VAs are closest, plus
    ``CALM_WEIGHT`` times their mean arousal (so calm stretches share a song before lively ones
    do), merges first; a run's VA is the duration-weighted mean of its scenes."""
    groups = [[i] for i in range(len(vas))]
    if max_songs is None or max_songs >= len(groups):
        return groups
    limit = max(1, max_songs)
    va = [np.asarray(v, np.float64) for v in vas]
    weight = [max(1e-3, float(d)) for d in durations]
    while len(groups) > limit:
        costs = [
            float(np.linalg.norm(va[i] - va[i + 1])) + CALM_WEIGHT * float(va[i][1] + va[i + 1][1]) / 2
            for i in range(len(groups) - 1)
        ]
        i = int(np.argmin(costs))
        total = weight[i] + weight[i + 1]
        va[i] = (va[i] * weight[i] + va[i + 1] * weight[i + 1]) / total
        weight[i] = total
        groups[i] = groups[i] + groups[i + 1]
        del groups[i + 1], va[i + 1], weight[i + 1]
    return groups


def fit_segment(start: float, end: float, length: float, song_duration: float) -> tuple[float, float]:
    """A segment of ``length`` seconds covering the best window ``[start, end]`` where the song
    allows (the window lies on 2-second clip boundaries, so it is at most the scene's length):
    it starts at the window, moved earlier when the song would end first; a song shorter than
    ``length`` plays whole."""
    if song_duration <= 0 or not math.isfinite(song_duration):
        return start, end
    if length >= song_duration:
        return 0.0, round(song_duration, 3)
    s = min(max(0.0, start), song_duration - length)
    return round(s, 3), round(s + length, 3)


def scene_inputs(scene: Scene, size: int) -> list[Any]:
    """The network inputs of a scene's sampled frames."""
    return [image_tensor(img, size) for img in scene.samples]


async def plan_soundtrack(
    recommender: Recommender,
    analysis: VideoAnalysis,
    options: SearchOptions,
    smoothness: float,
    max_per_artist: int,
    max_songs: int | None,
    repeat_songs: bool = False,
) -> Soundtrack:
    """The soundtrack of an analysed video (raises ``OptionError`` like ``/playlist``).
    ``repeat_songs``: a song may come back in a later scene (else every scene group gets its own)."""
    size = recommender.image_size
    scenes = analysis.scenes
    per_scene = await to_thread.run_sync(lambda: [scene_inputs(s, size) for s in scenes])
    flat = [t for inputs in per_scene for t in inputs]
    embedded = await recommender.embed_decoded(flat)
    embs: list[np.ndarray] = []
    vas: list[tuple[float, float]] = []
    at = 0
    for inputs in per_scene:
        rows = embedded[at : at + len(inputs)]
        at += len(inputs)
        embs.append(_mean_direction([q.embedding for q in rows]))
        vas.append(_mean_va([q.va for q in rows], [1.0] * len(rows)))
    durations = [s.duration for s in scenes]
    groups = group_scenes(vas, durations, max_songs)
    g_embs = [_mean_direction([embs[i] for i in g], [durations[i] for i in g]) for g in groups]
    g_vas = [_mean_va([vas[i] for i in g], [durations[i] for i in g]) for g in groups]
    g_len = [sum(durations[i] for i in g) for g in groups]
    n = min(MAX_CANDIDATES, len(groups) + EXTRA_CANDIDATES)
    plan = await recommender.plan(
        [Query(e, va) for e, va in zip(g_embs, g_vas, strict=True)],
        PlaylistOptions(
            replace(options, n=n),
            smoothness,
            max_per_artist,
            segment_seconds=tuple(g_len),
            distinct=not repeat_songs,
        ),
    )
    parts = []
    for g, va, length, hit in zip(groups, g_vas, g_len, plan.hits, strict=True):
        track = plan.tracks.get(hit.track_id)
        duration = float(track.duration or 0.0) if track is not None else 0.0
        s, e = fit_segment(hit.start, hit.end, length, duration)
        parts.append(
            Part(
                scenes=g,
                start=scenes[g[0]].start,
                end=scenes[g[-1]].end,
                va=va,
                hit=replace(hit, start=s, end=e),
            )
        )
    return Soundtrack(
        analysis=analysis,
        scene_va=vas,
        parts=parts,
        tracks=plan.tracks,
        segment_va=plan.segment_va,
        total_score=plan.total_score,
        model_version=plan.model_version,
    )


def _mean_direction(embs: Sequence[np.ndarray], weights: Sequence[float] | None = None) -> np.ndarray:
    """The (weighted) mean of unit embeddings, back on the unit sphere (FAISS inner product)."""
    m = np.average(np.stack([np.asarray(e, np.float32) for e in embs]), axis=0, weights=weights)
    norm = float(np.linalg.norm(m))
    return (m / norm if norm > 0 else m).astype(np.float32)


def _mean_va(vas: Sequence[Sequence[float]], weights: Sequence[float]) -> tuple[float, float]:
    m = np.average(np.asarray(vas, np.float64).reshape(-1, 2), axis=0, weights=weights)
    return float(np.clip(m[0], 0, 1)), float(np.clip(m[1], 0, 1))


# ------------------------------------------------------------------------------------ preview
@dataclass(frozen=True)
class PreviewPiece:
    """One segment to lay on the preview's timeline."""

    path: Path  # the song's audio file
    song_start: float  # seconds into the song
    song_end: float
    at: float  # seconds into the video where it starts
    until: float  # where its stretch of the video ends


class PreviewError(ValueError):
    """A preview that cannot be made (a song's audio is gone or unreadable)."""


def render_preview(
    pieces: Sequence[PreviewPiece],
    duration: float,
    crossfade: float = CROSSFADE_SECONDS,
    load: Callable[[Path, float, float], np.ndarray] | None = None,
) -> bytes:
    """The segments laid on one timeline of ``duration`` seconds, crossfaded, as Ogg/Opus bytes.

    Each piece sounds from ``at - crossfade/2`` to ``until + crossfade/2`` (inside the video),
    fading in and out over ``crossfade``; a segment shorter than its stretch (a short song)
    leaves the rest silent. Only each segment is decoded (``_load_song``), so memory is the
    preview's samples plus one segment, whatever the songs' lengths."""
    load = load or _load_song
    sr = SAMPLE_RATE
    total = max(1, int(round(duration * sr)))
    mix = np.zeros(total, np.float32)
    half = crossfade / 2
    for piece in pieces:
        lead = min(half, piece.at, piece.song_start)  # fade in over the song's bars before the segment
        begin = piece.at - lead
        stop = min(duration, piece.until + half)
        length = stop - begin
        if length <= 0:
            continue
        offset = piece.song_start - lead
        y = load(piece.path, offset, min(piece.song_end + half, offset + length))
        seg = y[: int(length * sr)]
        if len(seg) == 0:
            continue
        seg = seg.astype(np.float32, copy=True)
        fade = max(1, int(crossfade * sr))
        if begin > 0:
            k = min(fade, len(seg))
            seg[:k] *= np.linspace(0.0, 1.0, k, dtype=np.float32)
        if stop < duration or len(seg) < int(length * sr):
            k = min(fade, len(seg))
            seg[-k:] *= np.linspace(1.0, 0.0, k, dtype=np.float32)
        i = int(begin * sr)
        j = min(total, i + len(seg))
        mix[i:j] += seg[: j - i]
    peak = float(np.abs(mix).max()) if len(mix) else 0.0
    if peak > PREVIEW_HEADROOM:
        mix *= PREVIEW_HEADROOM / peak
    return encode_opus(mix, sr)


def _load_song(path: Path, start: float, end: float) -> np.ndarray:
    """Mono float32 at ``SAMPLE_RATE`` from ``start`` to ``end`` seconds of a song: a seek and
    the segment decoded (a 3-second segment of a 30-minute song never decodes the whole song)."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.audio[0]
            if start > 0 and stream.time_base is not None:
                container.seek(int(start / stream.time_base), stream=stream)  # lands at or before start
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            chunks: list[np.ndarray] = []
            first: float | None = None
            for frame in container.decode(stream):
                if first is None:
                    first = float(frame.time or 0.0)
                chunks += [f.to_ndarray()[0] for f in resampler.resample(frame)]
                if float(frame.time or 0.0) > end:
                    break
            chunks += [f.to_ndarray()[0] for f in resampler.resample(None)]
    except (av.error.FFmpegError, IndexError, OSError, ValueError) as exc:
        raise PreviewError(f"a song's audio cannot be read ({type(exc).__name__})") from exc
    if not chunks or first is None:
        return np.zeros(0, np.float32)
    y = np.concatenate(chunks).astype(np.float32, copy=False)
    skip = max(0, int(round((start - first) * SAMPLE_RATE)))
    return y[skip : skip + max(0, int(round((end - start) * SAMPLE_RATE)))]


def encode_opus(y: np.ndarray, sr: int) -> bytes:
    """Mono float samples as one Opus stream in an Ogg file (PyAV resamples to 48 kHz)."""
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="ogg") as out:
        stream = out.add_stream("libopus", rate=PREVIEW_RATE, layout="mono")
        stream.codec_context.bit_rate = PREVIEW_BITRATE
        stream.options = {"vbr": "off"}  # constant bit rate: the size is a bound, not an estimate
        resampler = av.AudioResampler(format="s16", layout="mono", rate=PREVIEW_RATE)
        block = sr  # one second at a time: the resampled copy never holds the whole preview
        pts = 0
        for at in range(0, len(y), block):
            chunk = np.ascontiguousarray(y[at : at + block], np.float32)[None, :]
            frame = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
            frame.sample_rate = sr
            frame.pts = pts
            pts += chunk.shape[1]
            for resampled in resampler.resample(frame):
                for packet in stream.encode(resampled):
                    out.mux(packet)
        for resampled in resampler.resample(None):
            for packet in stream.encode(resampled):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()
