"""Inference worker: micro-batching, routing of results, isolation of failures, shutdown."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from app.core.metrics import Metrics
from app.services.inference import InferenceWorker, WorkerClosedError


class FakeMatcher:
    """Embeds the number n as [n, 0, ...]; records batch sizes and the threads it ran on."""

    def __init__(self, delay: float = 0.02) -> None:
        self.delay = delay
        self.batches: list[int] = []
        self.threads: set[str] = set()

    def embed_images(self, items: list[float]) -> tuple[np.ndarray, np.ndarray]:
        self.threads.add(threading.current_thread().name)
        if any(x < 0 for x in items):
            raise ValueError("negative input")
        time.sleep(self.delay)
        self.batches.append(len(items))
        emb = np.zeros((len(items), 4), np.float32)
        emb[:, 0] = items
        return emb, np.tile(np.float32([0.5, 0.5]), (len(items), 1))

    def warmup(self) -> None:
        self.embed_images([0.0])


def run(coro):
    """asyncio.run in a fresh thread: immune to a loop left running in the main thread by
    another test's library (Playwright's sync API keeps one there)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _many(worker: InferenceWorker, values: list[float]) -> list:
    return await asyncio.gather(*(worker.embed_image(v) for v in values), return_exceptions=True)


class TestMicroBatching:
    def test_concurrent_requests_share_batches_and_get_their_own_result(self) -> None:
        matcher = FakeMatcher()
        metrics = Metrics()

        async def main() -> list:
            worker = InferenceWorker(matcher, max_batch=8, max_wait_ms=20, metrics=metrics)
            await worker.start()
            try:
                return await _many(worker, [float(i) for i in range(20)])
            finally:
                await worker.close()

        results = run(main())
        for i, (emb, va) in enumerate(results):
            assert emb[0] == i and va.tolist() == [0.5, 0.5]
        assert sum(matcher.batches) == 20
        assert max(matcher.batches) == 8  # capped at max_batch
        assert len(matcher.batches) <= 4  # 20 requests in a handful of batches, not 20
        assert matcher.threads == {next(iter(matcher.threads))}  # one dedicated model thread
        assert next(iter(matcher.threads)).startswith("photoscore-model")
        count = metrics.registry.get_sample_value("photoscore_inference_batch_size_count")
        total = metrics.registry.get_sample_value("photoscore_inference_batch_size_sum")
        assert (count, total) == (len(matcher.batches), 20)

    def test_disabled_runs_one_per_request(self) -> None:
        matcher = FakeMatcher(delay=0.0)

        async def main() -> list:
            worker = InferenceWorker(matcher, max_batch=8, micro_batching=False)
            await worker.start()
            try:
                return await _many(worker, [1.0, 2.0, 3.0, 4.0])
            finally:
                await worker.close()

        results = run(main())
        assert [r[0][0] for r in results] == [1.0, 2.0, 3.0, 4.0]
        assert matcher.batches == [1, 1, 1, 1]

    def test_lone_request_waits_at_most_max_wait(self) -> None:
        matcher = FakeMatcher(delay=0.0)

        async def main() -> float:
            worker = InferenceWorker(matcher, max_batch=64, max_wait_ms=30)
            await worker.start()
            try:
                t0 = time.perf_counter()
                await worker.embed_image(1.0)
                return time.perf_counter() - t0
            finally:
                await worker.close()

        assert run(main()) < 0.5
        assert matcher.batches == [1]

    def test_a_failing_input_fails_only_its_own_request(self) -> None:
        matcher = FakeMatcher(delay=0.0)

        async def main() -> list:
            worker = InferenceWorker(matcher, max_batch=8, max_wait_ms=20)
            await worker.start()
            try:
                return await _many(worker, [1.0, -1.0, 2.0])
            finally:
                await worker.close()

        ok1, bad, ok2 = run(main())
        assert isinstance(bad, ValueError)
        assert ok1[0][0] == 1.0 and ok2[0][0] == 2.0

    def test_cancelled_request_does_not_break_the_batch(self) -> None:
        matcher = FakeMatcher(delay=0.05)

        async def main() -> list:
            worker = InferenceWorker(matcher, max_batch=8, max_wait_ms=10)
            await worker.start()
            try:
                doomed = asyncio.ensure_future(worker.embed_image(9.0))
                await asyncio.sleep(0)
                doomed.cancel()
                return await _many(worker, [1.0, 2.0])
            finally:
                await worker.close()

        results = run(main())
        assert [r[0][0] for r in results] == [1.0, 2.0]

    def test_close_refuses_new_work(self) -> None:
        matcher = FakeMatcher(delay=0.0)

        async def main() -> None:
            worker = InferenceWorker(matcher)
            await worker.start()
            await worker.warmup()
            await worker.close()
            with pytest.raises(WorkerClosedError):
                await worker.embed_image(1.0)
            with pytest.raises(WorkerClosedError):
                await worker.run(len, [1])

        run(main())

    def test_run_executes_on_the_model_thread(self) -> None:
        matcher = FakeMatcher(delay=0.0)

        async def main() -> tuple[str, str]:
            worker = InferenceWorker(matcher)
            await worker.start()
            try:
                await worker.embed_image(1.0)
                name = await worker.run(lambda: threading.current_thread().name)
                return name, next(iter(matcher.threads))
            finally:
                await worker.close()

        ran_on, model_thread = run(main())
        assert ran_on == model_thread


