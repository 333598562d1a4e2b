"""`POST /recommend` end to end against a real server: uvicorn in a subprocess on loopback.

For each catalogue and each ``PHOTOSCORE_MICRO_BATCHING`` setting a fresh server is started
(`python -m app.cli.serve`, the code behind `photoscore serve`) and driven by a closed loop of
C concurrent clients (httpx AsyncClient, one keep-alive connection each) for a fixed time per
cell, after a short warm-up whose requests are discarded. Figures per cell: latency
p50/p95/p99, requests/s, errors, the server's mean inference batch size (from /metrics) and
the CPU the server and the load generator used (they share the machine's cores).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.catalogue import Catalogue
from benchmarks.common import ROOT, Context, fmt, log, photo_jpegs, stats_ms
from benchmarks.records import Cell, Photos, RecommendRun, ServerMode

BOUNDARY = "photoscore-benchmark-7d1f"
TOOK_MS = re.compile(rb'"took_ms"\s*:\s*([0-9.eE+-]+)')
REQUEST_PHOTO = (1600, 1200)  # 1.9 MP JPEG q90: a photo as shared on the web / messaging apps
N_PHOTOS = 8
READY_TIMEOUT_S = 900.0


def multipart(jpeg: bytes) -> bytes:
    """The request body, built once (the load generator should cost as little CPU as possible)."""
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="photo.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    return head + jpeg + f"\r\n--{BOUNDARY}--\r\n".encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`photoscore serve` in a subprocess, pointed at one catalogue."""

    def __init__(
        self,
        ctx: Context,
        cat: Catalogue,
        micro_batching: bool,
        log_path: Path,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        env = {
            **os.environ,
            **cat.env(),
            "PHOTOSCORE_CHECKPOINT": str(ctx.checkpoint),
            "PHOTOSCORE_MICRO_BATCHING": "true" if micro_batching else "false",
            "PHOTOSCORE_DEVICE": "cpu",
            "PHOTOSCORE_LOG_LEVEL": "warning",
        }
        env.pop("PHOTOSCORE_API_KEYS", None)  # reads are public; no writes here
        env.update(extra_env or {})
        self._launch(ROOT, env, log_path)

    def _launch(self, tree: Path, env: dict[str, str], log_path: Path) -> None:
        """``python -m app.cli.serve`` from ``tree`` on a free local port, its output into ``log_path``."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli.serve", "--port", str(self.port), "--host", "127.0.0.1"],
            cwd=tree,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.ready_s: float | None = None

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.tail()}")
            try:
                r = httpx.get(self.url + "/ready", timeout=5)
                if r.status_code == 200:
                    self.ready_s = time.perf_counter() - self.started
                    return r.json()
                last = r.text[:200]
            except httpx.HTTPError as exc:
                last = str(exc)
            time.sleep(0.5)
        raise RuntimeError(f"server not ready after {timeout:.0f} s ({last}): {self.tail()}")

    def tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def rss_mib(self) -> float:
        import psutil

        return psutil.Process(self.proc.pid).memory_info().rss / 2**20

    def cpu_seconds(self) -> float:
        import psutil

        t = psutil.Process(self.proc.pid).cpu_times()
        return t.user + t.system

    def metrics(self) -> dict[str, float]:
        """Inference batch-size and inference-time sums/counts from the Prometheus text."""
        text = httpx.get(self.url + "/metrics", timeout=10).text
        out = {}
        for key in (
            "photoscore_inference_batch_size_sum",
            "photoscore_inference_batch_size_count",
            "photoscore_inference_batch_seconds_sum",
        ):
            m = re.search(rf"^{key}(?:{{[^}}]*}})? ([0-9.eE+-]+)$", text, re.M)
            out[key] = float(m.group(1)) if m else float("nan")
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


async def _drive(url: str, bodies: list[bytes], concurrency: int, warmup_s: float, seconds: float) -> dict[str, Any]:
    headers = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    latencies: list[float] = []
    took: list[float] = []  # the route's own took_ms (handler start -> response model built)
    errors: dict[str, int] = {}
    t_start = time.perf_counter()
    t_measure = t_start + warmup_s
    t_end = t_measure + seconds
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120.0, headers=headers) as client:

        async def one_client(i: int) -> None:
            j = i
            while True:
                t0 = time.perf_counter()
                if t0 >= t_end:
                    return
                handler = None
                try:
                    r = await client.post("/recommend?n=10", content=bodies[j % len(bodies)])
                    ok = r.status_code == 200
                    kind = f"HTTP {r.status_code}"
                    m = TOOK_MS.search(r.content) if ok else None
                    handler = float(m.group(1)) / 1000.0 if m else None
                except httpx.HTTPError as exc:
                    ok, kind = False, type(exc).__name__
                t1 = time.perf_counter()
                j += 1
                # Completions inside the window count (closed loop: arrivals = completions).
                if t_measure <= t1 <= t_end:
                    if ok:
                        latencies.append(t1 - t0)
                        if handler is not None:
                            took.append(handler)
                    else:
                        errors[kind] = errors.get(kind, 0) + 1

        await asyncio.gather(*(one_client(i) for i in range(concurrency)))
    return {"latencies": latencies, "took": took, "errors": errors, "window_s": seconds}


def run_cell(server: Server, bodies: list[bytes], concurrency: int, seconds: float) -> Cell:
    warmup = min(2.0, max(0.5, seconds / 5))
    m0 = server.metrics()
    cpu0 = server.cpu_seconds()
    me0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    res = asyncio.run(_drive(server.url, bodies, concurrency, warmup, seconds))
    wall = time.perf_counter() - t0
    me1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu1 = server.cpu_seconds()
    m1 = server.metrics()
    lat = stats_ms(res["latencies"])
    n_batches = m1["photoscore_inference_batch_size_count"] - m0["photoscore_inference_batch_size_count"]
    n_images = m1["photoscore_inference_batch_size_sum"] - m0["photoscore_inference_batch_size_sum"]
    client_cpu = (me1.ru_utime + me1.ru_stime) - (me0.ru_utime + me0.ru_stime)
    return Cell(
        concurrency=concurrency,
        latency_ms=lat,
        handler_ms=stats_ms(res["took"]),
        rps=len(res["latencies"]) / res["window_s"],
        errors=res["errors"],
        mean_batch=n_images / n_batches if n_batches > 0 else float("nan"),
        # The server's own image-branch time per image (its inference histogram / images embedded).
        model_ms_per_image=1000.0
        * (m1["photoscore_inference_batch_seconds_sum"] - m0["photoscore_inference_batch_seconds_sum"])
        / n_images
        if n_images > 0
        else float("nan"),
        server_cores=(cpu1 - cpu0) / wall,
        client_cores=client_cpu / wall,
        loadavg_1m=os.getloadavg()[0],
    )


def bench_catalogue(
    ctx: Context,
    cat: Catalogue,
    concurrencies: list[int],
    modes: tuple[bool, ...] = (True, False),
    seconds: float | None = None,
    extra_env: dict[str, str] | None = None,
    variant: str = "default",
) -> RecommendRun:
    """All cells for one catalogue: a server per micro-batching mode, each with its cells."""
    seconds = seconds or ctx.cell_seconds
    jpegs, source = photo_jpegs(*REQUEST_PHOTO, count=N_PHOTOS)
    bodies = [multipart(j) for j in jpegs]
    out = RecommendRun(
        catalogue=cat.name,
        n_clips=cat.n_clips,
        n_tracks=cat.n_tracks,
        kind=cat.kind,
        variant=variant,
        env=extra_env or {},
        modes={},
        photos=Photos(
            count=len(jpegs),
            size="x".join(map(str, REQUEST_PHOTO)),
            mean_kib=sum(map(len, jpegs)) / len(jpegs) / 1024,
            source=source,
        ),
    )
    for mb in modes:
        mode = "on" if mb else "off"
        log(f"/recommend: {cat.name}, micro-batching {mode}, {variant}: starting server")
        tag = "" if variant == "default" else "-" + re.sub(r"[^a-z0-9]+", "-", variant.lower())
        server = Server(ctx, cat, mb, ctx.workdir / f"server-{cat.directory.name}-{mode}{tag}.log", extra_env)
        try:
            ready = server.wait_ready()
            entry = ServerMode(
                ready_s=server.ready_s,
                rss_mib=server.rss_mib(),
                ready={k: ready.get(k) for k in ("tracks", "clips", "model_version")},
                cells=[],
            )
            if ready.get("clips") != cat.n_clips:
                ctx.note(f"{cat.name}: the server reports {ready.get('clips')} clips, the DB holds {cat.n_clips}")
            log(f"  ready in {server.ready_s:.1f} s, RSS {entry.rss_mib:.0f} MiB, {ready.get('clips')} clips")
            for c in concurrencies:
                cell = run_cell(server, bodies, c, seconds)
                lat = cell.latency_ms
                log(
                    f"  c={c:<3} p50 {fmt(lat.p50)} p95 {fmt(lat.p95)} p99 {fmt(lat.p99)} ms, "
                    f"{cell.rps:.1f} req/s, batch {fmt(cell.mean_batch, 2)} "
                    f"({fmt(cell.model_ms_per_image, 2)} ms/image), "
                    f"server {cell.server_cores:.2f} cores, client {cell.client_cores:.2f}, "
                    f"errors {cell.errors or 0}"
                )
                if cell.errors:
                    ctx.note(f"{cat.name}, micro-batching {mode}, c={c}: errors {cell.errors}")
                entry.cells.append(cell)
            entry.rss_after_mib = server.rss_mib()
        finally:
            server.stop()
        out.modes[mode] = entry
    return out


def print_table(results: list[RecommendRun]) -> None:
    print("\n/recommend end to end (ms, req/s)")
    print(
        f"{'catalogue':>22} {'variant':>16} {'mb':>3} {'c':>3} {'p50':>8} {'p95':>8} {'p99':>8} {'req/s':>7} "
        f"{'batch':>5}"
    )
    for r in results:
        for mode, entry in r.modes.items():
            for cell in entry.cells:
                lat = cell.latency_ms
                print(
                    f"{r.catalogue:>22} {r.variant:>16} {mode:>3} {cell.concurrency:>3} {fmt(lat.p50):>8} "
                    f"{fmt(lat.p95):>8} {fmt(lat.p99):>8} {cell.rps:>7.1f} {fmt(cell.mean_batch, 2):>5}"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("catalogue", type=Path, help="a folder holding photoscore.db and index/")
    parser.add_argument("--checkpoint")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    args = parser.parse_args()
    from benchmarks.catalogue import open_existing

    ctx = Context.for_checkpoint(args.checkpoint, args.catalogue.parent, cell_seconds=args.seconds)
    cat = open_existing(args.catalogue, args.catalogue.name, "given")
    print_table([bench_catalogue(ctx, cat, args.concurrency)])


if __name__ == "__main__":
    main()
