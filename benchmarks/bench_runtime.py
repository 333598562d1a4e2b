"""ONNX Runtime against the PyTorch path it replaced, measured side by side in one run (issue 23).

``python -m benchmarks.bench_runtime [--baseline-ref REF]`` writes its section of
docs/BENCHMARKS.md. The PyTorch path is the code of ``--baseline-ref`` (default: the last commit
that served with PyTorch), checked out into a git worktree under the workdir and run with this
checkout's virtual environment (which has PyTorch: the test extra). Both trees use the same
shipped checkpoint, the same songs, photos and catalogue size, on the same machine, one after
the other. Figures:

- model calls in process (this tree's ``model.inference.Matcher`` on ONNX Runtime against
  ``model.export.TorchMatcher``, the same checkpoint in eager PyTorch): the floor (draft JPEG
  decode + preprocessing + image branch, 1600x1200, batch 1) and the music branch (32 clips);
- ``photoscore index`` end to end on real songs (Debian's Wesnoth soundtrack), default workers;
- ``POST /recommend`` on a real server (``python -m app.cli.serve``) over a 10^4-clip synthetic
  catalogue: p50 at c = 1, throughput at c = 32, the cores the server used, cold start to /ready;
- ``POST /tracks`` peak RSS growth for a 30-second and a 10-minute song (this tree only).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.bench_recommend import REQUEST_PHOTO, Server, multipart, run_cell
from benchmarks.catalogue import Catalogue
from benchmarks.common import DEFAULT_DOC, DEFAULT_WORKDIR, ROOT, fmt, log, photo_jpegs, repeat, stats_ms, utc_stamp
from benchmarks.report import update_marked_section

BASELINE_REF = "2dea632"  # the last commit that served and indexed with PyTorch
BEGIN = "<!-- runtime-benchmark:begin (benchmarks/bench_runtime.py writes this section) -->"
END = "<!-- runtime-benchmark:end -->"
WESNOTH = Path("/usr/share/games/wesnoth/1.16/data/core/music")


class TreeServer(Server):
    """``photoscore serve`` from a given source tree (this checkout or the baseline worktree)."""

    def __init__(self, tree: Path, cat: Catalogue, log_path: Path) -> None:
        env = {**os.environ, **cat.env(), "PHOTOSCORE_DEVICE": "cpu", "PHOTOSCORE_LOG_LEVEL": "warning"}
        env.pop("PHOTOSCORE_API_KEYS", None)
        env["PHOTOSCORE_CHECKPOINT"] = str(tree / "model/default/photoscore-default.safetensors")
        env["PYTHONPATH"] = str(tree)
        self._launch(tree, env, log_path)


def baseline_tree(workdir: Path, ref: str) -> Path:
    """A worktree of ``ref`` (re-used when it is already there at that commit)."""
    tree = workdir / f"baseline-{ref}"
    if not (tree / ".git").exists():
        subprocess.run(["git", "worktree", "add", "--detach", "--force", str(tree), ref], cwd=ROOT, check=True)
    return tree


def _tree_python(tree: Path, code: str, *args: str, timeout: float = 3600) -> str:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    run = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=tree, env=env, capture_output=True, text=True, timeout=timeout
    )
    if run.returncode != 0:
        raise RuntimeError(f"{tree.name}: {run.stderr[-2000:]}")
    return run.stdout


def model_calls() -> dict[str, Any]:
    """Floor and music branch, ONNX Runtime and eager PyTorch, in this process."""
    from app.core.settings import DEFAULT_CHECKPOINT
    from app.services.photos import decode_photo
    from model.export import TorchMatcher
    from model.inference import Matcher

    jpeg = photo_jpegs(*REQUEST_PHOTO, count=1)[0][0]
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((32, 193, 87)).astype(np.float32)
    windows = rng.uniform(0, 3, (32, 187, 96)).astype(np.float32)
    out: dict[str, Any] = {}
    for name, matcher in (
        ("onnx", Matcher.load(DEFAULT_CHECKPOINT, "cpu")),
        ("torch", TorchMatcher.load(DEFAULT_CHECKPOINT)),
    ):
        size = matcher.image_size

        def floor(m: Any = matcher, s: int = size) -> None:
            m.embed_image_tensor(decode_photo(jpeg, 40_000_000, s)[None])

        out[f"floor_{name}"] = stats_ms(repeat(floor, min_reps=20, min_seconds=3.0)).p50
        matcher.batch_size = 32 if name == "torch" else matcher.batch_size
        music = stats_ms(repeat(lambda m=matcher: m.embed_clip_features(feats, windows), min_reps=3, min_seconds=5.0))
        out[f"music32_{name}"] = music.p50
    return out


def indexer(tree: Path, files: list[Path], workdir: Path) -> dict[str, Any]:
    """``photoscore index`` (the tree's own) on ``files`` into a fresh catalogue."""
    target = workdir / "index-run"
    subprocess.run(["rm", "-rf", str(target)], check=True)
    target.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(tree), "PHOTOSCORE_DATA_DIR": str(target), "PHOTOSCORE_DEVICE": "cpu"}
    t0 = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-c", "import sys; from app.cli import main; sys.exit(main())", "index", *map(str, files),
         "--checkpoint",
         str(tree / "model/default/photoscore-default.safetensors")],
        cwd=tree, env=env, capture_output=True, text=True, timeout=3600,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    if run.returncode != 0:
        raise RuntimeError(f"index in {tree.name} failed: {run.stderr[-2000:]}{run.stdout[-2000:]}")
    import soundfile as sf

    audio_s = sum(sf.info(str(f)).duration for f in files)
    return {"wall_s": wall, "audio_s": audio_s, "x_realtime": audio_s / wall}


