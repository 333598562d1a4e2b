"""Serving stored audio: Range handling per RFC 9110 with JSON errors (issue 14, F8).

Starlette's FileResponse answers a malformed Range with a text/plain 400 and an unsatisfiable
one with an empty 416. RFC 9110 (14.2) says a Range the server cannot parse, or in a unit it
does not know, is ignored: the whole file, 200. Only a well-formed range set none of whose
ranges overlaps the file is 416, here with the JSON body every error of the API has and
``Content-Range: bytes */size``. Satisfiable ranges are passed on to Starlette normalised.

The file is opened by the route, before any header is sent, and streamed from that handle
(issue 24, point 4): Starlette opens the path only after sending the headers, so a track deleted
in between gave a 200 with its Content-Length and then no body. An open file survives its
unlink on POSIX, so every 200/206 is now complete, and a file already gone is the route's 404.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import AsyncIterator
from typing import Any, BinaryIO

import anyio
from starlette.datastructures import Headers
from starlette.responses import FileResponse
from starlette.types import Receive, Scope, Send

from app.api.schemas import ErrorResponse

RANGE_NOT_SATISFIABLE: dict[int | str, dict] = {
    416: {"model": ErrorResponse, "description": "No requested byte range overlaps the file."}
}
_INT_RANGE = re.compile(r"([0-9]+)-([0-9]*)")
_SUFFIX_RANGE = re.compile(r"-([0-9]+)")


def parse_range(header: str, size: int) -> list[str] | None:
    """The satisfiable ranges of a ``Range`` header as ``first-last`` / ``-n`` strings.

    None when the header is to be ignored (not ``bytes``, or not valid syntax); an empty list
    when it is valid but nothing in it overlaps a file of ``size`` bytes (416).
    """
    unit, sep, ranges = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    specs = [part.strip(" \t") for part in ranges.split(",")]
    specs = [s for s in specs if s]  # the #list rule allows empty elements
    if not specs:
        return None
    satisfiable: list[str] = []
    for spec in specs:
        if m := _INT_RANGE.fullmatch(spec):
            first, last = int(m.group(1)), m.group(2)
            if last and int(last) < first:
                return None  # invalid int-range: the whole header is ignored
            if first < size:
                satisfiable.append(f"{first}-{last}")
        elif m := _SUFFIX_RANGE.fullmatch(spec):
            if int(m.group(1)) > 0 and size > 0:
                satisfiable.append(spec)
        else:
            return None
    return satisfiable


class AudioFileResponse(FileResponse):
    """FileResponse from a file the route already opened; Range per RFC 9110, 416 as JSON.

    The response owns ``file`` and closes it when sent (or when it is dropped unsent).
    """

    def __init__(self, file: BinaryIO, path: str | os.PathLike[str], **kwargs: Any) -> None:
        self.file = file
        super().__init__(path, stat_result=os.fstat(file.fileno()), **kwargs)

    @classmethod
    def open(cls, path: str | os.PathLike[str], **kwargs: Any) -> AudioFileResponse:
        """Open ``path`` now (``FileNotFoundError`` when it is gone) and respond from the handle."""
        file = open(path, "rb")  # noqa: SIM115 - owned by the response, closed when it is sent
        try:
            return cls(file, path, **kwargs)
        except BaseException:
            file.close()
            raise

    @contextlib.asynccontextmanager
    async def _open_file(self) -> AsyncIterator[anyio.AsyncFile[bytes]]:
        """Starlette's hook for reading the body: the handle opened before the headers."""
        yield anyio.wrap_file(self.file)

    def __del__(self) -> None:
        self.file.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._respond(scope, receive, send)
        finally:
            self.file.close()

    async def _respond(self, scope: Scope, receive: Receive, send: Send) -> None:
        extensions = scope.get("extensions") or {}
        if "http.response.pathsend" in extensions:  # sending by path would reopen it: not this file
            scope = {**scope, "extensions": {k: v for k, v in extensions.items() if k != "http.response.pathsend"}}
        if scope["type"] == "http" and self.stat_result is not None:
            header = Headers(scope=scope).get("range")
            if header is not None:
                size = self.stat_result.st_size
                ranges = parse_range(header, size)
                others = [(k, v) for k, v in scope["headers"] if k.lower() != b"range"]
                if ranges is None:
                    scope = {**scope, "headers": others}
                elif not ranges:
                    await self._unsatisfiable(scope, send, size)
                    return
                else:
                    scope = {**scope, "headers": [*others, (b"range", ("bytes=" + ",".join(ranges)).encode())]}
        await super().__call__(scope, receive, send)

    @staticmethod
    async def _unsatisfiable(scope: Scope, send: Send, size: int) -> None:
        body = json.dumps({"detail": f"Range not satisfiable: the file has {size} bytes"}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"content-range", f"bytes */{size}".encode()),
            (b"accept-ranges", b"bytes"),
        ]
        await send({"type": "http.response.start", "status": 416, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
