"""The FastAPI application: `create_app(settings)`, its lifespan, error handling and mounts.

Everything stateful (model, inference worker, DB engine, live index, audio store, metrics) is
created per app in the lifespan and kept on `app.state`; routes reach it through typed
dependencies (`app.api.deps`). Nothing is a module-level singleton, so tests and replicas can
build as many apps as they like.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Engine, make_url
from sqlalchemy.exc import DataError, DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.admission import BodyTimeoutMiddleware, UploadGate
from app.api.docs import add_offline_docs
from app.api.metrics_middleware import MetricsMiddleware
from app.api.routes import health, playlist, recommend, soundtrack, tracks
from app.core.catalogue import referenced_audio_keys
from app.core.db import DatabaseUnavailableError, make_engine, make_session_factory, migrate_database
from app.core.errors import first_line
from app.core.live_index import LiveIndex
from app.core.metrics import Metrics
from app.core.settings import Settings
from app.core.storage import AudioStore
from app.core.vector_index import IndexPolicy
from app.services.bank_stats import backfill_in_background
from app.services.inference import InferenceWorker, ModelThreadScorer, Priority, WorkerClosedError
from app.services.photos import embed_tensors
from app.services.recommend import Recommender

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
_MULTIPART_SLACK = 1 << 20  # form fields and multipart framing on top of the file itself
PG_CONNECT_TIMEOUT_S = 5

DESCRIPTION = """
PhotoScore recommends music for a photo by emotion, following CDCML (Zhao et al., ACM MM 2020):
photos and 2-second music clips share one embedding space learned so that distances mirror
valence-arousal similarity. FAISS finds candidate clips, a learned similarity predictor
reranks them, and the best songs come back with the best-matching segment of each.

* **Recommend**: `POST /recommend` with a photo (steer the mood, page, vary, choose the segment length);
  `POST /playlist` with the photos of an album: one song each, following their arc;
  `POST /soundtrack` with a video: its scenes, a song segment each, as a cue sheet or an Opus preview.
* **Catalogue**: `POST /tracks` (API key) adds a song synchronously; `GET /tracks`,
  `GET /tracks/{id}`, `DELETE /tracks/{id}` (API key), `GET /tracks/{id}/audio` (Range).
* **Operations**: `/health`, `/ready`, `/metrics`.