def recommend(tree: Path, workdir: Path, n_clips: int, seconds: float) -> dict[str, Any]:
    """A synthetic catalogue written by the tree's own code, then c = 1 and c = 32 cells."""
    directory = workdir / f"cat-{tree.name}-{n_clips}"
    if not (directory / "photoscore.db").is_file():
        _tree_python(
            tree,
            "import sys; sys.argv = ['c', sys.argv[1], '--clips', sys.argv[2], '--checkpoint', sys.argv[3]];"
            "from benchmarks.catalogue import main; main()",
            str(directory),
            str(n_clips),
            str(tree / "model/default/photoscore-default.safetensors"),
        )
    cat = Catalogue(f"{n_clips:,} synthetic", directory, n_clips, 0, "synthetic")
    jpegs, _ = photo_jpegs(*REQUEST_PHOTO, count=8)
    bodies = [multipart(j) for j in jpegs]
    server = TreeServer(tree, cat, workdir / f"server-{tree.name}.log")
    try:
        server.wait_ready()
        c1 = run_cell(server, bodies, 1, seconds)
        c32 = run_cell(server, bodies, 32, seconds)
        rss = server.rss_mib()
    finally:
        server.stop()
    return {
        "ready_s": server.ready_s,
        "rss_mib": rss,
        "p50_c1_ms": c1.latency_ms.p50,
        "p99_c1_ms": c1.latency_ms.p99,
        "rps_c32": c32.rps,
        "p50_c32_ms": c32.latency_ms.p50,
        "server_cores_c32": c32.server_cores,
        "errors": {**c1.errors, **c32.errors},
    }


