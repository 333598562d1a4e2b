"""The deployment as an operator runs it: the CPU image built, the Compose stack started with the
real Docker Compose binary through the real Docker CLI's API, and exercised through its proxy.

The engine is Debian's podman serving the Docker Engine API (scripts/container_engine.sh starts
it; no Docker daemon exists here). THIRD-PARTY BASE IMAGES ARE STAND-INS: no registry is
reachable, so python:3.11.14-slim-bookworm, postgres:15.13-bookworm and
nginxinc/nginx-unprivileged:1.28.0-alpine are images built from Debian bookworm packages with the
same entry points, users, ports and paths (tests/containers/), tagged with those names. The
project's Dockerfile.cpu, entry points, healthchecks, nginx.conf and docker-compose.yml are used
unchanged; the only build-time difference is in this harness: build args and read-only mounts
that point pip at this machine's CA bundle and local wheel mirrors (`_build_options`).

The tests run in file order on one stack (module fixtures) and report measured figures in
`pytest -rA` output lines starting `containers:`.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support import REPO
from tests.support.compose import VENV_BIN
from tests.support.servers import free_port

ENGINE = REPO / "scripts" / "container_engine.sh"
WESNOTH_MUSIC = Path("/usr/share/games/wesnoth/1.16/data/core/music")
SONGS = ("sad.ogg", "transience.ogg", "defeat.ogg")  # 44 s, 48 s, 8.5 s: real Ogg Vorbis
RAY_SONGS = ("defeat2.ogg", "victory2.ogg")  # 14 s, 21 s: added by the index-ray profile
IMAGE = "docker.io/library/photoscore:cpu"  # what `docker compose build` would tag photoscore:cpu
BUILDER_CACHE = "localhost/photoscore-ci/builder-cache:latest"  # keeps the dependency layers cached
PROJECT = "photoscore-ci"  # never the operator's default project name
API_KEY = "ci-container-test-key"
SYNC_SECONDS = 2.0
STAND_INS = ("python:3.11.14-slim-bookworm", "postgres:15.13-bookworm", "nginxinc/nginx-unprivileged:1.28.0-alpine")
FIGURES: dict[str, str] = {}
# The first test also builds the image: a cold build (new dependencies) takes tens of minutes.
pytestmark = pytest.mark.timeout(3600)
FIGURES_FILE = REPO / ".cache" / "container-test" / "figures.json"


def _figure(name: str, value: str) -> None:
    """A measured figure: printed at the end of the run and kept in .cache/container-test."""
    FIGURES[name] = value
    FIGURES_FILE.parent.mkdir(parents=True, exist_ok=True)
    FIGURES_FILE.write_text(json.dumps(FIGURES, indent=1))


@pytest.fixture(scope="module", autouse=True)
def _report_figures(request: pytest.FixtureRequest) -> Iterator[None]:
    start = time.monotonic()
    yield
    _figure("container test total", f"{time.monotonic() - start:.0f} s")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("")
        for name, value in FIGURES.items():
            reporter.write_line(f"containers: {name}: {value}")


def _run(cmd: list[str], env: dict[str, str], timeout: float, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    if check and done.returncode != 0:
        raise AssertionError(
            f"{shlex.join(cmd)} exited {done.returncode}\n"
            f"--- stdout\n{done.stdout[-4000:]}\n--- stderr\n{done.stderr[-4000:]}"
        )
    return done


# ------------------------------------------------------------------------------- engine
@pytest.fixture(scope="module")
def engine() -> Iterator[dict[str, str]]:
    """podman's Docker API service (and the stand-in base images); stopped at the end."""
    if os.geteuid() != 0:
        pytest.fail("the container test installs and runs podman as root (CI runs as root)")
    start = time.monotonic()
    done = subprocess.run(["bash", str(ENGINE), "start"], capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        pytest.fail(f"container engine did not start:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    docker_host = done.stdout.strip().splitlines()[-1].removeprefix("DOCKER_HOST=")
    _figure("engine start incl. stand-in images", f"{time.monotonic() - start:.0f} s")
    home = REPO / ".cache" / "container-test"
    home.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(home),
        "DOCKER_CONFIG": str(home),
        "DOCKER_HOST": docker_host,
    }
    try:
        yield env
    finally:
        subprocess.run(["bash", str(ENGINE), "stop"], capture_output=True, timeout=120)


def _pip_mounts() -> tuple[list[str], str]:
    """Read-only mounts and a pip.conf that let pip inside the build use this machine's CA bundle
    and local package mirrors (as pip on the host does). Harness only: not in the Dockerfiles."""
    done = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=60)
    values: dict[str, str] = {}
    for line in done.stdout.splitlines():
        key, _, value = line.partition("=")
        option = key.rsplit(".", 1)[-1]
        if option in ("find-links", "extra-index-url", "index-url", "constraint"):
            values[option] = value.strip().strip("'\"")
    mounts: dict[str, str] = {}

    def local(path_or_url: str) -> str:
        path = path_or_url.removeprefix("file://")
        if path.startswith("/"):
            base = Path(path)
            root = base.parent if base.name == "simple" else base  # files sit beside simple/
            if root.exists():
                mounts[str(root)] = str(root)
        return path_or_url

    lines = ["[global]", "cert = /run/host-ca.crt", "default-timeout = 180"]
    for option, value in values.items():
        if option == "constraint":
            if Path(value).is_file():
                mounts[value] = "/run/host-pip-constraints.txt"
                lines.append("constraint = /run/host-pip-constraints.txt")
            continue
        lines.append(f"{option} = {' '.join(local(v) for v in value.split())}")
    ca = os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt"
    mounts[ca] = "/run/host-ca.crt"
    args = []
    for src, dst in mounts.items():
        args += ["-v", f"{src}:{dst}:ro"]
    return args, "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def image(engine: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> str:
    """docker/Dockerfile.cpu built once per run (podman's build cache persists between runs).
    PHOTOSCORE_CONTAINER_TEST_IMAGE=NAME uses an image built before instead (a developer's rerun)."""
    prebuilt = os.environ.get("PHOTOSCORE_CONTAINER_TEST_IMAGE")
    if prebuilt:
        _run(["docker", "image", "inspect", prebuilt], engine, timeout=60)
        return prebuilt
    mounts, pip_conf = _pip_mounts()
    conf = tmp_path_factory.mktemp("build") / "pip.conf"
    conf.write_text(pip_conf)
    build = [
        "podman", "build", "--network", "host", "--layers", "-f", "docker/Dockerfile.cpu",
        *mounts, "-v", f"{conf}:/etc/pip.conf:ro",
    ]  # fmt: skip
    start = time.monotonic()
    # The builder stage under a tag first: its layers (the dependencies, GBs) stay in the cache
    # when the prune below drops the images earlier runs left behind.
    _run([*build, "--target", "builder", "-t", BUILDER_CACHE, "."], engine, timeout=3600)
    _run([*build, "-t", IMAGE, "."], engine, timeout=3600)
    _figure("CPU image build", f"{time.monotonic() - start:.0f} s")
    _run(["podman", "image", "prune", "--force"], engine, timeout=600)
    inspect = json.loads(_run(["docker", "image", "inspect", IMAGE], engine, timeout=60).stdout)[0]
    _figure("CPU image size", f"{inspect['Size'] / 1e9:.2f} GB")
    for name in STAND_INS:
        size = json.loads(_run(["docker", "image", "inspect", name], engine, timeout=60).stdout)[0]["Size"]
        _figure(f"stand-in {name} size", f"{size / 1e6:.0f} MB")
    return IMAGE


