"""API-key checks for writes (and optionally reads).

Keys come from `Settings.api_keys`. A key is accepted from `Authorization: Bearer <key>` or
`X-API-Key: <key>`; comparison is constant-time and runs over every configured key, so timing
says nothing about which key, or how much of one, matched. With no key configured, writes are
refused outright: an open write endpoint on a fresh install is the classic foot-gun.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from app.api.deps import get_settings
from app.core.settings import Settings

_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <API key>`")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="`X-API-Key: <API key>`")

NO_KEYS_MESSAGE = (
    "Writes are disabled: no API key is configured. Set PHOTOSCORE_API_KEYS to one or more "
    "comma-separated secrets (for example `export PHOTOSCORE_API_KEYS=$(openssl rand -hex 24)`), "
    "restart the service, and send the key as `Authorization: Bearer <key>` or `X-API-Key: <key>`."
)


def key_matches(presented: str, configured: list[str]) -> bool:
    """Constant-time membership test (no early exit on the first match)."""
    given = presented.encode("utf-8")
    found = False
    for key in configured:
        found |= hmac.compare_digest(given, key.encode("utf-8"))
    return found


def presented_key(bearer: HTTPAuthorizationCredentials | None, header_key: str | None) -> str | None:
    if bearer is not None and bearer.credentials:
        return bearer.credentials
    return header_key or None


def _check(settings: Settings, key: str | None) -> None:
    if not settings.api_keys:
        raise HTTPException(status.HTTP_403_FORBIDDEN, NO_KEYS_MESSAGE)
    if key is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "An API key is required: send `Authorization: Bearer <key>` or `X-API-Key: <key>`.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not key_matches(key, settings.api_keys):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "The API key is not valid.",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )


def require_write_key(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header_key: Annotated[str | None, Depends(_header)],
) -> None:
    """Dependency for every write route."""
    _check(get_settings(request), presented_key(bearer, header_key))


def require_read_access(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header_key: Annotated[str | None, Depends(_header)],
) -> None:
    """Dependency for read routes: open unless `public_reads` is false."""
    settings = get_settings(request)
    if settings.public_reads:
        return
    _check(settings, presented_key(bearer, header_key))


WriteAuth = Depends(require_write_key)
ReadAuth = Depends(require_read_access)