def test_real_model_batched_equals_single(tiny_checkpoint: Path) -> None:
    """Micro-batching must not change answers: a batch gives each image its solo embedding."""
    from model.image import open_image
    from model.inference import Matcher
    from model.transforms import image_tensor
    from tests.support.media import photo_bytes

    matcher = Matcher.load(tiny_checkpoint, device="cpu")
    tensors = [image_tensor(open_image(photo_bytes(kind)), matcher.image_size) for kind in ("warm", "cold", "green")]

    def embed(batch: list[np.ndarray]):
        return matcher.embed_image_tensor(np.stack(batch))

    async def main() -> tuple[list, list]:
        batched = InferenceWorker(matcher, batch_fn=embed, max_batch=8, max_wait_ms=50)
        single = InferenceWorker(matcher, batch_fn=embed, micro_batching=False)
        await batched.start()
        await single.start()
        try:
            a = await asyncio.gather(*(batched.embed_image(t) for t in tensors))
            b = [await single.embed_image(t) for t in tensors]
        finally:
            await batched.close()
            await single.close()
        return a, b

    batched, single = run(main())
    for (e1, v1), (e2, v2) in zip(batched, single, strict=True):
        np.testing.assert_allclose(e1, e2, atol=1e-5)
        np.testing.assert_allclose(v1, v2, atol=1e-5)
        assert abs(float(np.linalg.norm(e1)) - 1.0) < 1e-4


def test_request_calls_go_ahead_of_background_calls() -> None:
    """An upload's clip slices are background work: a photo that arrives while they are queued
    is embedded after the slice that is running, not after all of them (issue 24, reads during writes)."""
    from app.services.inference import Priority

    matcher = FakeMatcher(delay=0.0)
    order: list[str] = []

    def slice_of_song(i: int) -> None:
        time.sleep(0.05)
        order.append(f"song{i}")

    async def main() -> None:
        worker = InferenceWorker(matcher, micro_batching=False)
        await worker.start()
        try:
            songs = [
                asyncio.ensure_future(worker.run(slice_of_song, i, priority=Priority.BACKGROUND)) for i in range(6)
            ]
            await asyncio.sleep(0.02)  # the first slice is running, five are queued
            await worker.embed_image(1.0)
            order.append("photo")
            await asyncio.gather(*songs)
        finally:
            await worker.close()

    run(main())
    assert order.index("photo") <= 2, order  # after the running slice, not after all six
    assert [o for o in order if o != "photo"] == [f"song{i}" for i in range(6)]  # background keeps its order


def test_a_lone_request_does_not_wait_for_a_batch_to_fill() -> None:
    """With nobody else waiting, an image is embedded at once, not after ``max_wait``: here the
    wait is 30 s and the request must be answered long before (it waited the full 30 s before)."""
    matcher = FakeMatcher(delay=0.0)

    async def main() -> tuple:
        worker = InferenceWorker(matcher, max_batch=8, max_wait_ms=30_000)
        await worker.start()
        try:
            return await asyncio.wait_for(worker.embed_image(2.0), timeout=10)
        finally:
            await worker.close()

    emb, _ = run(main())
    assert emb[0] == 2.0 and matcher.batches == [1]
