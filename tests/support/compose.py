"""Tools of this environment and the Compose files, validated by the real `docker-compose`
without an engine (`docker-compose config` parses, interpolates, merges and validates)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support import REPO

VENV_BIN = Path(sys.prefix) / "bin"
COMPOSE = REPO / "docker-compose.yml"
COMPOSE_GPU = REPO / "docker-compose.gpu.yml"


def tool(name: str) -> str | None:
    """An executable from this virtual environment, else from PATH; None when neither has it."""
    found = VENV_BIN / name
    return str(found) if found.is_file() else shutil.which(name)


def compose(
    binary: str, files: list[Path], *args: str, password: str | None = "test-password", profiles: tuple = ()
) -> subprocess.CompletedProcess[str]:
    """`docker-compose ARGS` on `files` with an empty env file and a private HOME."""
    home = REPO / ".cache" / "compose-home"
    home.mkdir(parents=True, exist_ok=True)
    env_file = home / "empty.env"  # never read a developer's .env: the result must not depend on it
    env_file.write_text("")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "DOCKER_CONFIG": str(home)}
    if password is not None:
        env["POSTGRES_PASSWORD"] = password
    cmd = [binary, "--project-directory", str(REPO), "--env-file", str(env_file)]
    for f in files:
        cmd += ["-f", str(f)]
    for p in profiles:
        cmd += ["--profile", p]
    return subprocess.run([*cmd, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


def compose_config(binary: str, files: list[Path], profiles: tuple = ("index",)) -> dict:
    """The merged, interpolated configuration as JSON."""
    done = compose(binary, files, "config", "--format", "json", profiles=profiles)
    assert done.returncode == 0, f"docker-compose config failed:\n{done.stderr}"
    return json.loads(done.stdout)