def recommend_large(workdir: Path, n_clips: int, seconds: float) -> dict[str, Any]:
    """``/recommend`` p50 at c = 1 over an IVF-PQ catalogue of ``n_clips`` (this tree only: the
    search path is the same code in both, the image branch is what changed)."""
    from app.core.files import file_sha256
    from app.core.settings import DEFAULT_CHECKPOINT
    from benchmarks.catalogue import write_synthetic

    directory = workdir / f"cat-ivfpq-{n_clips}"
    if (directory / "photoscore.db").is_file():
        cat = Catalogue(f"{n_clips:,} synthetic", directory, n_clips, 0, "synthetic")
    else:
        cat, *_ = write_synthetic(
            directory, n_clips, checkpoint_hash=file_sha256(DEFAULT_CHECKPOINT), compressed_threshold=n_clips
        )
    jpegs, _ = photo_jpegs(*REQUEST_PHOTO, count=8)
    bodies = [multipart(j) for j in jpegs]
    os.environ["PHOTOSCORE_COMPRESSED_INDEX_THRESHOLD"] = str(n_clips)
    try:
        server = TreeServer(ROOT, cat, workdir / "server-ivfpq.log")
        try:
            ready = server.wait_ready()
            c1 = run_cell(server, bodies, 1, seconds)
        finally:
            server.stop()
    finally:
        os.environ.pop("PHOTOSCORE_COMPRESSED_INDEX_THRESHOLD", None)
    return {"clips": ready.get("clips"), "p50_c1_ms": c1.latency_ms.p50, "p99_c1_ms": c1.latency_ms.p99}


def upload_memory() -> dict[str, float]:
    """Peak RSS growth of ``POST /tracks`` for a 30-s and a 10-min song, each in a fresh process."""
    out = {}
    for seconds in (30, 600):
        code = _UPLOAD.replace("SECONDS", str(seconds))
        out[f"upload_{seconds}s_mb"] = float(_tree_python(ROOT, code).strip().splitlines()[-1])
    return out


_UPLOAD = """
import io, tempfile, threading, time
from pathlib import Path
import numpy as np, psutil, soundfile as sf
from fastapi.testclient import TestClient
from app.api.main import create_app
from app.core.settings import DEFAULT_CHECKPOINT, Settings
from model.audio import load_audio
src = load_audio("/usr/share/games/wesnoth/1.16/data/core/music/battle.ogg")
y = np.tile(src, int(np.ceil(SECONDS * 22050 / len(src))))[: SECONDS * 22050]
buf = io.BytesIO(); sf.write(buf, y, 22050, format="FLAC"); data = buf.getvalue()
root = Path(tempfile.mkdtemp())
settings = Settings(data_dir=root, checkpoint=DEFAULT_CHECKPOINT, api_keys=["k"], device="cpu", max_upload_mb=200)
with TestClient(create_app(settings)) as c:
    proc = psutil.Process(); before = peak = proc.memory_info().rss; stop = threading.Event()
    def sample():
        global peak
        while not stop.is_set():
            peak = max(peak, proc.memory_info().rss); time.sleep(0.002)
    t = threading.Thread(target=sample); t.start()
    files = {"audio": ("s.flac", data, "audio/flac")}
    r = c.post("/tracks", files=files, data={"title": "t"}, headers={"X-API-Key": "k"})
    stop.set(); t.join()
    assert r.status_code == 201, r.text
    print((peak - before) / 2**20)
"""


