"""Issue 14, F8 and F9 through the real app (tiny real model, SQLite, real audio): Range per
RFC 9110 with JSON errors, HEAD on audio, canonical track ids, strict UTF-8 form text,
Unicode case-insensitive search, one `image` part."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from fastapi.testclient import TestClient

from app.api.main import create_app
from tests.support import API_KEY
from tests.support.media import photo_bytes, wav_bytes
from tests.support.service import service_settings
from tests.support.songs import spare_song

AUTH = {"X-API-Key": API_KEY}


@pytest.fixture(scope="module")
def api(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict[str, Any]]]:
    root = tmp_path_factory.mktemp("http-edges")
    song = spare_song(root, "knolls", seconds=4.0)
    with TestClient(create_app(service_settings(root / "data", tiny_checkpoint))) as client:
        r = client.post(
            "/tracks", files={"audio": (song.path.name, song.path.read_bytes(), song.media_type)},
            data={"title": "Café Noir"}, headers=AUTH,
        )  # fmt: skip
        assert r.status_code == 201, r.text
        yield client, r.json()


@pytest.mark.parametrize("header", ["bytes=abc", "items=0-10", "bytes=10-5", "bytes=", "bytes=1-2-3"])
def test_invalid_range_is_ignored(api: tuple[TestClient, dict], header: str) -> None:
    client, track = api
    full = client.get(track["audio_url"])
    r = client.get(track["audio_url"], headers={"Range": header})
    assert r.status_code == 200 and r.content == full.content


@pytest.mark.parametrize("header", ["bytes=-0", "bytes=99999999-", "bytes=99999999-100000000"])
def test_unsatisfiable_range_is_json_416(api: tuple[TestClient, dict], header: str) -> None:
    client, track = api
    size = len(client.get(track["audio_url"]).content)
    r = client.get(track["audio_url"], headers={"Range": header})
    assert r.status_code == 416 and r.headers["content-type"] == "application/json"
    assert r.headers["content-range"] == f"bytes */{size}" and "not satisfiable" in r.json()["detail"]


def test_valid_ranges_and_head(api: tuple[TestClient, dict]) -> None:
    client, track = api
    full = client.get(track["audio_url"]).content
    r = client.get(track["audio_url"], headers={"Range": "bytes=0-3"})
    assert r.status_code == 206 and r.content == full[:4]
    r = client.get(track["audio_url"], headers={"Range": "bytes=-4, 99999999-"})  # one satisfiable is enough
    assert r.status_code == 206 and r.content == full[-4:]
    h = client.head(track["audio_url"])
    assert h.status_code == 200 and h.content == b"" and int(h.headers["content-length"]) == len(full)


@pytest.mark.parametrize("raw", ["1_0", "%201", "+1", "01", "1%20"])
def test_track_ids_must_be_canonical(api: tuple[TestClient, dict], raw: str) -> None:
    client, track = api
    assert track["id"] == 1
    for method in ("GET", "DELETE"):
        r = client.request(method, f"/tracks/{raw}", headers=AUTH)
        assert r.status_code == 422, (method, raw, r.text)
    assert client.get("/tracks/1").status_code == 200  # nothing was deleted


def test_invalid_utf8_form_field_is_422(api: tuple[TestClient, dict]) -> None:
    client, _ = api
    boundary = "b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="title"\r\n\r\n'.encode()
        + b"caf\xe9\r\n"
        + f'--{boundary}\r\nContent-Disposition: form-data; name="audio"; filename="a.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\nRIFF\r\n".encode()
        + f"--{boundary}--\r\n".encode()
    )
    r = client.post(
        "/tracks", content=body, headers={**AUTH, "Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    assert r.status_code == 422 and "title" in r.json()["detail"] and "UTF-8" in r.json()["detail"], r.text


def test_search_folds_unicode_case(api: tuple[TestClient, dict]) -> None:
    client, track = api
    for q in ("café", "CAFÉ", "Café"):
        r = client.get("/tracks", params={"q": q})
        assert [t["id"] for t in r.json()["items"]] == [track["id"]], q


def test_two_image_parts_are_refused(api: tuple[TestClient, dict]) -> None:
    client, _ = api
    files = [
        ("image", ("a.jpg", photo_bytes("warm"), "image/jpeg")),
        ("image", ("b.jpg", photo_bytes("cold"), "image/jpeg")),
    ]
    r = client.post("/recommend", files=files)
    assert r.status_code == 422 and "2 parts named 'image'" in r.json()["detail"], r.text


def test_invisible_title_counts_as_missing(api: tuple[TestClient, dict], tmp_path: Path) -> None:
    """Only zero-width characters: the title falls back as if absent (tags, then the file name)."""
    client, _ = api
    data = wav_bytes(3.0, seed=7)
    r = client.post(
        "/tracks", files={"audio": ("Night Walk.wav", data, "audio/wav")},
        data={"title": "\u200b\u200d\ufeff", "artist": "\u2066\u2069 Ann\u202e\x1b"}, headers=AUTH,
    )  # fmt: skip
    assert r.status_code == 201, r.text
    assert r.json()["title"] == "Night Walk" and r.json()["artist"] == "Ann"
    assert client.delete(f"/tracks/{r.json()['id']}", headers=AUTH).status_code == 204


@pytest.mark.parametrize("range_header", [None, "bytes=100-"], ids=["whole", "range"])
def test_delete_during_download_leaves_the_download_whole(
    api: tuple[TestClient, dict], range_header: str | None
) -> None:
    """Issue 24, point 4: the track is deleted (the real DELETE route, which unlinks the stored
    file) at the moment the download's headers go out. The file was opened before them, so the
    body is every byte the headers promised; the next download is a 404."""
    client, _ = api
    data = wav_bytes(4.0, seed=11)  # several 64 KiB chunks
    r = client.post("/tracks", files={"audio": ("gone.wav", data, "audio/wav")}, headers=AUTH)
    assert r.status_code == 201, r.text
    track = r.json()
    app = client.app

    async def download_while_deleting() -> tuple[list[dict], list[int]]:
        sent: list[dict] = []
        deleted: list[int] = []
        headers = [(b"host", b"testserver")] + ([(b"range", range_header.encode())] if range_header else [])
        scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},  # as uvicorn's h11 sends it
            "http_version": "1.1", "method": "GET", "scheme": "http",
            "path": track["audio_url"], "raw_path": track["audio_url"].encode(), "query_string": b"",
            "root_path": "", "headers": headers, "client": ("127.0.0.1", 1), "server": ("testserver", 80),
        }  # fmt: skip
        request_sent = False

        async def receive() -> dict:
            nonlocal request_sent
            if not request_sent:
                request_sent = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await anyio.sleep_forever()
            raise AssertionError

        async def send(message: dict) -> None:
            sent.append(message)
            if message["type"] == "http.response.start":
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as other:
                    deleted.append((await other.delete(f"/tracks/{track['id']}", headers=AUTH)).status_code)

        await app(scope, receive, send)
        return sent, deleted

    sent, deleted = client.portal.call(download_while_deleting)
    assert deleted == [204]
    start, body = sent[0], b"".join(m.get("body", b"") for m in sent[1:])
    assert all(m["type"] == "http.response.body" for m in sent[1:]), [m["type"] for m in sent]
    length = int(dict(start["headers"])[b"content-length"])
    expected = data[100:] if range_header else data
    assert start["status"] == (206 if range_header else 200)
    assert len(body) == length == len(expected) and body == expected
    assert client.get(track["audio_url"]).status_code == 404


@pytest.mark.parametrize("value", [b"RIFF\xff\xfe\x00\x01 binary", b"plain text"], ids=["binary", "text"])
@pytest.mark.parametrize(("path", "field"), [("/tracks", "audio"), ("/recommend", "image"), ("/playlist", "images")])
def test_a_file_sent_as_a_text_field_is_told_it_must_be_a_file(
    api: tuple[TestClient, dict], value: bytes, path: str, field: str
) -> None:
    """Issue 24: a binary `audio` text part (no file name) was told "not valid UTF-8"."""
    client, _ = api
    boundary = "b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"\r\n\r\n'.encode()
        + value
        + f"\r\n--{boundary}--\r\n".encode()
    )
    r = client.post(path, content=body, headers={**AUTH, "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith(f"{field}: must be a file"), r.text
