"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response, status
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from app.api.deps import MetricsDep
from app.api.schemas import HealthResponse, IndexingProgress, ReadyResponse
from app.core.db import ping
from app.core.errors import first_line
from app.core.metrics import CONTENT_TYPE
from app.core.progress import default_path, read_progress

router = APIRouter(tags=["operations"])

DB_CHECK_TIMEOUT_S = 3.0
MISSING_SHOWN = 20  # track ids named in the detail when library files are missing


@router.get(
    "/health",
    response_model=HealthResponse,
    summary="Liveness",
    description="200 while the process serves HTTP; says nothing about the model or database.",
)
async def health() -> HealthResponse:
    return HealthResponse()


@router.get(
    "/ready",
    response_model=ReadyResponse,
    summary="Readiness",
    description="200 when the model is loaded and warm, the live index is loaded and the "
    "database answers `SELECT 1`; otherwise 503 with the failing checks and why. `checks.sources` "
    "is false (and `detail` names the tracks) when library tracks have lost their audio file: "
    "reported, not a failure; those tracks are not recommended. `indexing` is the status of the "
    "last `photoscore index` run from its progress file (`<PHOTOSCORE_DATA_DIR>/indexing.json`: "
    "label, done, total, failed, current, state, started, updated, finished, message), null when "
    'there is none; while it runs `detail` says so too ("indexing the demo library: 12 of 73 '
    'songs"). Information only: it never makes the service unready, and recommendations come '
    "from the tracks indexed so far.",
    responses={503: {"model": ReadyResponse, "description": "Not ready; `detail` says why."}},
)
async def ready(request: Request) -> Response:
    state = request.app.state
    reasons: list[str] = []
    worker = getattr(state, "worker", None)
    live = getattr(state, "live_index", None)
    engine = getattr(state, "engine", None)
    model_ok = worker is not None and getattr(state, "warmed", False)
    if not model_ok:
        reasons.append("model: not loaded")
    index_ok = live is not None and live.loaded
    if not index_ok:
        reasons.append("index: not loaded")
    db_ok = False
    if engine is None:
        reasons.append("database: not connected")
    else:
        try:
            await asyncio.wait_for(run_in_threadpool(ping, engine), DB_CHECK_TIMEOUT_S)
            db_ok = True
        except TimeoutError:
            reasons.append(f"database: no answer within {DB_CHECK_TIMEOUT_S:g} s")
        except Exception as exc:
            reasons.append(f"database: {first_line(exc)}")
    if live is not None and live.last_sync_error:
        reasons.append(f"index sync: {live.last_sync_error}")
    missing = sorted(live.missing_sources) if live is not None else []
    if missing:  # reported, not a failure: the other songs are served as usual
        shown = ", ".join(map(str, missing[:MISSING_SHOWN])) + (", ..." if len(missing) > MISSING_SHOWN else "")
        reasons.append(
            f"sources: {len(missing)} library tracks have lost their audio file and are not recommended "
            f"(ids {shown}); restore the files, or re-index or delete the tracks"
        )
    settings = getattr(state, "settings", None)
    progress = None if settings is None else await run_in_threadpool(read_progress, default_path(settings.data_dir))
    if progress is not None and progress.state in ("running", "stale"):  # reported, not a failure
        reasons.append(progress.describe())
    ok = model_ok and index_ok and db_ok
    body = ReadyResponse(
        status="ready" if ok else "unavailable",
        checks={"model": model_ok, "index": index_ok, "database": db_ok, "sources": not missing},
        detail="; ".join(reasons) or None,
        model_version=str(worker.matcher.version) if worker is not None else None,
        tracks=live.n_tracks if live is not None else 0,
        clips=live.n_clips if live is not None else 0,
        indexing=None if progress is None else IndexingProgress(**progress.to_json()),
    )
    return JSONResponse(
        body.model_dump(mode="json"),
        status_code=status.HTTP_200_OK if ok else status.HTTP_503_SERVICE_UNAVAILABLE,
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    description="Request latency per route, inference batch sizes and durations, catalogue "
    "size and index-sync counters, in the Prometheus text format.",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text exposition format.",
            "content": {
                "text/plain": {
                    "example": "# HELP photoscore_catalogue_tracks Tracks in this replica's "
                    "live index.\n# TYPE photoscore_catalogue_tracks gauge\n"
                    "photoscore_catalogue_tracks 12.0\n"
                }
            },
        }
    },
)
async def metrics(metrics: MetricsDep) -> Response:
    return Response(metrics.render(), media_type=CONTENT_TYPE)
