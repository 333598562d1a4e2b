"""Ingest: a song's audio to a committed catalogue track, one set of rules for every way in.

``POST /tracks`` (:func:`ingest_upload`) and ``photoscore index`` (``indexer.worker`` and
``indexer.pipeline``) both go through these steps, so a song is taken or refused for the same
reasons whichever way it comes:

1. :func:`decode_song`: refused when the header says it is longer than ``max_seconds``, then
   decoded within ``max_seconds`` and ``max_samples`` (``model.audio.load_audio``) and refused
   when shorter than ``min_seconds``;
2. :func:`featurize_song`: 2-second clips every ``hop_seconds`` with their features (and the
   tagger's input when the model reads it), refused when no clip is usable (silent or short);
3. embedding with the matcher (:func:`embed_song`, or :func:`embed_song_async` through the
   service's inference worker at background priority);
4. :func:`store_song`: text fields from the given metadata, then the tags, then the file name;
   the audio stored under its content hash and the track committed with all its clips in one
   transaction (``app.services.tracks.add_track``).

Every refusal is an :class:`~model.audio.AudioDecodeError` whose ``reason`` says why
(``app.api.errors`` turns it into an HTTP answer); refusals of audio that did decode are
:class:`UnusableAudio`, which also carries the facts for callers that word them themselves.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import anyio.to_thread
import numpy as np
from sqlalchemy.orm import Session

from app.core import catalogue
from app.core.catalogue import ClipBatch
from app.core.live_index import LiveIndex
from app.core.models import Track
from app.core.settings import Settings
from app.core.storage import AudioStore, sniff_audio_extension
from app.core.tags import read_tags
from app.services.inference import InferenceWorker, ModelThreadScorer, Priority
from app.services.tracks import Placement, TrackMetadata, add_track, resolve_fields
from model.audio import (
    CLIP_SECONDS,
    DEFAULT_MAX_SAMPLES,
    SAMPLE_RATE,
    AudioDecodeError,
    AudioErrorReason,
    AudioSource,
    load_audio,
    probe_duration,
)
from model.features import ClipSet, cut_clips

log = logging.getLogger(__name__)

T = TypeVar("T")

# Header durations can be a frame or two off the decoded length (as in model.audio).
_HEADER_SLACK_S = 0.5
_EMBED_CHUNK = 64  # clips per model call when the matcher does not say its batch size
_LIMITS = (AudioErrorReason.TOO_LONG, AudioErrorReason.TOO_LARGE)


@dataclass(frozen=True)
class AudioRules:
    """What audio must be to become a track: the same for uploads and the indexer."""

    max_seconds: float | None = None  # longest accepted, from the header and while decoding
    max_samples: int | None = DEFAULT_MAX_SAMPLES  # frames x channels at the native rate
    min_seconds: float = CLIP_SECONDS  # shortest accepted: one clip
    hop_seconds: float = CLIP_SECONDS  # between clips

    @classmethod
    def from_settings(cls, settings: Settings) -> AudioRules:
        """The service's rules for uploads (``PHOTOSCORE_MAX_AUDIO_SECONDS`` and the rest)."""
        return cls(
            max_seconds=settings.max_audio_seconds,
            max_samples=settings.max_audio_samples,
            min_seconds=settings.min_audio_seconds,
            hop_seconds=settings.clip_hop_seconds,
        )


class UnusableAudio(AudioDecodeError):
    """Audio that decoded but is no song: shorter than the minimum (``TOO_SHORT``) or without a
    usable clip (``NO_CLIPS``). ``duration``, ``n_silent`` and ``n_short`` say by how much."""

    def __init__(
        self, message: str, reason: AudioErrorReason, *, duration: float, n_silent: int = 0, n_short: int = 0
    ) -> None:
        super().__init__(message, reason)
        self.duration = duration
        self.n_silent = n_silent
        self.n_short = n_short


