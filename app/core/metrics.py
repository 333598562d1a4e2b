"""Prometheus metrics, one registry per app.

A per-app `CollectorRegistry` (not prometheus_client's global one) lets several apps live in one
process — tests create many — without "duplicated timeseries" errors or metrics bleeding over.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.request_latency = Histogram(
            "photoscore_http_request_duration_seconds",
            "HTTP request latency by route template, method and status.",
            ("method", "route", "status"),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "photoscore_inference_batch_size",
            "Images per inference batch (micro-batching of concurrent requests).",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.inference_seconds = Histogram(
            "photoscore_inference_batch_seconds",
            "Wall time of one image-embedding batch in the inference thread.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.catalogue_tracks = Gauge("photoscore_catalogue_tracks", "Tracks in this replica's live index.", registry=r)
        self.catalogue_clips = Gauge("photoscore_catalogue_clips", "Clips in this replica's live index.", registry=r)
        self.sync_events = Counter(
            "photoscore_index_sync_events_total",
            "Tracks (re)loaded into or dropped from the live index by the sync loop.",
            registry=r,
        )
        self.sync_errors = Counter(
            "photoscore_index_sync_errors_total",
            "Failed polls of the catalogue event log.",
            registry=r,
        )

    def bind_catalogue(self, tracks: Callable[[], float], clips: Callable[[], float]) -> None:
        """Read the catalogue size live at scrape time."""
        self.catalogue_tracks.set_function(tracks)
        self.catalogue_clips.set_function(clips)

    def render(self) -> bytes:
        return generate_latest(self.registry)
