"""Reading multipart uploads: the size-capped body, strict text fields, one part per file field."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import aclosing
from typing import Any

from fastapi import HTTPException, Request, Response, UploadFile, params, status
from fastapi.routing import APIRoute
from python_multipart.multipart import parse_options_header
from starlette.datastructures import FormData
from starlette.formparsers import MultiPartException, MultiPartParser

_CHUNK = 1 << 20


async def upload_chunks(upload: UploadFile, field: str, limit_bytes: int) -> AsyncIterator[bytes]:
    """The upload from where it stands, chunk by chunk: 413 past `limit_bytes` (also guarded by
    the middleware), 400 when it holds nothing."""
    size = 0
    while chunk := await upload.read(_CHUNK):
        size += len(chunk)
        if size > limit_bytes:
            raise HTTPException(
                status.HTTP_413_CONTENT_TOO_LARGE,
                f"{field}: the upload exceeds the limit of {limit_bytes / 1e6:g} MB (PHOTOSCORE_MAX_UPLOAD_MB)",
            )
        yield chunk
    if not size:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"{field}: the uploaded file is empty")


async def read_upload(upload: UploadFile, field: str, limit_bytes: int) -> bytes:
    """The whole upload (see ``upload_chunks``)."""
    return b"".join([chunk async for chunk in upload_chunks(upload, field, limit_bytes)])


# ------------------------------------------------------------------------ strict form text
class _StrictMultiPartParser(MultiPartParser):
    """Starlette's parser, except that a text field that is not valid in its charset (UTF-8
    unless the request says otherwise) is refused instead of silently read as Latin-1, and a
    route's file field sent as a text field is told it must be a file (issue 24: a binary
    `audio` text part was told "not valid UTF-8", a text one "Expected UploadFile")."""

    file_fields: frozenset[str] = frozenset()

    def on_part_end(self) -> None:
        part = self._current_part
        if part.file is None:
            if part.field_name in self.file_fields:
                name = part.field_name
                raise HTTPException(
                    status.HTTP_422_UNPROCESSABLE_CONTENT,
                    f"{name}: must be a file: send it as a file part with a file name "
                    f'(Content-Disposition: form-data; name="{name}"; filename="..."; with curl: -F {name}=@FILE)',
                )
            try:
                bytes(part.data).decode(self._charset)
            except UnicodeDecodeError as exc:
                raise HTTPException(
                    status.HTTP_422_UNPROCESSABLE_CONTENT,
                    f"{part.field_name}: the form field is not valid {self._charset.upper()} "
                    f"(invalid byte at position {exc.start}); send text as UTF-8",
                ) from None
        super().on_part_end()


class _StrictFormRequest(Request):
    file_fields: frozenset[str] = frozenset()

    async def _get_form(
        self, *, max_files: int | float = 1000, max_fields: int | float = 1000, max_part_size: int = 1024 * 1024
    ) -> FormData:
        if self._form is None and parse_options_header(self.headers.get("Content-Type"))[0] == b"multipart/form-data":
            try:
                async with aclosing(self.stream()) as stream:
                    parser = _StrictMultiPartParser(
                        self.headers, stream, max_files=max_files, max_fields=max_fields, max_part_size=max_part_size
                    )
                    parser.file_fields = self.file_fields
                    self._form = await parser.parse()
            except MultiPartException as exc:
                raise HTTPException(status.HTTP_400_BAD_REQUEST, exc.message) from exc
        return await super()._get_form(max_files=max_files, max_fields=max_fields, max_part_size=max_part_size)


class StrictFormRoute(APIRoute):
    """Routes whose multipart text fields must decode in the declared charset (issue 14, F9)
    and whose file fields must be file parts: FastAPI's documented custom-Request hook, so
    nothing global is patched."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        file_fields = frozenset(f.alias for f in self.dependant.body_params if isinstance(f.field_info, params.File))

        async def strict(request: Request) -> Response:
            strict_request = _StrictFormRequest(request.scope, request.receive, request._send)
            strict_request.file_fields = file_fields
            return await handler(strict_request)

        return strict


def single_part(field: str) -> Callable[[Request], Coroutine[Any, Any, None]]:
    """A dependency refusing a multipart body that repeats ``field`` (one would silently win)."""

    async def check(request: Request) -> None:
        form = await request.form()
        count = len(form.getlist(field))
        if count > 1:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                f"{field}: the request has {count} parts named {field!r}; send exactly one",
            )

    return check
