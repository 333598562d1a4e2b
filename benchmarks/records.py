"""Typed result records of every benchmark, and their loader from the stored JSON.

The benchmarks return these records; ``common.save_json`` writes them (``to_plain``) in the
layout the untyped dicts had, so older ``results.json``, ``ivfpq.json`` and ``ray-bench.json``
files still load, and ``from_json`` reads them back, failing on a missing or unknown key.
``report.py`` renders ``docs/BENCHMARKS.md`` from a ``RunRecord``. A field with a ``None``
default is optional: left out of the JSON when ``None`` (a section not run, a figure older runs
did not record); the report shows ``n/a`` or leaves the remark out for it.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class RecordError(ValueError):
    """Stored figures that do not fit their record (a missing, unknown or mistyped key)."""


# ------------------------------------------------------------------------------------- shared
@dataclass(kw_only=True)
class Stats:
    """Milliseconds over ``n`` samples (``common.stats_ms``); NaN everywhere for no samples."""

    p50: float
    p95: float
    p99: float
    mean: float
    min: float
    n: float  # an int, or NaN for no samples


@dataclass(kw_only=True)
class Machine:
    cpu: str
    cpu_flags: str
    cores: int | None
    ram_gib: float | None
    os: str
    date: str


# -------------------------------------------------------------------------------------- model
@dataclass(kw_only=True)
class ForwardTiming:
    """One forward pass timed at one batch size (``bench_model``)."""

    batch: int
    load_1m: float | None = None
    ms_per_batch: float
    ms_per_item: float
    best_ms_per_item: float
    items_per_s: float


@dataclass(kw_only=True)
class ModelRow(ForwardTiming):
    backbone: str
    threads: int
    modality: str  # "image" or "clip"
    input: str  # e.g. "3x96x96"
    params_m: float


@dataclass(kw_only=True)
class ModelResults:
    rows: list[ModelRow]
    clip_batch_sweep: list[ForwardTiming] | None = None
    clip_preprocess_ms_per_clip: float
    threads: int


# -------------------------------------------------------------------------------------- floor
@dataclass(kw_only=True)
class FloorRow:
    photo: str
    source: str
    jpeg_kib: float
    decode_ms: float
    draft_decode_ms: float
    preprocess_ms: float
    draft_preprocess_ms: float
    embed_ms: dict[str, float]  # torch threads (as text) -> image branch p50 ms
    floor_ms: float
    floor_best_threads_ms: float
    floor_with_draft_ms: float


@dataclass(kw_only=True)
class FloorResults:
    rows: list[FloorRow]
    image_size: int
    default_threads: int


# ------------------------------------------------------------------------------------ indexer
@dataclass(kw_only=True)
class IndexerRun:
    """``python -m indexer`` end to end with ``--workers W``."""

    workers: int
    command_wall_s: float
    pipeline_xrt: float
    pipeline_clips_per_s: float
    pipeline_wall_s: float
    clips: int
    failed: int
    summary: list[str]
    xrt_command: float
    clips_per_s_command: float


@dataclass(kw_only=True)
class StageTimes:
    seconds: dict[str, float]
    share: dict[str, float]
    total_s: float
    clips: int
    audio_s: float
    xrt: float
    clips_per_s: float
    stage_xrt: dict[str, float]


@dataclass(kw_only=True)
class BlockDiff:
    max_abs_all: float
    max_abs_interior: float
    p99_abs_interior: float
    median_abs_interior: float
    ref_max_abs: float


@dataclass(kw_only=True)
class FeatureAccuracy:
    blocks: dict[str, BlockDiff]
    chroma_vs_per_clip_tuning: float
    clip_tolerance: float | None = None
    clips_over_tolerance: int | None = None
    fast_clips_per_s: float
    fast_xrt: float
    ref_clips_per_s: float
    ref_xrt: float
    clips_compared: int
    speedup: float


@dataclass(kw_only=True)
class IndexerResults:
    tracks: int
    files: list[str]
    audio_s: float
    end_to_end: list[IndexerRun]
    stages: StageTimes
    features: FeatureAccuracy


# ------------------------------------------------------------------------------------- search
@dataclass(kw_only=True)
class EfPoint:
    ef: int
    recall_at_10: float
    latency_ms: float


@dataclass(kw_only=True)
class NprobePoint:
    nprobe: int
    recall_at_10: float
    latency_ms: float


@dataclass(kw_only=True)
class IndexTypeRow:
    """One index type on one set of vectors (``bench_search.bench_index_types``)."""

    type: str
    recall_at_10: float
    latency_k10_ms: Stats
    latency_k256_ms: Stats
    latency_k10_1t_ms: Stats
    latency_k256_1t_ms: Stats
    build_s: float | None
    rss_mib: float | None
    mib_per_million: float
    file_bytes_per_vector: float
    params: str
    tuned_ef: int | None = None
    self_recall_at_10: float | None = None
    recall_at_10_service_k: float | None = None
    ef_sweep: list[EfPoint] | None = None
    nprobe_sweep: list[NprobePoint] | None = None


@dataclass(kw_only=True)
class IndexTypes:
    n: int
    queries: int
    rows: list[IndexTypeRow]


@dataclass(kw_only=True)
class LiveSearch:
    """``Ranker.page`` in-process on one catalogue (``bench_search.bench_live``)."""

    catalogue: str
    n_clips: int
    index_type: str | None
    load_s: float
    rss_mib: float
    source: str
    recommend_ms: Stats
    candidates_ms: Stats
    recommend_1t_ms: Stats | None = None
    candidates_1t_ms: Stats | None = None
    candidates_median: float
    candidates_max: int
    widened_share: float


@dataclass(kw_only=True)
class SyntheticBuild:
    """How a synthetic catalogue was written (``catalogue.write_synthetic``)."""

    generate_s: float
    db_write_s: float
    db_rows_per_s: float | None
    db_mib: float
    index_type: str
    index_params: dict[str, Any]
    index_self_recall_at_10: float | None = None
    index_build_s: float
    index_build_rss_delta_mib: float
    index_save_s: float
    index_file_mib: float


@dataclass(kw_only=True)
class CatalogueRecord(SyntheticBuild):
    name: str
    n_clips: int
    n_tracks: int


@dataclass(kw_only=True)
class SearchResults:
    spec: str
    types: list[IndexTypes]
    live: list[LiveSearch]
    catalogues: list[CatalogueRecord]


# ---------------------------------------------------------------------------------- recommend
@dataclass(kw_only=True)
class Cell:
    """One concurrency level against one server (``bench_recommend.run_cell``)."""

    concurrency: int
    latency_ms: Stats
    handler_ms: Stats | None = None
    rps: float
    errors: dict[str, int]
    mean_batch: float
    model_ms_per_image: float | None = None
    server_cores: float
    client_cores: float
    loadavg_1m: float | None = None


@dataclass(kw_only=True)
class ServerMode:
    """One server (micro-batching on or off): start-up, memory and its cells."""

    ready_s: float | None
    rss_mib: float
    ready: dict[str, Any]
    cells: list[Cell]
    rss_after_mib: float | None = None


@dataclass(kw_only=True)
class Photos:
    count: int
    size: str
    mean_kib: float
    source: str


@dataclass(kw_only=True)
class RecommendRun:
    catalogue: str
    n_clips: int
    n_tracks: int
    kind: str
    variant: str
    env: dict[str, str]
    modes: dict[str, ServerMode]  # "on" / "off"
    photos: Photos | None = None


@dataclass(kw_only=True)
class RecommendResults:
    runs: list[RecommendRun]
    concurrencies: list[int]


# -------------------------------------------------------------------------------- scale: IVF-PQ
@dataclass(kw_only=True)
class IvfpqSearch:
    p50_ms: float
    p99_ms: float
    recall_at_10: float


@dataclass(kw_only=True)
class IvfpqMeasure:
    """What the fresh process measures on a saved index (``bench_ivfpq.measure``)."""

    load_s: float
    rss_anon_mib: float
    rss_anon_bytes_per_clip: float
    k10_default: IvfpqSearch
    k256_default: IvfpqSearch
    k10_1thr: IvfpqSearch
    k256_1thr: IvfpqSearch
    rss_file_touched_mib: float


@dataclass(kw_only=True)
class IvfpqRun(IvfpqMeasure):
    n_clips: int
    index_type: str  # "flat", "hnsw" or "ivfpq"
    params: dict[str, Any]
    build_args: dict[str, Any] | None = None
    build_recall_at_10: float | None
    generate_s: float
    ground_truth_s: float
    build_s: float
    build_anon_mib: float
    save_s: float
    faiss_file_bytes: int
    faiss_bytes_per_clip: float
    vector_store_bytes: int


@dataclass(kw_only=True)
class IvfpqResults:
    spec: str
    machine: Machine
    load_start: list[float]
    started: str
    runs: list[IvfpqRun]
    load_end: list[float] | None = None


# ----------------------------------------------------------------------------------- scale: Ray
@dataclass(kw_only=True)
class EngineRun:
    """One ``python -m indexer`` run of ``bench_ray`` (local or Ray engine)."""

    args: list[str]
    command_wall_s: float
    run_wall_s: float
    clips_per_s: float
    xrt: float
    clips: int
    audio_s: int
    ray_execution_s: float | None
    failed: int


@dataclass(kw_only=True)
class RayResults:
    started: str
    load_start: list[float]
    files: list[str]
    cores: int | None
    local: EngineRun
    ray: EngineRun
    load_end: list[float]


# ----------------------------------------------------------------------------------------- run
@dataclass(kw_only=True)
class CheckpointInfo:
    path: str
    kind: str
    sha256: str
    config: dict[str, Any]


@dataclass(kw_only=True)
class SectionTiming:
    seconds: float
    load_start: list[float]
    load_end: list[float]


@dataclass(kw_only=True)
class RunRecord:
    """Everything one ``python -m benchmarks.run`` measured (``<workdir>/results.json``)."""

    command: str
    quick: bool
    machine: Machine
    versions: dict[str, str]
    checkpoint: CheckpointInfo
    nice: int | None = None
    settings: dict[str, Any] | None = None
    sections: dict[str, SectionTiming]
    cell_seconds: float | None = None
    model: ModelResults | None = None
    floor: FloorResults | None = None
    indexer: IndexerResults | None = None
    search: SearchResults | None = None
    recommend: RecommendResults | None = None
    ivfpq: IvfpqResults | None = None
    ray_bench: RayResults | None = None
    notes: list[str]
    total_seconds: float
    load_end: list[float] | None = None


# ------------------------------------------------------------------------------ dump and load
def to_plain(obj: Any) -> Any:
    """Records as JSON-ready dicts and lists (optional fields that are ``None`` left out)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: to_plain(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if not (getattr(obj, f.name) is None and f.default is None)
        }
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_plain(v) for v in obj]
    return obj


