"""Admission control for the expensive part of uploads, and a guard against slow request bodies.

`POST /tracks` decodes, featurises and embeds a whole song. Letting every upload do that at once
starved the database pool, the thread pool and the CPU together (issue 14, F1): 16 parallel uploads
all failed with 503 and reads waited 30 s. `UploadGate` lets `upload_concurrency` uploads work at a
time, queues up to `upload_queue_size` more (each waits at most `upload_queue_wait_seconds`) and
refuses the rest at once with 429 and a `Retry-After` of about one recent upload's time. Uploads
of the same bytes already in flight in this process wait for that one instead of taking a slot
(single flight), so N identical uploads cost one decode and yield one track.

`BodyTimeoutMiddleware` ends requests whose body stalls: a client that declares 40 MB and sends
150 bytes would otherwise hold a connection (and a spooled file) for ever (F7).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import statistics
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from fastapi import HTTPException, status
from starlette.types import ASGIApp, Message, Receive, Scope, Send

T = TypeVar("T")

_DEFAULT_UPLOAD_S = 5.0  # Retry-After estimate before any upload has finished
_MAX_RETRY_AFTER_S = 120
_RECENT = 20  # uploads whose slot times give the typical one


UPLOAD_NICE = 10  # the scheduler's niceness of the threads that decode and featurise uploads


def _lower_priority() -> None:
    """Run this thread at a lower CPU priority (Linux: niceness is per thread)."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or not allowed: keep running
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), UPLOAD_NICE)


class UploadGate:
    """At most `concurrency` uploads do expensive work at once; `queue_size` more may wait.

    Per process and per event loop (create it in the app's lifespan). Counters are only touched
    from the event loop, so no lock is needed. An upload's CPU work (decoding, clip features)
    runs on the gate's own threads at lower CPU priority (:meth:`run`), so on a small machine
    reads keep their share of the cores while songs are ingested.
    """

    def __init__(self, concurrency: int, queue_size: int, max_wait_s: float) -> None:
        self.concurrency = max(1, int(concurrency))
        self._executor = ThreadPoolExecutor(
            self.concurrency, thread_name_prefix="photoscore-upload", initializer=_lower_priority
        )
        self.queue_size = max(0, int(queue_size))
        self.max_wait_s = max(0.0, float(max_wait_s))
        self._slots = asyncio.Semaphore(self.concurrency)
        self._admitted = 0  # working + waiting
        self._inflight: dict[str, asyncio.Task] = {}
        self._recent_s: deque[float] = deque(maxlen=_RECENT)  # how long recent uploads held a slot
        self.refused = 0

    @property
    def admitted(self) -> int:
        """Uploads working or waiting now."""
        return self._admitted

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run an upload's blocking CPU work on the gate's low-priority threads."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def retry_after(self) -> int:
        """Seconds until a refused upload is likely to be admitted: until the next upload now
        working finishes and frees a place, i.e. the typical (median) slot time of recent
        uploads over the slots, rounded up, within 1-120 s.

        It used to be the time to drain the whole queue at a moving average that started at
        5 s, so with one slot and 16 queued it reached the 120 s cap even for 3-second songs
        that take a second each (issue 24). A client admitted on retry waits in the queue."""
        typical = statistics.median(self._recent_s) if self._recent_s else _DEFAULT_UPLOAD_S
        return int(min(_MAX_RETRY_AFTER_S, max(1, math.ceil(typical / self.concurrency))))

    def _busy(self, why: str) -> HTTPException:
        self.refused += 1
        retry = self.retry_after()
        return HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"too many uploads in progress ({why}); retry in {retry} s "
            "(PHOTOSCORE_UPLOAD_CONCURRENCY, PHOTOSCORE_UPLOAD_QUEUE_SIZE)",
            headers={"Retry-After": str(retry)},
        )

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one work slot; 429 at once when the queue is full, or after waiting too long."""
        if self._admitted >= self.concurrency + self.queue_size:
            raise self._busy(f"{self.concurrency} working, {self.queue_size} queued")
        self._admitted += 1
        try:
            try:
                await asyncio.wait_for(self._slots.acquire(), self.max_wait_s)
            except TimeoutError:
                raise self._busy(f"waited {self.max_wait_s:g} s for a slot") from None
            started = time.perf_counter()
            try:
                yield
            finally:
                self._slots.release()
                self._recent_s.append(time.perf_counter() - started)
        finally:
            self._admitted -= 1

    async def single_flight(self, key: str, work: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """Run `work()` once per `key` at a time; callers arriving meanwhile share its outcome.

        Returns `(result, True)` to the caller that ran it and `(result, False)` to those that
        joined. The work runs as its own task, so a caller that goes away does not cancel it for
        the others.
        """
        task = self._inflight.get(key)
        if task is not None:
            return await asyncio.shield(task), False
        task = asyncio.ensure_future(work())
        self._inflight[key] = task
        task.add_done_callback(lambda done: self._forget(key, done))
        return await asyncio.shield(task), True

    def _forget(self, key: str, task: asyncio.Task) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved: no "exception never retrieved" noise when all callers left


class BodyTimeoutMiddleware:
    """408 (and the connection closed) when a request body stalls for `timeout_s` between reads.

    Like nginx's `client_body_timeout`: the limit is on each wait for the next piece, so a slow but
    steady upload is fine and a client that stops sending is not held. Raised from `receive`, so
    it reaches the route's exception handling as an HTTPException and no route code sees a
    half-read body.
    """

    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s
        self.message = (
            f"the request body stalled: nothing arrived for {timeout_s:g} s (PHOTOSCORE_BODY_TIMEOUT_SECONDS)"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.timeout_s <= 0:
            await self.app(scope, receive, send)
            return
        body_done = False

        async def timed_receive() -> Message:
            nonlocal body_done
            if body_done:  # afterwards receive() only waits for a disconnect: no limit on that
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.timeout_s)
            except TimeoutError:
                raise HTTPException(
                    status.HTTP_408_REQUEST_TIMEOUT, self.message, headers={"Connection": "close"}
                ) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        await self.app(scope, timed_receive, send)
