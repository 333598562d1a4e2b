"""The service in process: its settings for a test, songs added through the API, and responses
checked against the published OpenAPI schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.support import API_KEY
from tests.support.songs import Song


def service_settings(data_dir: Path, checkpoint: Path, **overrides: Any):
    from app.core.settings import Settings

    values: dict[str, Any] = {  # everything explicit: PHOTOSCORE_* in the environment must not leak in
        "data_dir": data_dir,
        "database_url": f"sqlite:///{data_dir / 'photoscore.db'}",
        "index_dir": data_dir / "index",
        "audio_dir": data_dir / "audio",
        "public_reads": True,
        "micro_batching": True,
        "checkpoint": checkpoint,
        "api_keys": [API_KEY],
        "device": "cpu",
        "index_sync_seconds": 0.5,
    }
    values.update(overrides)
    return Settings(**values)


def add_song(client: Any, song: Song, **form: str) -> Any:
    """`POST /tracks` with `song` and its title, artist and licence (`form` adds or overrides
    fields); `client` is a TestClient or an httpx.Client on a live server."""
    data = {"title": song.title, "artist": song.artist, "license": song.license, **form}
    return client.post(
        "/tracks",
        files={"audio": (song.path.name, song.path.read_bytes(), song.media_type)},
        data=data,
        headers={"X-API-Key": API_KEY},
    )


# ---------------------------------------------------------------------------- OpenAPI checks
def response_schema(spec: dict, path: str, method: str, code: int) -> dict:
    """The JSON schema the published OpenAPI document gives for one response."""
    responses = spec["paths"][path][method.lower()]["responses"]
    entry = responses.get(str(code))
    assert entry is not None, f"{method} {path} does not document status {code}"
    schema = entry["content"]["application/json"]["schema"]
    return {**schema, "components": spec["components"]}


def assert_matches_schema(spec: dict, path: str, method: str, response: httpx.Response) -> None:
    """Validate a response body against the OpenAPI schema ($refs resolved in the document).

    Uses `jsonschema` when installed, else `jsonschema_rs` (installed with schemathesis).
    """
    schema = response_schema(spec, path, method, response.status_code)
    body = response.json()
    try:
        import jsonschema
    except ImportError:
        import jsonschema_rs

        errors = [str(e) for e in jsonschema_rs.validator_for(schema).iter_errors(body)]
    else:
        errors = [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(body)]
    assert not errors, f"{method} {path} -> {response.status_code} violates its schema: {errors[0]}"