@dataclass
class PreparedSong:
    """A decoded song's clips and their features, ready to embed, and its tags."""

    features: np.ndarray  # [n, 193, 87] float32
    starts: np.ndarray
    ends: np.ndarray
    duration: float
    n_silent: int
    n_short: int
    tags: dict[str, str] = field(default_factory=dict)
    tagger: np.ndarray | None = None  # [n, 187, 96] tagger input, when the model reads it


def _looks_like_audio(source: AudioSource) -> bool:
    """Whether the first bytes carry a known audio container's signature."""
    if isinstance(source, bytes | bytearray | memoryview):
        head = bytes(source[:256])
    else:
        try:
            with open(source, "rb") as fh:
                head = fh.read(256)
        except OSError:
            return True  # not known to be anything else
    return sniff_audio_extension(head) is not None


def decode_song(source: AudioSource, rules: AudioRules) -> tuple[np.ndarray, float]:
    """Mono 22,050 Hz samples of ``source`` and their duration in seconds, within ``rules``.

    The decoders cannot tell a format they do not know from a broken file; the bytes can: a
    failure of input with no known audio signature is ``UNSUPPORTED``, other failures keep the
    decoder's reason. Missing or unreadable files raise ``OSError``.
    """
    if rules.max_seconds is not None:
        probed = probe_duration(source)
        if probed is not None and probed > rules.max_seconds + _HEADER_SLACK_S:
            raise AudioDecodeError(
                f"{probed:.1f} s long; the limit is {rules.max_seconds:g} s", AudioErrorReason.TOO_LONG
            )
    try:
        y = load_audio(source, max_seconds=rules.max_seconds, max_samples=rules.max_samples)
    except AudioDecodeError as exc:
        if exc.reason not in _LIMITS and not _looks_like_audio(source):
            raise AudioDecodeError(str(exc), AudioErrorReason.UNSUPPORTED) from exc
        raise
    duration = len(y) / SAMPLE_RATE
    if duration < rules.min_seconds:
        raise UnusableAudio(
            f"{duration:.2f} s long; at least {rules.min_seconds:g} s is needed (one clip)",
            AudioErrorReason.TOO_SHORT,
            duration=duration,
        )
    return y, duration


def featurize_song(y: np.ndarray, duration: float, rules: AudioRules, *, tagger: bool) -> ClipSet:
    """The song's 2-second clips and their features; ``NO_CLIPS`` when none is usable."""
    clips = cut_clips(y, SAMPLE_RATE, rules.hop_seconds, tagger=tagger)
    if len(clips) == 0:
        raise UnusableAudio(
            f"no usable 2-second clip ({clips.n_silent} silent, {clips.n_short} too short)",
            AudioErrorReason.NO_CLIPS,
            duration=duration,
            n_silent=int(clips.n_silent),
            n_short=int(clips.n_short),
        )
    return clips


def prepared_song(clips: ClipSet, duration: float, tags: Mapping[str, str]) -> PreparedSong:
    """The outcome of steps 1 and 2 as one value (what crosses process boundaries)."""
    return PreparedSong(
        features=clips.features,
        starts=np.asarray(clips.starts, np.float64),
        ends=np.asarray(clips.ends, np.float64),
        duration=float(duration),
        n_silent=int(clips.n_silent),
        n_short=int(clips.n_short),
        tags=dict(tags),
        tagger=clips.tagger,
    )


def prepare_song(source: AudioSource, rules: AudioRules, *, tagger: bool) -> PreparedSong:
    """Steps 1 and 2: decode, check and featurise ``source``, and read its tags."""
    y, duration = decode_song(source, rules)
    clips = featurize_song(y, duration, rules, tagger=tagger)
    del y
    return prepared_song(clips, duration, read_tags(source if isinstance(source, bytes) else Path(source)))


class ClipEmbedder(Protocol):
    """The part of ``model.inference.Matcher`` that embeds clips."""

    def embed_clip_features(
        self, features: np.ndarray, tagger: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]: ...


