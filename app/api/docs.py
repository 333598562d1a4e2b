"""`/docs` (Swagger UI) and `/redoc` that work with no network.

FastAPI's stock pages load Swagger UI and ReDoc from a CDN and stay blank on a private or
air-gapped deployment. The assets come from the `fastapi-offline` package (maintained, ships
swagger-ui-bundle.js, swagger-ui.css and redoc.standalone.js) and are served under
`/static-offline-docs`; the pages themselves are FastAPI's own `get_swagger_ui_html` and
`get_redoc_html` pointed at them (what `fastapi_offline.FastAPIOffline` does), plus a
Content-Security-Policy that lets them reach nothing but this service. ReDoc's sidebar asks a
CDN for a decorative logo; the policy stops that request in the browser (it falls back to no
logo), so opening the docs never leaves the machine.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"
ASSETS_URL = "/static-offline-docs"
DOCS_URL = "/docs"
REDOC_URL = "/redoc"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"

_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def content_security_policy(html: str, *, workers: bool = False) -> str:
    """Same-origin only; inline scripts allowed by their sha256 (the page's own, nothing injected).

    Inline styles stay allowed: both UIs set element styles from script (React, styled-components).
    """
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
        for body in _INLINE_SCRIPT.findall(html)
    )
    worker = "; worker-src 'self' blob:" if workers else ""
    return (
        f"default-src 'self'; script-src 'self' {hashes}".rstrip()
        + "; style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:"
        + "; connect-src 'self'; object-src 'none'; base-uri 'self'; frame-ancestors 'self'"
        + worker
    )


def _with_policy(page: HTMLResponse, *, workers: bool = False) -> HTMLResponse:
    html = bytes(page.body).decode()
    page.headers["Content-Security-Policy"] = content_security_policy(html, workers=workers)
    page.headers["X-Content-Type-Options"] = "nosniff"
    page.headers["Referrer-Policy"] = "no-referrer"
    return page


def add_offline_docs(app: FastAPI) -> None:
    """Serve the docs pages and their assets; build `app` with `docs_url=None, redoc_url=None`."""
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS_DIR), name="static-offline-docs")

    def assets(request: Request) -> str:
        return f"{request.scope.get('root_path', '')}{ASSETS_URL}"

    def spec(request: Request) -> str:
        return f"{request.scope.get('root_path', '')}{app.openapi_url}"

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        base = assets(request)
        return _with_policy(
            get_swagger_ui_html(
                openapi_url=spec(request),
                title=f"{app.title} - Swagger UI",
                oauth2_redirect_url=OAUTH2_REDIRECT_URL,
                swagger_js_url=f"{base}/swagger-ui-bundle.js",
                swagger_css_url=f"{base}/swagger-ui.css",
                swagger_favicon_url=f"{base}/favicon.png",
                swagger_ui_parameters=app.swagger_ui_parameters,
            )
        )

    @app.get(OAUTH2_REDIRECT_URL, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return _with_policy(get_swagger_ui_oauth2_redirect_html())

    @app.get(REDOC_URL, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        base = assets(request)
        return _with_policy(
            get_redoc_html(
                openapi_url=spec(request),
                title=f"{app.title} - ReDoc",
                redoc_js_url=f"{base}/redoc.standalone.js",
                redoc_favicon_url=f"{base}/favicon.png",
                with_google_fonts=False,
            ),
            workers=True,  # ReDoc's search index runs in a worker made from a blob: URL
        )
