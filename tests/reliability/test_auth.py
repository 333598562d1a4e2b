"""Auth: every write route refuses a missing or wrong key and stores nothing; keys are compared
in constant time over every configured key; no key or secret ever reaches the logs.

Live cases run against a real `photoscore serve` process (debug logging) whose whole log is
searched afterwards; the code-level checks read `app/api/security.py` itself.
"""

from __future__ import annotations

import ast
import inspect
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from app.api import security
from app.api.main import create_app
from app.api.routes import health, playlist, recommend, soundtrack, tracks
from tests.support.audit import audit_catalogue, url_stored
from tests.support.media import photo_bytes
from tests.support.servers import LiveService
from tests.support.service import service_settings
from tests.support.songs import Song

WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
# Photos in, songs out; a playlist plan in, the same plan as a file out; a video (or its cue
# sheet) in, a soundtrack out: nothing is written.
READ_ONLY_POSTS = {"/recommend", "/playlist", "/playlist/export", "/soundtrack", "/soundtrack/preview"}


def write_routes() -> list[tuple[str, str]]:
    """(method, path) of every operation that changes state, from the published OpenAPI document."""
    spec = create_app(service_settings(Path("/nonexistent"), Path("/nonexistent"))).openapi()
    return sorted(
        (method.upper(), path)
        for path, ops in spec["paths"].items()
        for method in ops
        if method.upper() in WRITE_METHODS and path not in READ_ONLY_POSTS
    )


def test_every_write_route_depends_on_the_write_key() -> None:
    routes = {
        (m, r.path): r
        for module in (recommend, playlist, soundtrack, tracks, health)
        for r in module.router.routes
        if isinstance(r, APIRoute)
        for m in r.methods
    }
    writes = write_routes()
    assert writes == [("DELETE", "/tracks/{track_id}"), ("POST", "/tracks")]
    assert {k for k in routes if k[0] in WRITE_METHODS and k[1] not in READ_ONLY_POSTS} == set(writes)
    for key in writes:
        deps = [d.call for d in routes[key].dependant.dependencies]
        assert security.require_write_key in deps, f"{key} is not guarded by the write key"
    spec = create_app(service_settings(Path("/nonexistent"), Path("/nonexistent"))).openapi()
    for method, path in writes:  # and the published document says so
        assert spec["paths"][path][method.lower()].get("security"), (method, path)


# ----------------------------------------------------------------------------- constant time
def test_keys_are_compared_in_constant_time() -> None:
    """`hmac.compare_digest` on every configured key, no early exit, no `==` on secrets."""
    tree = ast.parse(inspect.getsource(security))
    calls = {
        f"{node.func.value.id}.{node.func.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name)
    }
    assert calls & {"hmac.compare_digest", "secrets.compare_digest"}, "keys are not compared with compare_digest"
    fn = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "key_matches")
    assert not [n for n in ast.walk(fn) if isinstance(n, ast.Return | ast.Break) and n is not fn.body[-1]], (
        "key_matches exits early: timing would tell which key matched"
    )
    for node in ast.walk(tree):  # no ordinary comparison of key material anywhere in the module
        if isinstance(node, ast.Compare) and any(isinstance(op, ast.Eq | ast.NotEq | ast.In) for op in node.ops):
            names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
            assert not names & {"key", "presented", "given", "configured", "api_keys"}, ast.unparse(node)
    check = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "_check")
    assert "key_matches" in ast.unparse(check)


def test_every_configured_key_is_compared_on_every_request(
    model_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, record: Callable[..., None]
) -> None:
    """Through the real dependency chain: the matching key first or last, the same work."""
    keys = ["k-first-" + "a" * 24, "k-middle-" + "b" * 24, "k-last-" + "c" * 24]
    calls: list[int] = []
    real = security.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append(1)
        return real(a, b)

    monkeypatch.setattr(security.hmac, "compare_digest", spy)
    app = create_app(service_settings(tmp_path, model_checkpoint, api_keys=keys))
    client = TestClient(app)  # no lifespan: the auth dependency runs before anything needs the model
    for presented in (keys[0], keys[2], "wrong-key", keys[0][:-1]):
        calls.clear()
        r = client.delete("/tracks/1", headers={"X-API-Key": presented})
        assert len(calls) == len(keys), (presented, len(calls))
        assert r.status_code == (503 if presented in keys else 401), r.text  # 503: past auth, service not started
    calls.clear()
    in_url = client.delete("/tracks/1", params={"api_key": keys[0], "key": keys[0], "token": keys[0]})
    assert in_url.status_code == 401 and calls == [], "a key was read from the URL (URLs end up in access logs)"

    # Timing of the comparison itself: a wrong key sharing 0 vs all-but-one characters.
    key = keys[1]
    far, near = "x" * len(key), key[:-1] + "x"

    def per_call_ns(presented: str) -> float:
        runs = []
        for _ in range(7):
            t0 = time.perf_counter_ns()
            for _ in range(2000):
                security.key_matches(presented, [key])
            runs.append((time.perf_counter_ns() - t0) / 2000)
        return min(runs)

    monkeypatch.setattr(security.hmac, "compare_digest", real)
    t_far, t_near = per_call_ns(far), per_call_ns(near)
    assert 0.5 < t_near / t_far < 2.0, (t_far, t_near)
    record("auth: compare_digest over every key", f"{len(keys)} comparisons per request for any key",
           wrong_key_no_prefix_ns=round(t_far), wrong_key_31_of_32_ns=round(t_near))  # fmt: skip


