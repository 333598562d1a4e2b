"""Fuzzing: schemathesis against the live OpenAPI schema of a real running server.

`schemathesis run` (the CLI, as an operator would run it) drives every operation, reads and
writes alike (the API key goes in a header), through its examples, coverage, fuzzing and
stateful phases. Checks: no 5xx (`not_a_server_error`) and every response matches its
documented schema (`response_schema_conformance`). Afterwards the server must still be up, its
log free of tracebacks and keys, and the catalogue consistent with the live index.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.support.audit import audit_catalogue
from tests.support.servers import LiveService
from tests.support.songs import Song

# 75 per operation: about 1,500 cases over all phases and 11 operations (issue 14 asks for at
# least 1,000 with no 5xx); 100 gave 1,962.
MAX_EXAMPLES = int(os.environ.get("PHOTOSCORE_FUZZ_EXAMPLES", "75"))
MIN_CASES = 1000 if MAX_EXAMPLES >= 75 else 5 * MAX_EXAMPLES
SEED = 20261122


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    live_service: LiveService, song_pool: list[Song], tmp_path: Path, record: Callable[..., None]
) -> None:
    key = live_service.keys[1]
    with httpx.Client(base_url=live_service.url, timeout=60) as client:
        for song in song_pool[5:7]:  # real tracks, so /tracks/{id} and its audio have something to find
            r = client.post("/tracks", files={"audio": (song.path.name, song.path.read_bytes(), "audio/ogg")},
                            headers={"X-API-Key": key})  # fmt: skip
            assert r.status_code in (200, 201), r.text
    cli = Path(sys.executable).with_name("schemathesis")
    argv = [
        str(cli), "run", f"{live_service.url}/openapi.json",
        "--checks", "not_a_server_error,response_schema_conformance",
        "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED),
        "--header", f"X-API-Key: {key}",
        "--request-timeout", "60", "--max-failures", "10",
        "--report", "junit", "--report-junit-path", str(tmp_path / "junit.xml"),
    ]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=900, env={
        **{k: v for k, v in os.environ.items() if not k.startswith("SCHEMATHESIS_")}, "NO_COLOR": "1"})  # fmt: skip
    took = time.perf_counter() - t0
    out = proc.stdout + proc.stderr
    server_log = live_service.server.logs()
    assert proc.returncode == 0, f"schemathesis found problems:\n{out[-6000:]}\n--- server log ---\n{server_log}"
    cases = re.search(r"(\d+) generated, (\d+) passed", out)
    assert cases, out[-3000:]
    generated, passed = int(cases.group(1)), int(cases.group(2))
    assert generated == passed and generated >= MIN_CASES, out[-3000:]

    assert live_service.server.proc.poll() is None, "the server died under fuzzing"
    log = live_service.log_text()
    assert "Traceback" not in log and "unhandled error" not in log, log[-4000:]
    assert all(k not in log for k in live_service.keys), "an API key appears in the server log"
    assert key not in out.replace(f"X-API-Key: {key}", "")  # nor echoed back in any response body it printed

    audit = audit_catalogue(live_service.database_url, live_service.audio_dir)
    assert audit.problems == [] and audit.temp_files == [], audit
    time.sleep(1.0)  # one sync period: the live index follows the fuzzer's own adds and deletes
    ready = httpx.get(f"{live_service.url}/ready", timeout=30).json()
    assert (ready["tracks"], ready["clips"]) == (len(audit.tracks), len(audit.clip_ids)), ready
    ops = re.search(r"Tested: (\d+)", out)
    record(
        f"fuzz: schemathesis run, {MAX_EXAMPLES} examples/operation, key in header",
        f"{generated} cases, {passed} passed: no 5xx, no schema violation",
        operations=int(ops.group(1)) if ops else None,
        seconds=round(took, 1),
        tracks_after=len(audit.tracks),
        orphan_files=len(audit.orphan_files),
    )
