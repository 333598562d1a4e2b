"""A bounded load driver for loopback servers, and the figures it reports (latency
percentiles, statuses, the server's resident memory)."""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


@dataclass
class Sample:
    op: str
    started: float  # seconds since the run began
    ms: float
    status: int | None  # None: no HTTP answer (connection error, timeout)
    error: str | None = None
    retry_after: str | None = None
    json_detail: bool = False  # the body was JSON with a string "detail"


@dataclass
class LoadResult:
    samples: list[Sample]
    wall_s: float
    rss_mb: dict[str, float] = field(default_factory=dict)

    def by_op(self) -> dict[str, list[Sample]]:
        out: dict[str, list[Sample]] = defaultdict(list)
        for s in self.samples:
            out[s.op].append(s)
        return out

    def statuses(self) -> dict[str, dict[str, int]]:
        return {op: dict(Counter(str(s.status) for s in ss)) for op, ss in sorted(self.by_op().items())}

    def figures(self) -> dict[str, Any]:
        ms = [s.ms for s in self.samples]
        per_op = {
            op: {"n": len(ss), "p50_ms": round(percentile([s.ms for s in ss], 50), 1),
                 "p99_ms": round(percentile([s.ms for s in ss], 99), 1)}
            for op, ss in sorted(self.by_op().items())
        }  # fmt: skip
        return {
            "requests": len(self.samples),
            "wall_s": round(self.wall_s, 1),
            "rps": round(len(self.samples) / self.wall_s, 1) if self.wall_s else 0.0,
            "p50_ms": round(percentile(ms, 50), 1),
            "p99_ms": round(percentile(ms, 99), 1),
            "per_op": per_op,
            "statuses": self.statuses(),
            **({"rss_mb": self.rss_mb} if self.rss_mb else {}),
        }


def drive(
    base_url: str,
    clients: list[Callable[[httpx.Client, random.Random], tuple[str, httpx.Response]]],
    seconds: float,
    *,
    timeout: float = 60.0,
    on_tick: Callable[[float], None] | None = None,
    stop: threading.Event | None = None,
) -> LoadResult:
    """Run each client function in its own thread, in a loop, for ``seconds``; record every call.

    Loopback only and bounded: every thread stops at the deadline, or earlier once ``stop`` is
    set (a call in flight finishes or times out after ``timeout``). ``on_tick(elapsed)`` runs
    about every 0.5 s in the caller.
    """
    stop = stop or threading.Event()
    assert base_url.startswith("http://127.0.0.1:"), "load is for loopback servers only"
    samples: list[Sample] = []
    lock = threading.Lock()
    t0 = time.perf_counter()
    deadline = t0 + seconds

    def worker(index: int, fn: Callable[[httpx.Client, random.Random], tuple[str, httpx.Response]]) -> None:
        rng = random.Random(index)
        with httpx.Client(base_url=base_url, timeout=timeout) as client:
            while time.perf_counter() < deadline and not stop.is_set():
                start = time.perf_counter()
                op, status, error, retry, detail = "?", None, None, None, False
                try:
                    op, response = fn(client, rng)
                    status, retry = response.status_code, response.headers.get("retry-after")
                    if status >= 400:
                        with contextlib.suppress(ValueError):
                            detail = isinstance(response.json().get("detail"), str)
                except httpx.HTTPError as exc:
                    op, error = getattr(exc, "op", op), f"{type(exc).__name__}: {exc}"
                    time.sleep(0.05)
                end = time.perf_counter()
                with lock:
                    samples.append(Sample(op, start - t0, (end - start) * 1000.0, status, error, retry, detail))

    threads = [threading.Thread(target=worker, args=(i, fn), daemon=True) for i, fn in enumerate(clients)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        if on_tick is not None:
            on_tick(time.perf_counter() - t0)
        for t in threads:
            t.join(timeout=0.5 / max(1, len(threads)))
    return LoadResult(samples, time.perf_counter() - t0)


def labelled(op: str, fn: Callable[[], httpx.Response]) -> tuple[str, httpx.Response]:
    """Run ``fn``; a transport error carries ``op`` so the sample is attributed."""
    try:
        return op, fn()
    except httpx.HTTPError as exc:
        exc.op = op  # type: ignore[attr-defined]
        raise


class RssSampler:
    """The server process's resident memory, sampled every ``every`` seconds in a thread."""

    def __init__(self, pid: int, every: float = 1.0) -> None:
        import psutil

        self.proc = psutil.Process(pid)
        self.every = every
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._t0 = time.perf_counter()

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                self.samples.append((time.perf_counter() - self._t0, self.proc.memory_info().rss / 2**20))
            self._stop.wait(self.every)

    def now_mb(self) -> float:
        return self.proc.memory_info().rss / 2**20

    def __enter__(self) -> RssSampler:
        self._t0 = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def summary(self) -> dict[str, float]:
        values = [mb for _, mb in self.samples]
        if not values:
            return {}
        return {
            "start": round(values[0], 1),
            "middle": round(values[len(values) // 2], 1),
            "end": round(values[-1], 1),
            "max": round(max(values), 1),
        }