# --------------------------------------------------------------------------------- live server
def _refusals(good: str) -> dict[str, dict]:
    return {
        "no key": {},
        "wrong X-API-Key": {"headers": {"X-API-Key": "psk-wrong-" + "z" * 30}},
        "wrong Bearer": {"headers": {"Authorization": "Bearer psk-wrong-bearer"}},
        "empty X-API-Key": {"headers": {"X-API-Key": ""}},
        "Bearer without a token": {"headers": {"Authorization": "Bearer"}},
        "key with one character changed": {"headers": {"X-API-Key": good[:-1] + ("A" if good[-1] != "A" else "B")}},
        "key prefix": {"headers": {"X-API-Key": good[:-4]}},
        "key plus a suffix": {"headers": {"X-API-Key": good + "x"}},
        "key upper-cased": {"headers": {"X-API-Key": good.upper()}},
        "key as Basic password": {"auth": ("admin", good)},
        "'Bearer <key>' inside X-API-Key": {"headers": {"X-API-Key": f"Bearer {good}"}},
        "wrong Bearer beside a right X-API-Key": {"headers": {"Authorization": "Bearer nope", "X-API-Key": good}},
    }


def test_live_writes_without_a_valid_key_are_refused_and_store_nothing(
    live_service: LiveService, song_pool: list[Song], record: Callable[..., None]
) -> None:
    good = live_service.keys[0]
    song = song_pool[3]
    audio = {"audio": (song.path.name, song.path.read_bytes(), song.media_type)}
    with httpx.Client(base_url=live_service.url, timeout=60) as client:
        seeded = client.post("/tracks", files={"audio": (song_pool[4].path.name, song_pool[4].path.read_bytes(),
                                                         "audio/ogg")}, headers={"X-API-Key": good})  # fmt: skip
        assert seeded.status_code in (200, 201), seeded.text
        target = seeded.json()["id"]
        before = url_stored(live_service.database_url, live_service.audio_dir)
        counts: dict[str, int] = {}
        for name, kw in _refusals(good).items():
            for method, path in write_routes():
                url = path.replace("{track_id}", str(target))
                r = client.request(method, url, files=audio if method == "POST" else None, **kw)
                assert r.status_code == 401, (name, method, path, r.status_code, r.text)
                assert r.headers["www-authenticate"].startswith("Bearer"), (name, method)
                assert "key" in r.json()["detail"].lower()
                assert good not in r.text
                counts[f"{r.status_code}"] = counts.get(f"{r.status_code}", 0) + 1
        assert url_stored(live_service.database_url, live_service.audio_dir) == before
        assert client.get(f"/tracks/{target}").status_code == 200  # the DELETEs did nothing

        # The same requests with a valid key (either configured key, either header) do work.
        added = client.post("/tracks", files=audio, headers={"Authorization": f"Bearer {live_service.keys[1]}"})
        assert added.status_code == 201, added.text
        gone = client.delete(f"/tracks/{added.json()['id']}", headers={"X-API-Key": good})
        assert gone.status_code == 204
    variants, routes = len(_refusals(good)), len(write_routes())
    record(f"auth: writes without a valid key ({variants} variants x {routes} write routes)",
           f"{variants * routes}/{variants * routes} refused 401; nothing stored", statuses=counts)  # fmt: skip


def test_live_logs_and_public_endpoints_hold_no_secret(live_service: LiveService, record: Callable[..., None]) -> None:
    """Requests with right, wrong and malformed keys, errors included: the debug log, /metrics,
    /ready and the OpenAPI document never contain a key."""
    good, other = live_service.keys
    presented = [good, other, "psk-wrong-" + "z" * 30, "psk-wrong-bearer"]
    with httpx.Client(base_url=live_service.url, timeout=60) as client:
        for key in presented:
            client.post("/recommend", files={"image": ("p.jpg", photo_bytes(), "image/jpeg")},
                        headers={"X-API-Key": key})  # fmt: skip
            client.post("/recommend", files={"image": ("p.jpg", b"not an image", "image/jpeg")},
                        headers={"Authorization": f"Bearer {key}"})  # fmt: skip
            client.delete("/tracks/999999", headers={"X-API-Key": key})
            client.get("/tracks/abc", headers={"Authorization": f"Bearer {key}"})
        pages = {p: client.get(p).text for p in ("/metrics", "/ready", "/openapi.json", "/tracks")}
    time.sleep(0.5)  # let the server flush its access log
    log = live_service.log_text()
    assert '"DELETE /tracks/999999 HTTP/1.1" 401' in log and '"DELETE /tracks/999999 HTTP/1.1" 404' in log, (
        "the access log is not being written, so this check would prove nothing"
    )
    for key in presented:
        assert key not in log, "an API key appears in the server log"
        for page, text in pages.items():
            assert key not in text, f"an API key appears in {page}"
    lines = log.count("\n")
    record("auth: keys absent from logs and public pages", "0 occurrences", log_lines=lines,
           log_level="debug", pages=sorted(pages))  # fmt: skip


def test_live_catalogue_is_consistent_after_auth_cases(live_service: LiveService) -> None:
    audit = audit_catalogue(live_service.database_url, live_service.audio_dir)
    assert audit.problems == [] and audit.orphan_files == [] and audit.temp_files == []
    ready = httpx.get(f"{live_service.url}/ready", timeout=30).json()
    assert ready["clips"] == len(audit.clip_ids) and ready["tracks"] == len(audit.tracks)
