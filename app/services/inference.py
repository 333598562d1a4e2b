"""Inference worker: the one owner of the model at serving time.

All model calls run on a single dedicated thread, so the event loop never blocks on inference and
the model is never used from two threads at once. The thread takes the most urgent call first:
request-path calls (photo embeddings, the similarity predictor) go ahead of background ones
(an upload's clips, the query-bank backfill), which come in slices of a few clips, so a long song
being embedded delays a recommendation by one slice at most. Concurrent `/recommend` requests are
micro-batched: the first waiting image opens a batch, which closes when it holds
`max_batch` images or `max_wait_ms` has passed; while a batch runs, new requests queue up and
form the next batch (dynamic batching). Results come back to each request through its own
asyncio future. With `micro_batching=False` every image is embedded on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, TypeVar

import numpy as np

from app.core.metrics import Metrics

log = logging.getLogger(__name__)

T = TypeVar("T")
_THREAD_NAME = "photoscore-model"


class WorkerClosedError(RuntimeError):
    """The worker was shut down (service stopping)."""


class Priority(IntEnum):
    """Which model call the thread takes first (lower first; equal ones in arrival order)."""

    REQUEST = 0  # a person is waiting: photo embeddings, the similarity predictor while ranking
    BACKGROUND = 1  # an upload's clips, query-bank statistics, the start-up backfill


class ModelThread:
    """One thread that runs submitted calls one at a time, most urgent first."""

    def __init__(self, name: str) -> None:
        self._queue: queue.PriorityQueue[tuple[int, int, Callable[[], Any] | None, Future | None]] = (
            queue.PriorityQueue()
        )
        self._order = itertools.count()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], T], priority: Priority = Priority.REQUEST) -> Future[T]:
        if self._closed:
            raise WorkerClosedError("the service is shutting down")
        future: Future[T] = Future()
        self._queue.put((int(priority), next(self._order), fn, future))
        return future

    def _loop(self) -> None:
        while True:
            _, _, fn, future = self._queue.get()
            if fn is None or future is None:  # shutdown marker: after everything queued before it
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the caller, never lost on this thread
                future.set_exception(exc)

    def shutdown(self, cancel_futures: bool = True) -> None:
        """Stop taking calls; cancel the queued ones (or run them first) and join the thread."""
        self._closed = True
        if cancel_futures:
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item[3] is not None:
                    item[3].cancel()
        self._queue.put((len(Priority) + 1, next(self._order), None, None))
        self._thread.join()


@dataclass
class _Item:
    image: Any
    future: asyncio.Future = field(repr=False)


class InferenceWorker:
    """Owns a `Matcher`; embeds images in micro-batches and runs other model calls serially."""

    def __init__(
        self,
        matcher: Any,
        *,
        batch_fn: Callable[[list[Any]], tuple[np.ndarray, np.ndarray]] | None = None,
        max_batch: int = 16,
        max_wait_ms: float = 5.0,
        micro_batching: bool = True,
        metrics: Metrics | None = None,
    ) -> None:
        self.matcher = matcher
        # What one batch runs: by default the Matcher on decoded PIL images; the app passes a
        # function over pre-processed tensors so resizing happens off the model thread.
        self._batch_fn = batch_fn or matcher.embed_images
        self.max_batch = max(1, int(max_batch))
        self.max_wait = max(0.0, float(max_wait_ms)) / 1000.0
        self.micro_batching = micro_batching
        self.metrics = metrics
        self._thread = ModelThread(_THREAD_NAME)
        self._queue: asyncio.Queue[_Item] | None = None
        self._task: asyncio.Task | None = None
        self._closed = False
        self.batches = 0
        self.images = 0
        self._last_batch = 0  # images in the last batch: whether the next one waits to fill

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the batching loop on the running event loop."""
        if self.micro_batching and self._task is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.create_task(self._batch_loop(), name="photoscore-batcher")

    async def warmup(self) -> None:
        """First inference is slow (allocations, kernel selection); pay it before traffic."""
        warm = getattr(self.matcher, "warmup", None)
        if warm is not None:
            await self.run(warm)

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._queue is not None:
            while not self._queue.empty():
                item = self._queue.get_nowait()
                if not item.future.done():
                    item.future.set_exception(WorkerClosedError("the service is shutting down"))
        self._thread.shutdown(cancel_futures=True)

    # -- public API --------------------------------------------------------------------------
    async def run(self, fn: Callable[..., T], *args: Any, priority: Priority = Priority.REQUEST, **kwargs: Any) -> T:
        """Run any blocking model call on the model thread (serialised with the batches)."""
        if self._closed:
            raise WorkerClosedError("the service is shutting down")
        return await asyncio.wrap_future(self._thread.submit(lambda: fn(*args, **kwargs), priority))

    def call(self, fn: Callable[..., T], *args: Any, priority: Priority = Priority.REQUEST, **kwargs: Any) -> T:
        """Run a model call on the model thread from a worker thread, blocking it (never call
        this on the event loop: use ``run``)."""
        if self._closed:
            raise WorkerClosedError("the service is shutting down")
        if threading.current_thread().name.startswith(_THREAD_NAME):
            return fn(*args, **kwargs)  # already on the model thread
        return self._thread.submit(lambda: fn(*args, **kwargs), priority).result()

    async def embed_image(self, image: Any) -> tuple[np.ndarray, np.ndarray]:
        """(embedding[dim], va[2]) for one image (whatever `batch_fn` takes a list of)."""
        if self._closed:
            raise WorkerClosedError("the service is shutting down")
        if not self.micro_batching or self._queue is None:
            embs, vas = await self.run(self._embed_batch, [image])
            return embs[0], vas[0]
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Item(image, future))
        return await future

    # -- internals ---------------------------------------------------------------------------
    def _embed_batch(self, images: list[Any]) -> tuple[np.ndarray, np.ndarray]:
        start = time.perf_counter()
        embs, vas = self._batch_fn(images)
        if self.metrics is not None:
            self.metrics.batch_size.observe(len(images))
            self.metrics.inference_seconds.observe(time.perf_counter() - start)
        self.batches += 1
        self.images += len(images)
        self._last_batch = len(images)
        return np.asarray(embs, dtype=np.float32), np.asarray(vas, dtype=np.float32)

    async def _collect(self) -> list[_Item]:
        """The next batch: what is queued now, plus what arrives within ``max_wait`` when the
        last batch held more than one image. A lone request on a quiet service does not wait
        for company it will not get (at c = 1 that wait was pure latency); under load requests
        queue while a batch runs, and the wait lets the next batch fill."""
        assert self._queue is not None
        batch = [await self._queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.max_wait if self._last_batch > 1 else 0.0)
        while len(batch) < self.max_batch:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return [item for item in batch if not item.future.done()]  # drop cancelled requests

    async def _batch_loop(self) -> None:
        while True:
            batch = await self._collect()
            if not batch:
                continue
            try:
                embs, vas = await self.run(self._embed_batch, [item.image for item in batch])
            except asyncio.CancelledError:
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(WorkerClosedError("the service is shutting down"))
                raise
            except Exception as exc:  # isolate the failing request below
                if len(batch) == 1:
                    _settle(batch[0].future, exc=exc)
                    continue
                log.warning("batch of %d failed (%s); retrying one by one", len(batch), exc)
                for item in batch:
                    try:
                        e, v = await self.run(self._embed_batch, [item.image])
                    except Exception as single_exc:
                        _settle(item.future, exc=single_exc)
                    else:
                        _settle(item.future, value=(e[0], v[0]))
                continue
            for i, item in enumerate(batch):
                _settle(item.future, value=(embs[i], vas[i]))


def _settle(future: asyncio.Future, *, value: Any = None, exc: BaseException | None = None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(value)


class ModelThreadScorer:
    """The matcher's similarity predictor, each call run on the worker's model thread at
    ``priority`` (the ranking's calls are requests; an upload's statistics are background).

    The ranking runs in a worker thread (FAISS and table look-ups there); only these calls take
    the model thread, so they queue with other requests' embeddings instead of blocking them."""

    def __init__(self, worker: InferenceWorker, priority: Priority = Priority.REQUEST) -> None:
        self.worker = worker
        self.priority = priority

    @property
    def query_bank(self) -> np.ndarray | None:
        return self.worker.call(getattr, self.worker.matcher, "query_bank", None, priority=self.priority)

    def similarity(self, image_emb: np.ndarray, clip_embs: np.ndarray) -> np.ndarray:
        return self.worker.call(self.worker.matcher.similarity, image_emb, clip_embs, priority=self.priority)

    def similarity_matrix(self, images: np.ndarray, clips: np.ndarray) -> np.ndarray:
        return self.worker.call(self.worker.matcher.similarity_matrix, images, clips, priority=self.priority)
