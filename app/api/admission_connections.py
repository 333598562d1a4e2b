"""Connection-level guards for `photoscore serve`: slow, idle and malformed clients (issue 24, point 5).

uvicorn alone let three kinds of client hold or trick the server:

- A request head trickled at 1 byte/s stayed open for ever: uvicorn's keep-alive timer is reset
  by every byte and no timer covers a head in progress. `guarded_h11` adds a header timeout (like
  nginx's `client_header_timeout`): from the moment a connection waits for a request head (new,
  or idle after a response) the whole head must arrive within `header_timeout_s`
  (`PHOTOSCORE_HEADER_TIMEOUT_SECONDS`), else 408 (when some of it came) and the connection is closed.
- 1,010 half-sent heads made every request 503: uvicorn's `limit_concurrency` counts open
  connections, including those that have not sent a request. Now only requests in flight are
  counted (`RequestGuard`), and connections waiting for a head (half-open or idle keep-alive)
  are bounded by closing the *oldest* of them beyond `max_waiting`. A well-behaved client sends
  its head within milliseconds, so it is never the oldest waiting and is never refused.
- h11 limits a request head only while it is incomplete, so a 100 KB request line that arrives
  in one read was accepted (and answered 422 by validation), and h11 accepts `Content-Length`
  beside `Transfer-Encoding: chunked`, which RFC 9112 (6.1) calls a smuggling risk.
  `RequestGuard` answers both with 400 and closes the connection.

The HTTP parsing stays h11's; these only add timers, counts and checks on what h11 parsed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections import OrderedDict
from typing import Any

import h11
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

HEADER_TIMEOUT_S = 10.0  # whole request head, from when the connection starts waiting for it
_HEAD_OVERHEAD = 16  # " HTTP/1.1\r\n" and the blank line, counted like h11 counts the head

# Per server (uvicorn's ServerState): connections waiting for a request head, oldest first.
_WAITING: weakref.WeakKeyDictionary[Any, OrderedDict[_GuardedH11Protocol, None]] = weakref.WeakKeyDictionary()


def _error(status: int, reason: str, detail: str) -> bytes:
    """A complete `Connection: close` JSON error response (the API's error shape)."""
    body = json.dumps({"detail": detail}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class _GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header timeout and a bound on connections waiting for a head."""

    header_timeout_s: float = HEADER_TIMEOUT_S
    max_waiting: int = 1000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None

    # -- where the waiting state can change ------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._sync_waiting()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._sync_waiting()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._sync_waiting()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._stop_waiting()

    # -- the waiting state -----------------------------------------------------------------
    def _waiting_for_head(self) -> bool:
        """Between requests: h11 has not parsed a request head yet (some bytes may have come)."""
        if self.transport is None or self.transport.is_closing():
            return False
        return self.conn.their_state is h11.IDLE and self.conn.our_state is h11.IDLE

    def _sync_waiting(self) -> None:
        if not self._waiting_for_head():
            self._stop_waiting()
        elif self._head_timer is None:  # started waiting now: the deadline runs from here
            self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)
            waiting = _WAITING.setdefault(self.server_state, OrderedDict())
            waiting[self] = None
            while len(waiting) > self.max_waiting:
                oldest, _ = waiting.popitem(last=False)
                oldest._close_waiting("too many connections are waiting to send a request; this was the oldest")

    def _stop_waiting(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        waiting = _WAITING.get(self.server_state)
        if waiting is not None:
            waiting.pop(self, None)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._waiting_for_head():
            self._close_waiting(f"the request head did not arrive within {self.header_timeout_s:g} s")

    def _close_waiting(self, why: str) -> None:
        """408 if part of a head came (an idle keep-alive connection just closes), then close."""
        self._stop_waiting()
        if self.transport is None or self.transport.is_closing():
            return
        if self.conn.trailing_data[0]:
            self.transport.write(_error(408, "Request Timeout", why))
        log.info("closed a connection from %s: %s", self.client, why)
        self.transport.close()


def guarded_h11(header_timeout_s: float = HEADER_TIMEOUT_S, max_waiting: int = 1000) -> type[H11Protocol]:
    """The protocol class for `uvicorn.Config(http=...)` with these bounds."""
    return type(
        "GuardedH11Protocol",
        (_GuardedH11Protocol,),
        {"header_timeout_s": float(header_timeout_s), "max_waiting": max(1, int(max_waiting))},
    )


class RequestGuard:
    """Outermost ASGI layer of the served app: head size, framing and requests in flight.

    - request line + headers over `max_head_bytes` -> 400 (docs/RELIABILITY.md promises it; h11
      enforces it only on heads that arrive in pieces);
    - `Content-Length` together with `Transfer-Encoding` -> 400 (RFC 9112 6.1: a server may
      reject it, and must close the connection after it anyway);
    - more than `max_in_flight` requests being handled at once -> 503 at once. Unlike uvicorn's
      `limit_concurrency` this does not count connections that have not sent a request.
    Every refusal carries `Connection: close`.
    """

    def __init__(self, app: ASGIApp, max_head_bytes: int, max_in_flight: int) -> None:
        self.app = app
        self.max_head_bytes = int(max_head_bytes)
        self.max_in_flight = max(1, int(max_in_flight))
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is not None:
            await _refuse(send, *refusal)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1

    def _refusal(self, scope: Scope) -> tuple[int, str] | None:
        headers: list[tuple[bytes, bytes]] = scope.get("headers") or []
        target = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"") + 1
        size = len(scope["method"]) + target + _HEAD_OVERHEAD + sum(len(k) + len(v) + 4 for k, v in headers)
        if size > self.max_head_bytes:
            return 400, (
                f"the request line and headers are {size} bytes; the limit is {self.max_head_bytes} "
                "(PHOTOSCORE_MAX_HEADER_KB)"
            )
        names = {k.lower() for k, _ in headers}
        if b"transfer-encoding" in names and b"content-length" in names:
            return 400, "send either Content-Length or Transfer-Encoding, not both (RFC 9112, 6.1)"
        if self.in_flight >= self.max_in_flight:
            return 503, f"the server is busy: {self.in_flight} requests in progress; retry shortly"
        return None


async def _refuse(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    if status == 503:
        headers.append((b"retry-after", b"1"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