Writes need an API key (`Authorization: Bearer <key>` or `X-API-Key: <key>`) from
`PHOTOSCORE_API_KEYS`. Errors are JSON: `{"detail": "..."}`.
"""

TAGS = [
    {"name": "recommend", "description": "Songs for a photo."},
    {"name": "tracks", "description": "The music catalogue."},
    {"name": "operations", "description": "Health, readiness and metrics."},
]


# ------------------------------------------------------------------------------ middleware
class UploadLimitMiddleware:
    """413 for bodies over the limit: at once from Content-Length, else while streaming.

    Starlette would otherwise spool any size of multipart upload to disk before a route runs.
    """

    def __init__(
        self, app: ASGIApp, max_bytes: int, limit_mb: float, paths: dict[str, tuple[int, str]] | None = None
    ) -> None:
        self.app = app
        self.default = (
            max_bytes,
            f"the request body exceeds the upload limit of {limit_mb:g} MB (PHOTOSCORE_MAX_UPLOAD_MB)",
        )
        self.paths = paths or {}  # path -> (limit, message): videos have their own, larger limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes, limit_text = self.paths.get(scope.get("path", ""), self.default)
        declared = _content_length(scope)
        if declared is not None and declared > max_bytes:
            response = JSONResponse(
                {"detail": limit_text},
                status_code=status.HTTP_413_CONTENT_TOO_LARGE,
                headers={"Connection": "close"},
            )
            await response(scope, receive, send)
            return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > max_bytes:
                    raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, limit_text)
            return message

        await self.app(scope, limited_receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


# ---------------------------------------------------------------------------- error handling
def _describe(error: dict) -> str:
    loc = [str(p) for p in error.get("loc", ())]
    where, field = (loc[0], ".".join(loc[1:])) if loc else ("request", "")
    kind = {"body": "form field", "query": "query parameter", "path": "path parameter"}.get(where, f"{where} field")
    if error.get("type") == "missing":
        return f"missing {kind} '{field}'"
    return f"{kind} '{field}': {error.get('msg', 'invalid')}"


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)  # registered for this type only
    errors = jsonable_encoder([{k: e[k] for k in ("loc", "msg", "type") if k in e} for e in exc.errors()])
    return JSONResponse(
        {"detail": "; ".join(_describe(e) for e in errors) or "invalid request", "errors": errors},
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
    )


async def _database_unavailable(_: Request, exc: Exception) -> JSONResponse:
    # The reason goes to the log only: driver and pool messages name hosts, pool sizes and SQL.
    log.warning("database unavailable: %s", first_line(exc))
    if isinstance(exc, PoolTimeoutError):
        detail = "the service is busy: no database connection became free in time; retry shortly"
    else:
        detail = "the database is unavailable; retry shortly"
    return JSONResponse(
        {"detail": detail},
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": "5"},
    )


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DBAPIError)  # registered for this type only
    if exc.connection_invalidated or isinstance(exc, OperationalError):
        return await _database_unavailable(request, exc)
    log.error("database error on %s %s: %s", request.method, request.url.path, first_line(exc))
    return JSONResponse(
        {"detail": "the database could not process this request"},
        status_code=status.HTTP_500_INTERNAL_SERVER_ERROR,
    )


async def _data_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DataError)  # registered for this type only
    return JSONResponse(
        {"detail": f"a value was refused by the database: {first_line(exc.orig or exc)}"},
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
    )


async def _worker_closed(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, WorkerClosedError)  # registered for this type only
    return JSONResponse(
        {"detail": str(exc)},
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": "5"},
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(
        {"detail": f"internal server error ({type(exc).__name__}); it has been logged"},
        status_code=status.HTTP_500_INTERNAL_SERVER_ERROR,
    )


# ---------------------------------------------------------------------------------- lifespan
def _migrate(engine: Engine, url: str) -> None:
    """Bring the schema to head; on PostgreSQL under an advisory lock so replicas take turns."""
    alembic_log = logging.getLogger("alembic")
    if not alembic_log.isEnabledFor(logging.DEBUG):
        alembic_log.setLevel(logging.WARNING)  # its per-plugin INFO lines drown the start-up log
    migrate_database(url, engine)


def _engine_for(settings: Settings) -> Engine:
    url = settings.resolved_database_url
    if make_url(url).get_backend_name() == "postgresql":
        return make_engine(url, connect_args={"connect_timeout": PG_CONNECT_TIMEOUT_S}, pool_timeout=10)
    return make_engine(url)


async def _sync_loop(app: FastAPI, live: LiveIndex, every: float) -> None:
    metrics: Metrics = app.state.metrics
    failures = 0
    while True:
        await asyncio.sleep(every)
        try:
            changed = await run_in_threadpool(live.sync_once)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failures += 1
            metrics.sync_errors.inc()
            live.last_sync_error = first_line(exc)
            if failures == 1 or failures % 30 == 0:
                log.warning("index sync failed (%d in a row): %s", failures, first_line(exc))
            continue
        if failures:
            log.info("index sync recovered after %d failures", failures)
        failures = 0
        if changed:
            metrics.sync_events.inc(changed)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    from model.inference import Matcher  # ONNX Runtime; imported when an app starts

    settings: Settings = app.state.settings
    metrics: Metrics = app.state.metrics
    state = app.state
    started = time.perf_counter()

    engine = _engine_for(settings)
    try:
        await run_in_threadpool(_migrate, engine, settings.resolved_database_url)
    except Exception as exc:
        engine.dispose()
        raise DatabaseUnavailableError(f"cannot prepare the database: {first_line(exc)}") from exc
    state.engine = engine
    state.session_factory = make_session_factory(engine)
    state.upload_gate = UploadGate(
        settings.upload_concurrency, settings.upload_queue_size, settings.upload_queue_wait_seconds
    )

    matcher = await run_in_threadpool(Matcher.load, settings.checkpoint, settings.device)

    worker = InferenceWorker(
        matcher,
        batch_fn=functools.partial(embed_tensors, matcher),
        max_batch=settings.batch_max_size,
        max_wait_ms=settings.batch_max_wait_ms,
        micro_batching=settings.micro_batching,
        metrics=metrics,
    )
    await worker.start()
    await worker.warmup()
    state.worker, state.warmed = worker, True

    live = LiveIndex(
        state.session_factory,
        checkpoint_hash=matcher.checkpoint_hash,
        dim=matcher.dim,
        index_dir=settings.resolved_index_dir,
        policy=IndexPolicy.from_settings(settings),
    )
    await run_in_threadpool(live.load)
    state.live_index = live
    state.ranker = Recommender.ranker_for(live, worker, settings)
    # Tracks stored before query-bank statistics were kept get them once, in the background.
    backfill = asyncio.create_task(
        backfill_in_background(live, ModelThreadScorer(worker, Priority.BACKGROUND), state.session_factory),
        name="photoscore-bank-stats",
    )
    metrics.bind_catalogue(lambda: live.n_tracks, lambda: live.n_clips)
    state.store = AudioStore(settings.resolved_audio_dir)
    if swept := await run_in_threadpool(state.store.sweep_temporary):
        log.warning("removed %d temporary audio files left by an earlier crash", swept)
    if swept := await run_in_threadpool(_sweep_unreferenced_audio, state.store, state.session_factory):
        log.warning("removed %d stored audio files no track references (uploads cut off mid-way)", swept)
    sync_task = asyncio.create_task(_sync_loop(app, live, settings.index_sync_seconds), name="photoscore-index-sync")
    log.info(
        "PhotoScore ready in %.1f s: model %s on %s, %d tracks / %d clips (index from %s)",
        time.perf_counter() - started,
        matcher.version,
        matcher.device,
        live.n_tracks,
        live.n_clips,
        live.source,
    )
    try:
        yield
    finally:
        for task in (sync_task, backfill):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await worker.close()
        state.upload_gate.close()
        state.warmed = False
        engine.dispose()


def _sweep_unreferenced_audio(store: AudioStore, session_factory: sessionmaker[Session]) -> int:
    """Start-up sweep of stored files whose track was never committed (see `AudioStore`)."""

    def referenced(keys: list[str]) -> set[str]:
        with session_factory() as session:
            return referenced_audio_keys(session, keys)

    return store.sweep_unreferenced(referenced)


# ------------------------------------------------------------------------------------ factory
def create_app(settings: Settings | None = None) -> FastAPI:
    """A new, independent PhotoScore app (the lifespan loads model, DB and index)."""
    settings = settings or Settings()
    app = FastAPI(
        title="PhotoScore",
        summary="Music for a photo, matched by emotion.",
        description=DESCRIPTION,
        version=_version(),
        lifespan=lifespan,
        openapi_tags=TAGS,
        generate_unique_id_function=lambda route: route.name,  # operationId "recommend", "add_track"...
        docs_url=None,  # the stock pages load Swagger UI and ReDoc from a CDN: served locally instead
        redoc_url=None,
    )
    add_offline_docs(app)
    app.state.settings = settings
    app.state.metrics = Metrics()
    for name in ("engine", "session_factory", "worker", "live_index", "ranker", "store", "upload_gate"):
        setattr(app.state, name, None)
    app.state.warmed = False

    max_bytes = int(settings.max_upload_mb * 1e6) + _MULTIPART_SLACK
    video_bytes = int(settings.max_video_mb * 1e6) + _MULTIPART_SLACK
    video_text = f"the request body exceeds the video limit of {settings.max_video_mb:g} MB (PHOTOSCORE_MAX_VIDEO_MB)"
    app.add_middleware(
        UploadLimitMiddleware,
        max_bytes=max_bytes,
        limit_mb=settings.max_upload_mb,
        paths={"/soundtrack": (video_bytes, video_text)},
    )
    app.add_middleware(BodyTimeoutMiddleware, timeout_s=settings.body_timeout_seconds)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)

    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(DatabaseUnavailableError, _database_unavailable)
    app.add_exception_handler(PoolTimeoutError, _database_unavailable)
    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(DataError, _data_error)
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(WorkerClosedError, _worker_closed)
    app.add_exception_handler(Exception, _unexpected)

    app.include_router(recommend.router)
    app.include_router(playlist.router)
    app.include_router(soundtrack.router)
    app.include_router(tracks.router)
    app.include_router(health.router)

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        page = STATIC_DIR / "index.html"
        if page.is_file():
            return FileResponse(page, media_type="text/html")
        return RedirectResponse("/docs")

    app.mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="static")
    return app


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("photoscore")
    except Exception:
        return "0.0.0"