# -------------------------------------------------------------------------------- stack
@dataclass
class Stack:
    env: dict[str, str]
    base: str
    music: Path
    track_ids: list[int] = field(default_factory=list)

    def compose(self, *args: str, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [
            "docker-compose", "-p", PROJECT, "--project-directory", str(REPO),
            "--env-file", self.env["PHOTOSCORE_TEST_ENV_FILE"], "-f", str(REPO / "docker-compose.yml"),
            *args,
        ]  # fmt: skip
        return _run(cmd, self.env, timeout=timeout, check=check)

    def docker(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run(["docker", *args], self.env, timeout=timeout, check=check)

    def replicas(self) -> list[str]:
        return self.compose("ps", "-q", "api", timeout=60).stdout.split()

    def health(self, container: str) -> str:
        done = self.docker("inspect", "-f", "{{.State.Health.Status}}", container, check=False)
        return done.stdout.strip() or done.stderr.strip()

    def in_replica(self, container: str, method: str, path: str) -> tuple[int, dict]:
        """A request to one replica directly (inside its container), bypassing the proxy."""
        code = (
            "import json, sys, urllib.request, urllib.error\n"
            f"r = urllib.request.Request('http://127.0.0.1:8000{path}', method='{method}')\n"
            "try:\n"
            "    resp = urllib.request.urlopen(r, timeout=30); print(resp.status); print(resp.read().decode())\n"
            "except urllib.error.HTTPError as e:\n"
            "    print(e.code); print(e.read().decode())\n"
        )
        done = self.docker("exec", container, "python", "-c", code, timeout=60)
        status, _, body = done.stdout.partition("\n")
        return int(status), (json.loads(body) if body.strip().startswith("{") else {})


def _request(
    url: str, method: str = "GET", data: bytes | None = None, headers: dict | None = None, timeout: float = 120
) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _multipart(fields: dict[str, tuple[str, bytes, str] | str]) -> tuple[bytes, str]:
    boundary = "photoscore-container-test"
    out = io.BytesIO()
    for name, value in fields.items():
        out.write(f"--{boundary}\r\n".encode())
        if isinstance(value, tuple):
            filename, data, ctype = value
            out.write(f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'.encode())
            out.write(f"Content-Type: {ctype}\r\n\r\n".encode() + data + b"\r\n")
        else:
            out.write(f'Content-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def _photo() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (96, 64), (230, 180, 60)).save(buf, format="PNG")
    return buf.getvalue()


def _wait(what: str, check: Callable[[], bool], timeout: float, every: float = 1.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if check():
                return time.monotonic() - start
        except (OSError, ValueError):
            pass
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _ready(base: str) -> bool:
    status, _ = _request(f"{base}/ready", timeout=10)
    return status == 200


@pytest.fixture(scope="module")
def stack(engine: dict[str, str], image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`docker compose up -d` of docker-compose.yml; `down -v` at the end whatever happened."""
    if not WESNOTH_MUSIC.is_dir():
        pytest.fail(f"{WESNOTH_MUSIC} missing: apt-get install wesnoth-1.16-music (scripts/install.sh does)")
    tmp = tmp_path_factory.mktemp("stack")
    music = tmp / "music"
    music.mkdir()
    for name in SONGS:
        (music / name).write_bytes((WESNOTH_MUSIC / name).read_bytes())
    env_file = tmp / "empty.env"  # never a developer's .env
    env_file.write_text("")
    port = free_port()
    env = {
        **engine,
        "PHOTOSCORE_TEST_ENV_FILE": str(env_file),
        "POSTGRES_PASSWORD": "ci-only-password",
        "PHOTOSCORE_API_KEYS": API_KEY,
        "PHOTOSCORE_HTTP_PORT": str(port),
        "PHOTOSCORE_MUSIC_DIR": str(music),
        "PHOTOSCORE_INDEX_SYNC_SECONDS": str(SYNC_SECONDS),
        "PHOTOSCORE_IMAGE": image,
    }
    s = Stack(env=env, base=f"http://127.0.0.1:{port}", music=music)
    s.compose("down", "-v", "--remove-orphans", timeout=300, check=False)  # a previous run's leftovers
    try:
        yield s
    finally:
        s.compose("down", "-v", "--remove-orphans", timeout=300, check=False)


class Traffic:
    """Requests through the proxy from two threads until stopped: a catalogue read and a
    recommendation, each result recorded with its time. Bounded: stops by itself after
    `limit_s`."""

    def __init__(self, base: str, limit_s: float = 1800) -> None:
        self.base = base
        self.results: list[tuple[float, str, int | str]] = []
        self._stop = threading.Event()
        self._limit = time.monotonic() + limit_s
        body, ctype = _multipart({"image": ("photo.png", _photo(), "image/png")})
        self._recommend = (body, {"Content-Type": ctype})
        self._threads = [threading.Thread(target=self._loop, args=(i,), daemon=True) for i in range(2)]

    def __enter__(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(180)

    def _once(self, i: int) -> tuple[str, int]:
        if i == 0:
            return "GET /tracks", _request(f"{self.base}/tracks?limit=5", timeout=60)[0]
        body, headers = self._recommend
        return "POST /recommend", _request(f"{self.base}/recommend?n=3", "POST", body, headers, timeout=60)[0]

    def _loop(self, i: int) -> None:
        while not self._stop.is_set() and time.monotonic() < self._limit:
            kind = "GET /tracks" if i == 0 else "POST /recommend"
            try:
                kind, status = self._once(i)
            except OSError as exc:
                status = type(exc).__name__
            self.results.append((time.monotonic(), kind, status))
            time.sleep(0.2)

    def failures(self, since: float = 0.0, until: float = float("inf")) -> list[tuple[float, str, int | str]]:
        return [r for r in self.results if since <= r[0] <= until and r[2] != 200]


# --------------------------------------------------------------------------------- tests
def test_stack_starts_cold(stack: Stack) -> None:
    """`up -d` waits for postgres healthy, migrate exited 0 and api healthy, then the proxy."""
    start = time.monotonic()
    stack.compose("up", "-d", "--no-build", timeout=900)
    _wait("/ready through the proxy", lambda: _ready(stack.base), timeout=600)
    _figure("cold start: compose up to /ready 200 via proxy", f"{time.monotonic() - start:.0f} s")
    migrate = stack.compose("ps", "-a", "--format", "json", "migrate", timeout=60).stdout
    rows = [json.loads(line) for line in migrate.splitlines() if line.strip()]
    assert rows and rows[0]["State"] == "exited" and rows[0]["ExitCode"] == 0, migrate
    (api,) = stack.replicas()
    assert stack.health(api) == "healthy"
    assert "prestart: database reachable and migrated to head" in stack.compose("logs", "migrate").stdout


def test_index_profile_indexes_real_songs(stack: Stack) -> None:
    # --pull never: the image is the one built above (pull_policy: build would rebuild it here
    # without the harness's pip mounts). --no-deps: postgres and migrate are up from the test
    # above; with --pull never, `run` would otherwise recreate them (a changed service config).
    done = stack.compose(
        "--profile", "index", "run", "--rm", "--no-deps", "--pull", "never", "indexer", timeout=1200
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert "faiss.loader" not in output and "alembic.runtime" not in output, output[-3000:]
    status, body = _request(f"{stack.base}/tracks?limit=50")
    assert status == 200
    listing = json.loads(body)

    def all_listed() -> bool:
        return json.loads(_request(f"{stack.base}/ready")[1])["tracks"] == len(SONGS)

    _wait("the indexed songs in the replica's live index", all_listed, timeout=60)
    assert listing["total"] == len(SONGS), listing
    stack.track_ids = [t["id"] for t in listing["items"]]
    for track in listing["items"]:
        assert track["clip_count"] > 0
        assert _request(f"{stack.base}/tracks/{track['id']}/audio")[0] == 200  # --copy-audio: in the volume


def test_ready_and_recommend_through_proxy(stack: Stack) -> None:
    status, body = _request(f"{stack.base}/ready")
    assert status == 200 and json.loads(body)["status"] == "ready"
    payload, ctype = _multipart({"image": ("photo.png", _photo(), "image/png")})
    status, body = _request(f"{stack.base}/recommend?n=3", "POST", payload, {"Content-Type": ctype})
    assert status == 200, body
    results = json.loads(body)["results"]
    assert len(results) == 3 and {r["track"]["id"] for r in results} <= set(stack.track_ids)


def test_index_ray_profile_adds_songs_on_a_ray_cluster(stack: Stack) -> None:
    """`--profile index-ray`: a Ray head and a worker from the same image, then the one-shot
    driver indexes the music folder on that cluster into the Compose PostgreSQL. The songs the
    `index` profile stored are skipped, the new ones are added once, and the replica serves them."""
    for name in RAY_SONGS:
        (stack.music / name).write_bytes((WESNOTH_MUSIC / name).read_bytes())
    ray = ("--profile", "index-ray")
    start = time.monotonic()
    try:
        stack.compose(*ray, "up", "-d", "--no-build", "--no-recreate", "ray-head", "ray-worker", timeout=900)
        (head,) = stack.compose(*ray, "ps", "-q", "ray-head", timeout=60).stdout.split()

        def two_nodes() -> bool:
            status = stack.docker("exec", head, "ray", "status", "--address=127.0.0.1:6379", check=False)
            return status.returncode == 0 and status.stdout.count("node_") >= 2

        _wait("a Ray head and one worker", two_nodes, timeout=600, every=3)
        _figure("index-ray: Ray head + worker up", f"{time.monotonic() - start:.0f} s")
        start = time.monotonic()
        done = stack.compose(*ray, "run", "--rm", "--no-deps", "--pull", "never", "indexer-ray", timeout=1800)
        _figure("index-ray: driver run (2 new songs, 3 skipped)", f"{time.monotonic() - start:.0f} s")
    finally:
        stack.compose(*ray, "rm", "--stop", "--force", "ray-head", "ray-worker", timeout=300, check=False)
    output = done.stdout + done.stderr
    assert f"tracks added    {len(RAY_SONGS)}" in output, output[-3000:]
    assert f"{len(SONGS)} already indexed" in output, output[-3000:]
    listing = json.loads(_request(f"{stack.base}/tracks?limit=50")[1])
    assert listing["total"] == len(SONGS) + len(RAY_SONGS), listing

    def all_listed() -> bool:
        return json.loads(_request(f"{stack.base}/ready")[1])["tracks"] == listing["total"]

    _wait("the Ray-indexed songs in the replica's live index", all_listed, timeout=60)
    new = [t for t in listing["items"] if t["id"] not in stack.track_ids]
    assert len(new) == len(RAY_SONGS)
    for track in new:
        assert track["clip_count"] > 0
        assert _request(f"{stack.base}/tracks/{track['id']}/audio")[0] == 200  # written by a Ray actor
    stack.track_ids = [t["id"] for t in listing["items"]]


def test_write_on_one_replica_reaches_the_other(stack: Stack) -> None:
    """POST /tracks through the proxy; the other replica answers with it within the sync
    interval; DELETE through the proxy; gone from both.

    Scaling passes --no-recreate: on podman's API, Compose recreated every running container
    with mounts (postgres, api, proxy) on a second `up` (a podman-API interaction; not checked on Docker).
    """
    stack.compose("up", "-d", "--no-build", "--no-recreate", "--scale", "api=2", timeout=900)
    replicas = stack.replicas()
    assert len(replicas) == 2
    _wait("both replicas healthy", lambda: all(stack.health(c) == "healthy" for c in replicas), timeout=600, every=3)
    song = (WESNOTH_MUSIC / "victory.ogg").read_bytes()
    payload, ctype = _multipart({"audio": ("victory.ogg", song, "audio/ogg"), "license": "GPL-2+, Wesnoth"})
    headers = {"Content-Type": ctype, "Authorization": f"Bearer {API_KEY}"}
    status, body = _request(f"{stack.base}/tracks", "POST", payload, headers, timeout=300)
    assert status == 201, body
    track_id = json.loads(body)["id"]
    seen = {}
    for container in replicas:
        waited = _wait(
            f"track {track_id} on replica {container[:12]}",
            lambda c=container: stack.in_replica(c, "GET", f"/tracks/{track_id}")[0] == 200,
            timeout=SYNC_SECONDS * 5 + 10,
            every=0.5,
        )
        seen[container[:12]] = round(waited, 1)
    _figure("upload visible on each replica after (s)", str(seen))
    status, _ = _request(f"{stack.base}/tracks/{track_id}", "DELETE", headers={"Authorization": f"Bearer {API_KEY}"})
    assert status == 204
    for container in replicas:
        _wait(
            f"track {track_id} gone from replica {container[:12]}",
            lambda c=container: stack.in_replica(c, "GET", f"/tracks/{track_id}")[0] == 404,
            timeout=SYNC_SECONDS * 5 + 10,
            every=0.5,
        )


def test_scale_up_kill_and_scale_down_under_traffic(stack: Stack) -> None:
    """3 replicas under traffic, one killed with SIGKILL, back to 1: the proxy routes around."""
    with Traffic(stack.base) as traffic:
        stack.compose("up", "-d", "--no-build", "--no-recreate", "--scale", "api=3", timeout=900)
        replicas = stack.replicas()
        assert len(replicas) == 3
        _wait("3 replicas healthy", lambda: all(stack.health(c) == "healthy" for c in replicas), timeout=600, every=3)
        scaled_up = time.monotonic()
        time.sleep(10)
        victim = replicas[-1]
        # kill -9 of the replica's process from the host, as a crash or the OOM killer would
        # (`docker kill` counts as a deliberate stop, and the restart policy ignores it).
        pid = int(stack.docker("inspect", "-f", "{{.State.Pid}}", victim).stdout.strip())
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        # The healthcheck window: 3 failed checks 15 s apart mark a replica unhealthy.
        window = 3 * 15 + 5
        time.sleep(window)
        after_window = time.monotonic()
        # restart: unless-stopped brings it back; scale down only once it serves again, so the
        # replica Compose keeps is one that answers.
        back = _wait("the killed replica restarted and healthy", lambda: stack.health(victim) == "healthy", 900, 3)
        restarts = stack.docker("inspect", "-f", "{{.RestartCount}}", victim).stdout.strip()
        _figure("killed replica healthy again after (s)", f"{window + back:.0f} (restarts: {restarts})")
        assert int(restarts) >= 1
        stack.compose("up", "-d", "--no-build", "--no-recreate", "--scale", "api=1", timeout=900)
        assert len(stack.replicas()) == 1
        time.sleep(15)
        end = time.monotonic()
    served = len(traffic.results)
    during_kill = traffic.failures(killed_at, after_window)
    _figure(
        "traffic",
        f"{served} requests; failed: scale-up {len(traffic.failures(0, scaled_up))}, "
        f"kill -9 window {len(during_kill)} {during_kill[:5]}, "
        f"after window + scale-down {len(traffic.failures(after_window, end))}",
    )
    assert served > 20
    assert traffic.failures(0, killed_at) == [], "failed requests while scaling up"
    assert len(during_kill) <= 2, f"more failures than requests in flight at the kill: {during_kill}"
    assert traffic.failures(after_window, end) == [], "failed requests after the kill window / scaling down"


def test_down_and_up_keeps_every_track(stack: Stack) -> None:
    before = json.loads(_request(f"{stack.base}/tracks?limit=50")[1])
    stack.compose("down", timeout=300)
    start = time.monotonic()
    stack.compose("up", "-d", "--no-build", timeout=900)
    _wait("/ready after down + up", lambda: _ready(stack.base), timeout=600)
    _figure("warm restart: compose up to /ready 200", f"{time.monotonic() - start:.0f} s")
    after = json.loads(_request(f"{stack.base}/tracks?limit=50")[1])
    assert after["total"] == before["total"] == len(SONGS) + len(RAY_SONGS)
    assert {t["id"] for t in after["items"]} == {t["id"] for t in before["items"]}
    for track in after["items"]:
        assert _request(f"{stack.base}/tracks/{track['id']}/audio")[0] == 200


def test_down_v_removes_everything(stack: Stack) -> None:
    stack.compose("down", "-v", timeout=300)
    containers = stack.docker("ps", "-a", "--filter", f"label=com.docker.compose.project={PROJECT}", "-q").stdout
    volumes = stack.docker("volume", "ls", "-q").stdout.split()
    assert containers.strip() == ""
    assert not [v for v in volumes if re.match(rf"{PROJECT}_", v)], volumes
