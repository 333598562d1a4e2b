"""Typed dependencies: everything a route needs comes from `app.state`, never from globals."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from app.api.admission import UploadGate
from app.core.live_index import LiveIndex
from app.core.metrics import Metrics
from app.core.settings import Settings
from app.core.storage import AudioStore
from app.services.inference import InferenceWorker
from app.services.recommend import Recommender

log = logging.getLogger(__name__)


def _state(request: Request, name: str) -> Any:
    value = getattr(request.app.state, name, None)
    if value is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"the service is still starting ({name} not ready)")
    return value


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    """One session per request; closed (rolled back if uncommitted) when the request ends."""
    factory = _state(request, "session_factory")
    session = factory()
    try:
        yield session
    finally:
        _close(session)


def _close(session: Session) -> None:
    """Close even when the database died after the route's last query.

    The closing ROLLBACK then fails; raised here, after the response has started, it would drop
    the client's connection instead of delivering the answer that is already computed.
    SQLAlchemy has invalidated the dead connection, so there is nothing left to undo.
    """
    try:
        session.close()
    except DBAPIError as exc:
        log.warning("database connection lost while closing a request session: %s", str(exc.orig or exc)[:200])
        with contextlib.suppress(Exception):
            session.invalidate()


def get_worker(request: Request) -> InferenceWorker:
    return _state(request, "worker")


def get_live_index(request: Request) -> LiveIndex:
    return _state(request, "live_index")


def get_recommender(request: Request) -> Recommender:
    """The recommendation functions over this app's ranker, model thread, database and settings."""
    return Recommender(
        _state(request, "ranker"), _state(request, "worker"), _state(request, "session_factory"), get_settings(request)
    )


def get_store(request: Request) -> AudioStore:
    return _state(request, "store")


def get_upload_gate(request: Request) -> UploadGate:
    return _state(request, "upload_gate")


def get_session_factory(request: Request) -> sessionmaker[Session]:
    return _state(request, "session_factory")


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
WorkerDep = Annotated[InferenceWorker, Depends(get_worker)]
LiveIndexDep = Annotated[LiveIndex, Depends(get_live_index)]
RecommenderDep = Annotated[Recommender, Depends(get_recommender)]
StoreDep = Annotated[AudioStore, Depends(get_store)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
UploadGateDep = Annotated[UploadGate, Depends(get_upload_gate)]
SessionFactoryDep = Annotated[sessionmaker[Session], Depends(get_session_factory)]