def from_json(cls: type[T], data: Any) -> T:
    """``data`` (parsed JSON) as a ``cls`` record, nested records included."""
    return typing.cast(T, _convert(cls, data, cls.__name__))


def load(cls: type[T], path: Path) -> T:
    """The record stored in the JSON file ``path``."""
    try:
        return from_json(cls, json.loads(path.read_text()))
    except RecordError as exc:
        raise RecordError(f"{path}: {exc}") from None


def _convert(tp: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            raise RecordError(f"{where}: expected an object ({tp.__name__}), got {type(value).__name__}")
        hints = typing.get_type_hints(tp)
        known = {f.name for f in dataclasses.fields(tp)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise RecordError(f"{where}: unknown key(s) {unknown} for {tp.__name__}")
        missing = sorted(
            f.name
            for f in dataclasses.fields(tp)
            if f.name not in value and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        )
        if missing:
            raise RecordError(f"{where}: missing key(s) {missing} for {tp.__name__}")
        return tp(**{k: _convert(hints[k], v, f"{where}.{k}") for k, v in value.items()})
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise RecordError(f"{where}: null where {tp} is expected")
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(inner, value, where)
    if origin is list:
        if not isinstance(value, list | tuple):
            raise RecordError(f"{where}: expected a list, got {type(value).__name__}")
        return [_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise RecordError(f"{where}: expected an object, got {type(value).__name__}")
        return {k: _convert(args[1], v, f"{where}.{k}") for k, v in value.items()}
    # Scalars and Any are kept as stored (an int stays an int: the report prints some as they are).
    return value