def embed_song(embedder: ClipEmbedder, song: PreparedSong) -> tuple[np.ndarray, np.ndarray]:
    """Step 3 in this thread: clip embeddings [n, dim] and VA [n, 2]."""
    return embedder.embed_clip_features(song.features, song.tagger)


async def embed_song_async(worker: InferenceWorker, song: PreparedSong) -> tuple[np.ndarray, np.ndarray]:
    """Step 3 on the service's model thread, in chunks at background priority, so recommendation
    batches go ahead of the rest of a long song instead of waiting for all of it."""
    matcher = worker.matcher
    step = max(1, int(getattr(matcher, "batch_size", _EMBED_CHUNK) or _EMBED_CHUNK))
    embs, vas = [], []
    for start in range(0, len(song.features), step):
        part = slice(start, start + step)
        windows = None if song.tagger is None else song.tagger[part]
        e, v = await worker.run(matcher.embed_clip_features, song.features[part], windows, priority=Priority.BACKGROUND)
        embs.append(e)
        vas.append(v)
    return np.concatenate(embs), np.concatenate(vas)


def store_song(
    session_factory: Callable[[], Session],
    song: PreparedSong,
    embeddings: np.ndarray,
    va: np.ndarray,
    *,
    sha256: str,
    given: TrackMetadata,
    checkpoint_hash: str,
    placement: Placement = Placement(),
) -> tuple[Track, bool]:
    """Step 4: store the audio and commit the track with its clips at once (``add_track``).

    Returns ``(track, created)``; ``created`` is False when the same bytes were committed first.
    """
    return add_track(
        session_factory,
        sha256=sha256,
        fields=resolve_fields(given, song.tags),
        duration=song.duration,
        clips=ClipBatch(song.starts, song.ends, va, embeddings),
        checkpoint_hash=checkpoint_hash,
        placement=placement,
    )


def find_song(session_factory: Callable[[], Session], sha256: str) -> Track | None:
    """The track with these bytes, in a session of its own (closed before any slow work)."""
    with session_factory() as session:
        return catalogue.find_track(session, sha256)


class CpuRunner(Protocol):
    """Runs blocking CPU work off the event loop (the upload gate's low-priority threads)."""

    async def __call__(self, fn: Callable[..., T], *args: Any) -> T: ...


async def ingest_upload(
    data: bytes,
    sha256: str,
    given: TrackMetadata,
    rules: AudioRules,
    *,
    session_factory: Callable[[], Session],
    worker: InferenceWorker,
    live: LiveIndex,
    store: AudioStore,
    run_cpu: CpuRunner,
) -> tuple[Track, bool]:
    """All four steps for an uploaded song, then the live index refreshed.

    Decoding and features run through ``run_cpu``, embedding on the model thread at background
    priority; the stored file is removed again on any failure before the commit. Returns
    ``(track, created)``; ``created`` is False when the same bytes were committed meanwhile.
    Refusals raise ``AudioDecodeError``.
    """
    existing = await anyio.to_thread.run_sync(find_song, session_factory, sha256)  # committed while we queued
    if existing is not None:
        return existing, False
    matcher = worker.matcher
    song = await run_cpu(functools.partial(prepare_song, tagger=matcher.needs_tagger_input), data, rules)
    embeddings, va = await embed_song_async(worker, song)
    track, created = await anyio.to_thread.run_sync(
        functools.partial(
            store_song,
            session_factory,
            song,
            embeddings,
            va,
            sha256=sha256,
            given=given,
            checkpoint_hash=matcher.checkpoint_hash,
            # the query-bank statistics are computed on the model thread and stored with the track
            placement=Placement(audio=data, store=store, scorer=ModelThreadScorer(worker, Priority.BACKGROUND)),
        )
    )
    if not created:  # another replica committed the same bytes first
        return track, False
    try:
        await anyio.to_thread.run_sync(live.refresh_tracks, [track.id])
    except Exception:  # the DB is the truth: the sync loop will add it
        log.exception("track %s committed but not yet in the live index", track.id)
    return track, True