def section(res: dict[str, Any]) -> list[str]:
    m, new, old = res["model"], res["onnx"], res["torch"]
    lines = [
        BEGIN,
        "## ONNX Runtime against the PyTorch path (issue 23)",
        "",
        f"One run of `python -m benchmarks.bench_runtime`, {res['when']}, on {res['machine']} (load average "
        f"{res['load_before']:.1f} before, {res['load_after']:.1f} after). The PyTorch path is the code of "
        f"commit `{res['baseline_ref']}` (the last that served with PyTorch) run from a worktree with the same "
        "environment, checkpoint, songs, photos and catalogue size.",
        "",
        "| figure | ONNX Runtime | PyTorch | ratio | target |",
        "|---|---|---|---|---|",
        f"| floor: draft decode + preprocess + image branch, 1600x1200 JPEG, p50 | {fmt(m['floor_onnx'])} ms | "
        f"{fmt(m['floor_torch'])} ms | {m['floor_torch'] / m['floor_onnx']:.1f} x | <= 12 ms |",
        f"| music branch, 32 clips, p50 | {fmt(m['music32_onnx'], 0)} ms | {fmt(m['music32_torch'], 0)} ms | "
        f"{m['music32_torch'] / m['music32_onnx']:.1f} x | |",
        f"| `photoscore index`, {res['n_songs']} songs ({res['indexer_onnx']['audio_s'] / 60:.0f} min), default "
        f"workers | {res['indexer_onnx']['x_realtime']:.0f} x real time | {res['indexer_torch']['x_realtime']:.0f} x "
        f"| {res['indexer_onnx']['x_realtime'] / res['indexer_torch']['x_realtime']:.1f} x | >= 75 x |",
        f"| `/recommend` p50, c = 1, 10^4 clips | {fmt(new['p50_c1_ms'])} ms | {fmt(old['p50_c1_ms'])} ms | "
        f"{old['p50_c1_ms'] / new['p50_c1_ms']:.1f} x | <= 1.3 x floor = {fmt(1.3 * m['floor_onnx'])} ms |",
        *(
            [
                f"| `/recommend` p50, c = 1, {res['large']['clips']:,} clips (IVF-PQ) | "
                f"{fmt(res['large']['p50_c1_ms'])} ms | | | <= 1.6 x floor = {fmt(1.6 * m['floor_onnx'])} ms |"
            ]
            if "large" in res
            else []
        ),
        f"| `/recommend` throughput, c = 32, 10^4 clips | {new['rps_c32']:.1f} req/s | {old['rps_c32']:.1f} req/s | "
        f"{new['rps_c32'] / old['rps_c32']:.1f} x | >= 2.5 x |",
        f"| server cores used at c = 32 | {new['server_cores_c32']:.2f} | {old['server_cores_c32']:.2f} | | both |",
        f"| cold start to `/ready`, model loaded | {new['ready_s']:.1f} s | {old['ready_s']:.1f} s | | <= 10 s |",
        f"| server RSS after the cells | {new['rss_mib']:.0f} MiB | {old['rss_mib']:.0f} MiB | | |",
        f"| `POST /tracks` peak RSS growth, 30-s song | {res['upload']['upload_30s_mb']:.0f} MB | | | |",
        f"| `POST /tracks` peak RSS growth, 10-min song | {res['upload']['upload_600s_mb']:.0f} MB | +4.5 GB "
        "(issue 23) | | <= 400 MB |",
        "",
        END,
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_runtime", description=__doc__.split("\n")[0])
    parser.add_argument("--baseline-ref", default=BASELINE_REF)
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR / "runtime")
    parser.add_argument("--songs", type=int, default=6, help="Wesnoth songs for the indexer run")
    parser.add_argument("--clips", type=int, default=10_000, help="synthetic catalogue size for /recommend")
    parser.add_argument("--seconds", type=float, default=15.0, help="seconds per /recommend cell")
    parser.add_argument("--large-clips", type=int, default=1_000_000, help="IVF-PQ catalogue size (0: skip)")
    parser.add_argument("--doc", type=Path, default=DEFAULT_DOC)
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    from benchmarks.common import machine_info

    tree = baseline_tree(args.workdir, args.baseline_ref)
    files = sorted(p for p in WESNOTH.glob("*.ogg") if p.stat().st_size > 1_000_000)[: args.songs]
    res: dict[str, Any] = {
        "when": utc_stamp(),
        "machine": f"{machine_info().cpu} ({os.cpu_count()} cores)",
        "baseline_ref": args.baseline_ref,
        "n_songs": len(files),
        "load_before": os.getloadavg()[0],
    }
    log("model calls (ONNX Runtime, PyTorch)")
    res["model"] = model_calls()
    for label, where in (("onnx", ROOT), ("torch", tree)):
        log(f"indexer: {label}")
        res[f"indexer_{label}"] = indexer(where, files, args.workdir)
        log(f"/recommend: {label}")
        res[label] = recommend(where, args.workdir, args.clips, args.seconds)
    if args.large_clips:
        log(f"/recommend over {args.large_clips:,} clips (IVF-PQ)")
        res["large"] = recommend_large(args.workdir, args.large_clips, args.seconds)
    log("POST /tracks memory")
    res["upload"] = upload_memory()
    res["load_after"] = os.getloadavg()[0]
    (args.workdir / "runtime.json").write_text(json.dumps(res, indent=2))
    lines = section(res)
    print("\n".join(lines))
    update_marked_section(args.doc, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
