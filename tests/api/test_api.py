"""The HTTP API through TestClient (lifespan runs): real tiny model, real audio, real SQLite.

Every response body checked here is validated against the app's own published OpenAPI schema.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import sessionmaker

from app.api.main import create_app
from app.core import catalogue
from app.core.db import make_engine
from tests.support import API_KEY, REPO
from tests.support.media import photo_bytes, png_bomb, wav_bytes
from tests.support.service import add_song, assert_matches_schema, service_settings
from tests.support.songs import Song, make_songs, spare_song

MAX_UPLOAD_MB = 2.0
AUTH = {"X-API-Key": API_KEY}
MULTIPART_X = "multipart/form-data; boundary=x"
NUL_TITLE = {"title": "\x00" * 600}
NUL_AUDIO = {"audio": ("\x00", wav_bytes(0.5), "x/y")}


@dataclass
class Api:
    client: TestClient
    app: FastAPI
    spec: dict
    tracks: list[dict]
    songs: list[Song]
    spare: Song

    def check(self, path: str, method: str, response: Any) -> Any:
        assert_matches_schema(self.spec, path, method, response)
        return response.json()

    def recommend(
        self, image: bytes, n: int = 10, name: str = "p.jpg", headers: dict | None = None, **params: Any
    ) -> Any:
        return self.client.post(
            "/recommend", params={"n": n, **params}, files={"image": (name, image, "image/jpeg")}, headers=headers
        )

    def playlist(self, images: list[tuple[str, bytes]], **params: Any) -> Any:
        files = [("images", (name, data, "image/jpeg")) for name, data in images]
        return self.client.post("/playlist", params=params, files=files)


@pytest.fixture(scope="module")
def api(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    root = tmp_path_factory.mktemp("api")
    songs = make_songs(root / "songs")
    settings = service_settings(
        root / "data",
        tiny_checkpoint,
        max_upload_mb=MAX_UPLOAD_MB,
        max_audio_seconds=30.0,
        max_image_pixels=20_000_000,
    )
    app = create_app(settings)
    with TestClient(app) as client:
        spec = app.openapi()
        tracks = []
        for song in songs:
            r = add_song(client, song)
            assert r.status_code == 201, r.text
            assert_matches_schema(spec, "/tracks", "POST", r)
            tracks.append(r.json())
        yield Api(client, app, spec, tracks, songs, spare_song(root / "songs"))


# ----------------------------------------------------------------------------------- recommend
class TestRecommend:
    def test_songs_for_a_photo(self, api: Api) -> None:
        body = api.check("/recommend", "POST", api.recommend(photo_bytes("warm"), n=3))
        results = body["results"]
        assert len(results) == 3
        seeded = {t["id"]: t for t in api.tracks}
        assert len({r["track"]["id"] for r in results}) == 3
        scores = [r["score"] for r in results]
        assert scores == sorted(scores, reverse=True)
        for r in results:
            track = r["track"]
            assert track["id"] in seeded and track["audio_url"] == f"/tracks/{track['id']}/audio"
            assert 0.0 <= r["segment"]["start"] < r["segment"]["end"] <= track["duration"] + 1e-3
        assert body["model_version"].startswith("tiny@")
        assert 0 <= body["image"]["valence"] <= 1 and 0 <= body["image"]["arousal"] <= 1

    def test_all_tracks_when_n_exceeds_catalogue(self, api: Api) -> None:
        body = api.check("/recommend", "POST", api.recommend(photo_bytes("cold"), n=100, max_per_artist=0))
        assert {r["track"]["id"] for r in body["results"]} == {t["id"] for t in api.tracks}

    def test_same_image_same_answer(self, api: Api) -> None:
        image = photo_bytes("green")
        first, second = (api.recommend(image, n=4).json() for _ in range(2))
        assert first["results"] == second["results"] and first["image"] == second["image"]

    @pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"])
    def test_image_formats(self, api: Api, fmt: str) -> None:
        r = api.recommend(photo_bytes("warm", fmt=fmt), n=2, name=f"p.{fmt.lower()}")
        assert r.status_code == 200, r.text
        api.check("/recommend", "POST", r)

    @pytest.mark.parametrize("n", [0, 101, -1])
    def test_n_out_of_range(self, api: Api, n: int) -> None:
        r = api.recommend(photo_bytes(), n=n)
        assert r.status_code == 422
        assert "query parameter 'n'" in api.check("/recommend", "POST", r)["detail"]

    def test_missing_or_misnamed_field(self, api: Api) -> None:
        r = api.client.post("/recommend", files={"photo": ("p.jpg", photo_bytes(), "image/jpeg")})
        assert r.status_code == 422
        assert api.check("/recommend", "POST", r)["detail"] == "missing form field 'image'"
        r = api.client.post("/recommend", json={"image": "http://example.com/x.jpg"})
        assert r.status_code == 422 and "image" in r.json()["detail"]
        r = api.client.post("/recommend", data={"image": "not a file"})
        assert r.status_code == 422

    @pytest.mark.parametrize(
        ("payload", "status", "words"),
        [
            (b"this is plain text, not a photo", 415, "not a supported image"),
            (b"", 400, "empty"),
            (photo_bytes(fmt="JPEG")[:300], 400, "corrupt"),
            (png_bomb(), 413, "too large"),
        ],
        ids=["text", "empty", "truncated-jpeg", "pixel-bomb"],
    )
    def test_bad_images(self, api: Api, payload: bytes, status: int, words: str) -> None:
        r = api.recommend(payload)
        assert r.status_code == status, r.text
        assert words in api.check("/recommend", "POST", r)["detail"]

    def test_pixel_count_limit_from_settings(self, api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(api.app.state.settings, "max_image_pixels", 10_000)
        r = api.recommend(photo_bytes(size=(200, 100)))
        assert r.status_code == 413 and "PHOTOSCORE_MAX_IMAGE_PIXELS" in r.json()["detail"]

    def test_oversized_upload(self, api: Api) -> None:
        big = b"\xff\xd8\xff" + b"\0" * int(MAX_UPLOAD_MB * 1e6 + 2e6)
        r = api.recommend(big)
        assert r.status_code == 413
        assert "PHOTOSCORE_MAX_UPLOAD_MB" in api.check("/recommend", "POST", r)["detail"]

    def test_oversized_streamed_upload_without_length(self, api: Api) -> None:
        """No Content-Length (chunked): the cap applies while streaming."""
        boundary = "xyz"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()

        def body() -> Iterator[bytes]:
            yield head
            for _ in range(int(MAX_UPLOAD_MB) + 3):
                yield b"\0" * 1_000_000
            yield f"\r\n--{boundary}--\r\n".encode()

        r = api.client.post(
            "/recommend",
            content=body(),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        assert r.status_code == 413 and "upload limit" in r.json()["detail"]


# ------------------------------------------------------------- steering, variety, why, segment
class TestRecommendOptions:
    def test_no_shift_and_plain_options_give_the_unsteered_search(self, api: Api) -> None:
        """The answer equals the search path as it was: the plain ranking of n + 5, cut to n."""
        from app.services.photos import clean_va, decode_photo
        from app.services.ranking import Query, Ranker, SearchOptions

        image = photo_bytes("warm")
        state = api.app.state
        matcher = state.worker.matcher
        emb, va = matcher.embed_image_tensor(decode_photo(image, 20_000_000, matcher.image_size)[None])
        plain = {"max_per_artist": 0, "dedupe": False}
        for n in (1, 3, 4):
            want = [
                h.track_id
                for h in Ranker(state.live_index, matcher, search_k=256)
                .page(Query(emb[0], clean_va(va[0])), SearchOptions(n=n + 5, spare=0))
                .results
            ][:n]
            for shift in ({}, {"valence_shift": 0, "arousal_shift": 0.0}):
                body = api.check("/recommend", "POST", api.recommend(image, n=n, **plain, **shift))
                assert [r["track"]["id"] for r in body["results"]] == want
                assert body["shift"] == {"valence": 0.0, "arousal": 0.0} and body["target"] is None

    def test_mood_words_and_shifts(self, api: Api) -> None:
        image = photo_bytes("green")
        body = api.check("/recommend", "POST", api.recommend(image, n=4, mood=["happier", "calmer"]))
        assert body["shift"] == {"valence": 0.25, "arousal": -0.25}
        photo, target = body["image"], body["target"]
        assert target["valence"] == pytest.approx(min(1.0, photo["valence"] + 0.25), abs=1e-3)
        assert target["arousal"] == pytest.approx(max(0.0, photo["arousal"] - 0.25), abs=1e-3)
        assert all(r["why"]["target"] == target for r in body["results"])
        both = api.check("/recommend", "POST", api.recommend(image, n=4, mood="more energetic", valence_shift=-0.4))
        assert both["shift"] == {"valence": -0.4, "arousal": 0.25}
        clipped = api.check("/recommend", "POST", api.recommend(image, n=2, mood="sadder", valence_shift=-0.4))
        assert clipped["shift"]["valence"] == -0.5

    @pytest.mark.parametrize(
        ("params", "words"),
        [
            ({"mood": ["happier", "sadder"]}, "opposite"),
            ({"mood": "calmer,more energetic"}, "opposite"),
            ({"mood": "angrier"}, "unknown word 'angrier'"),
            ({"valence_shift": 0.7}, "query parameter 'valence_shift'"),
            ({"arousal_shift": "lots"}, "query parameter 'arousal_shift'"),
            ({"segment_seconds": 1}, "query parameter 'segment_seconds'"),
            ({"segment_seconds": 61}, "query parameter 'segment_seconds'"),
            ({"offset": 1, "n": 2}, "multiple of n=2"),
            ({"max_per_artist": -1}, "query parameter 'max_per_artist'"),
        ],
    )
    def test_bad_options_are_422_with_a_clear_message(self, api: Api, params: dict, words: str) -> None:
        params = {"n": 3, **params}
        r = api.recommend(photo_bytes(), **params)
        assert r.status_code == 422, r.text
        assert words in api.check("/recommend", "POST", r)["detail"]

    def test_offset_pages_never_repeat(self, api: Api) -> None:
        image = photo_bytes("cold")
        seen: list[int] = []
        offset: int | None = 0
        while offset is not None:
            body = api.check("/recommend", "POST", api.recommend(image, n=1, offset=offset, max_per_artist=0))
            seen += [r["track"]["id"] for r in body["results"]]
            assert body["offset"] == offset
            offset = body["next_offset"]
        assert sorted(seen) == sorted(t["id"] for t in api.tracks)  # every song once, none twice
        first = api.recommend(image, n=100, max_per_artist=0).json()["results"]
        assert seen == [r["track"]["id"] for r in first]  # pages of one = the ranking itself
        past = api.check("/recommend", "POST", api.recommend(image, n=2, offset=10))
        assert past["results"] == [] and past["next_offset"] is None

    @pytest.mark.parametrize("cap", [1, 2])
    def test_max_per_artist_holds(self, api: Api, cap: int) -> None:
        for offset in (0, 4):
            body = api.check(
                "/recommend", "POST", api.recommend(photo_bytes("warm"), n=4, max_per_artist=cap, offset=offset)
            )
            artists = [r["track"]["artist"] for r in body["results"]]
            assert all(artists.count(a) <= cap for a in artists)
        first = api.recommend(photo_bytes("warm"), n=4, max_per_artist=cap).json()["results"]
        assert len(first) == cap + 1  # three songs by Wesnoth, one by PhotoScore tests

    def test_seed_is_deterministic(self, api: Api) -> None:
        image = photo_bytes("green")
        a, b = (api.recommend(image, n=4, seed=11, max_per_artist=0).json()["results"] for _ in range(2))
        assert a == b
        assert sorted(r["track"]["id"] for r in a) == sorted(t["id"] for t in api.tracks)

    def test_why_explains_each_result(self, api: Api) -> None:
        body = api.check("/recommend", "POST", api.recommend(photo_bytes("warm"), n=4, max_per_artist=0))
        photo = body["image"]
        for r in body["results"]:
            why, track = r["why"], r["track"]
            assert why["photo"] == pytest.approx(photo, abs=1e-4)
            assert why["song"] == pytest.approx({"valence": track["valence"], "arousal": track["arousal"]}, abs=1e-4)
            dist = ((photo["valence"] - track["valence"]) ** 2 + (photo["arousal"] - track["arousal"]) ** 2) ** 0.5
            assert why["distance"] == pytest.approx(dist, abs=1e-3)
            assert 0 <= why["segment"]["valence"] <= 1 and why["target"] is None
            for key in ("photo_words", "song_words", "segment_words"):
                assert " · " in why[key]
            assert why["photo_words"] in why["summary"] and why["song_words"] in why["summary"]

    def test_segment_seconds(self, api: Api) -> None:
        image = photo_bytes("warm")
        windows: dict[int, dict] = {}
        for seconds, span in ((2, 2.0), (4, 4.0), (5, 4.0)):
            body = api.check("/recommend", "POST", api.recommend(image, n=4, max_per_artist=0, segment_seconds=seconds))
            for r in body["results"]:
                seg = windows[r["track"]["id"]] = r["segment"]
                assert seg["end"] - seg["start"] == pytest.approx(span, abs=0.02), (seconds, seg)
                assert seg["start"] >= 0 and seg["end"] <= r["track"]["duration"] + 1e-3
                assert abs(seg["start"] / 2 - round(seg["start"] / 2)) < 0.025  # clip boundaries (2 s hop)
        whole = api.check("/recommend", "POST", api.recommend(image, n=4, max_per_artist=0, segment_seconds=60))
        for r in whole["results"]:  # shorter than 60 s: the whole song (all its indexed clips)
            seg, shorter = r["segment"], windows[r["track"]["id"]]
            assert seg["start"] == 0 and shorter["end"] <= seg["end"] <= r["track"]["duration"] + 1e-3

    def test_openapi_documents_the_new_fields(self, api: Api) -> None:
        spec = api.client.get("/openapi.json").json()
        params = {p["name"]: p for p in spec["paths"]["/recommend"]["post"]["parameters"]}
        for name in (
            "offset",
            "valence_shift",
            "arousal_shift",
            "mood",
            "max_per_artist",
            "dedupe",
            "seed",
            "segment_seconds",
        ):
            assert params[name].get("description"), name
        for name in ("offset", "valence_shift", "arousal_shift", "mood", "max_per_artist", "seed", "segment_seconds"):
            assert params[name]["schema"].get("examples"), name
        schemas = spec["components"]["schemas"]
        assert {"why", "segment"} <= set(schemas["RecommendResult"]["properties"])
        assert {"target", "shift", "offset", "next_offset"} <= set(schemas["RecommendResponse"]["properties"])
        assert schemas["Why"].get("examples") and schemas["PlaylistResponse"].get("examples")
        playlist = spec["paths"]["/playlist"]["post"]
        assert {"smoothness", "mood", "segment_seconds"} <= {p["name"] for p in playlist["parameters"]}
        body_ref = playlist["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"].split("/")[-1]
        assert schemas[body_ref]["properties"]["images"]["type"] == "array"


# -------------------------------------------------------------------------------------- playlist
class TestPlaylist:
    PHOTOS = [("a-warm.jpg", "warm"), ("b-cold.jpg", "cold"), ("c-green.jpg", "green")]

    def images(self, count: int = 3) -> list[tuple[str, bytes]]:
        kinds = ["warm", "cold", "green", "warm"]
        return [(f"{i}-{kinds[i]}.jpg", photo_bytes(kinds[i], size=(320 + 8 * i, 240))) for i in range(count)]

    def test_one_song_per_photo_in_order_never_twice(self, api: Api) -> None:
        images = self.images(4)
        body = api.check("/playlist", "POST", api.playlist(images, segment_seconds=4))
        entries = body["entries"]
        assert [e["index"] for e in entries] == [0, 1, 2, 3]
        assert [e["filename"] for e in entries] == [name for name, _ in images]
        ids = [e["track"]["id"] for e in entries]
        assert len(set(ids)) == 4 and set(ids) == {t["id"] for t in api.tracks}
        assert body["total_duration"] == pytest.approx(
            sum(e["segment"]["end"] - e["segment"]["start"] for e in entries)
        )
        assert body["total_duration"] == pytest.approx(16.0, abs=0.1)  # four 2-clip windows
        for (_, data), e in zip(images, entries, strict=True):
            single = api.recommend(data, n=1).json()
            assert e["image"] == pytest.approx(single["image"], abs=1e-5)  # each photo's own VA, in order
            assert e["why"]["photo"] == pytest.approx(e["image"], abs=1e-4)

    def test_steering_and_smoothness_options(self, api: Api) -> None:
        body = api.check("/playlist", "POST", api.playlist(self.images(2), mood="calmer", smoothness=0))
        assert all(e["why"]["target"] is not None for e in body["entries"])
        assert len({e["track"]["id"] for e in body["entries"]}) == 2

    def test_too_few_or_too_many_photos(self, api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
        r = api.playlist(self.images(1))
        assert r.status_code == 422 and "send 2 to 50" in api.check("/playlist", "POST", r)["detail"]
        monkeypatch.setattr(api.app.state.settings, "max_playlist_photos", 3)
        r = api.playlist(self.images(4))
        assert r.status_code == 422 and "PHOTOSCORE_MAX_PLAYLIST_PHOTOS" in r.json()["detail"]
        assert "send 2 to 3" in r.json()["detail"]

    def test_more_photos_than_songs_is_a_clear_422(self, api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
        r = api.playlist(self.images(4) + [("extra.jpg", photo_bytes("cold"))])
        assert r.status_code == 422
        assert "not enough different songs" in api.check("/playlist", "POST", r)["detail"]

    def test_dedupe_off_lets_near_duplicates_share_a_playlist(self, tiny_checkpoint: Path, tmp_path: Path) -> None:
        # Issue 24: the planner always treated "Numb" and "Numb (Live)" as one song.
        songs = make_songs(tmp_path / "songs")[:2]
        app = create_app(service_settings(tmp_path / "data", tiny_checkpoint))
        with TestClient(app) as client:
            for song, title in zip(songs, ["Numb", "Numb (Live)"], strict=True):
                assert add_song(client, song, title=title, artist="Linkin Park").status_code == 201
            files = [
                ("images", (f"{i}.jpg", photo_bytes(kind), "image/jpeg")) for i, kind in enumerate(["warm", "cold"])
            ]
            r = client.post("/playlist", params={"dedupe": "false"}, files=files)
            assert r.status_code == 200, r.text
            assert sorted(e["track"]["title"] for e in r.json()["entries"]) == ["Numb", "Numb (Live)"]
            r = client.post("/playlist", params={"dedupe": "true"}, files=files)
            assert r.status_code == 422 and "not enough different songs" in r.json()["detail"]

    @pytest.mark.parametrize(
        ("payload", "status", "words"),
        [
            (b"holiday notes, not a photo", 415, "not a supported image"),
            (b"", 400, "empty"),
            (png_bomb(), 413, "too large"),
        ],
        ids=["text", "empty", "bomb"],
    )
    def test_one_bad_photo_is_named(self, api: Api, payload: bytes, status: int, words: str) -> None:
        images = self.images(3)
        images[1] = ("bad-one.jpg", payload)
        r = api.playlist(images)
        assert r.status_code == status, r.text
        detail = api.check("/playlist", "POST", r)["detail"]
        assert detail.startswith("images[1] ('bad-one.jpg'): ") and words in detail

    def test_bad_options(self, api: Api) -> None:
        r = api.playlist(self.images(2), mood=["happier", "sadder"])
        assert r.status_code == 422 and "opposite" in r.json()["detail"]
        r = api.playlist(self.images(2), smoothness=-1)
        assert r.status_code == 422 and "smoothness" in r.json()["detail"]


# -------------------------------------------------------------------------------------- tracks
class TestTracks:
    def test_list_paginate_filter(self, api: Api) -> None:
        body = api.check("/tracks", "GET", api.client.get("/tracks"))
        assert body["total"] == len(api.tracks) and [t["id"] for t in body["items"]] == [t["id"] for t in api.tracks]
        page = api.check("/tracks", "GET", api.client.get("/tracks?offset=1&limit=2"))
        assert [t["id"] for t in page["items"]] == [t["id"] for t in api.tracks[1:3]]
        assert (page["total"], page["offset"], page["limit"]) == (len(api.tracks), 1, 2)
        found = api.client.get("/tracks", params={"q": "ELVISH"}).json()
        assert [t["title"] for t in found["items"]] == ["Elvish Theme"] and found["total"] == 1
        assert api.client.get("/tracks", params={"q": "100%_\x00"}).json()["total"] == 0
        assert api.client.get("/tracks?limit=0").status_code == 422

    def test_get_one_and_missing(self, api: Api) -> None:
        first = api.tracks[0]
        got = api.check("/tracks/{track_id}", "GET", api.client.get(f"/tracks/{first['id']}"))
        assert got == first
        missing = api.client.get("/tracks/999999")
        assert missing.status_code == 404
        api.check("/tracks/{track_id}", "GET", missing)
        for bad in ("abc", "0", str(2**70)):
            r = api.client.get(f"/tracks/{bad}")
            assert r.status_code == 422, bad
            api.check("/tracks/{track_id}", "GET", r)

    def test_same_bytes_again_is_200_with_the_existing_track(self, api: Api) -> None:
        r = add_song(api.client, api.songs[0], title="Another title")
        assert r.status_code == 200
        assert api.check("/tracks", "POST", r) == api.tracks[0]
        assert api.client.get("/tracks").json()["total"] == len(api.tracks)

    def test_add_recommend_delete_round_trip(self, api: Api) -> None:
        r = add_song(api.client, api.spare, album="Spare")
        assert r.status_code == 201, r.text
        track = api.check("/tracks", "POST", r)
        assert r.headers["location"] == f"/tracks/{track['id']}"
        assert (track["title"], track["album"], track["clip_count"]) == (api.spare.title, "Spare", 3)
        stored = list((api.app.state.settings.resolved_audio_dir).rglob("*.ogg"))
        assert len(stored) == 3  # content-addressed copies, none under a user's file name
        assert all(p.name.split(".")[0].isalnum() and len(p.stem) == 64 for p in stored)
        ids = lambda: {x["track"]["id"] for x in api.recommend(photo_bytes(), n=100).json()["results"]}  # noqa: E731
        assert track["id"] in ids()

        assert api.client.delete(f"/tracks/{track['id']}").status_code == 401
        r = api.client.delete(f"/tracks/{track['id']}", headers=AUTH)
        assert r.status_code == 204 and r.content == b""
        assert track["id"] not in ids()
        assert api.client.get(f"/tracks/{track['id']}").status_code == 404
        assert len(list(api.app.state.settings.resolved_audio_dir.rglob("*.ogg"))) == 2
        r = api.client.delete(f"/tracks/{track['id']}", headers=AUTH)
        assert r.status_code == 404
        api.check("/tracks/{track_id}", "DELETE", r)

    def test_title_falls_back_to_the_file_name(self, api: Api) -> None:
        r = api.client.post(
            "/tracks",
            files={"audio": ("../../etc/My Tune.wav", wav_bytes(4.0, seed=3), "audio/wav")},
            headers=AUTH,
        )
        assert r.status_code == 201, r.text
        track = api.check("/tracks", "POST", r)
        assert track["title"] == "My Tune" and track["artist"] is None
        assert api.client.delete(f"/tracks/{track['id']}", headers=AUTH).status_code == 204

    def test_database_failure_on_add_removes_the_stored_file(self, api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
        def broken(*args: Any, **kwargs: Any) -> Any:
            raise OperationalError("INSERT INTO tracks", {}, Exception("server closed the connection"))

        monkeypatch.setattr(catalogue, "add_track", broken)
        audio_dir = api.app.state.settings.resolved_audio_dir
        before = sorted(audio_dir.rglob("*.*"))
        r = add_song(api.client, api.spare)
        assert r.status_code == 503 and "database is unavailable" in r.json()["detail"]
        assert sorted(audio_dir.rglob("*.*")) == before  # no orphan left behind

    def test_live_index_failure_after_commit_is_repaired_by_sync(
        self, api: Api, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        live = api.app.state.live_index

        def broken(track_ids: Any) -> int:
            raise RuntimeError("simulated index failure")

        monkeypatch.setattr(live, "refresh_tracks", broken)
        r = add_song(api.client, api.spare)
        assert r.status_code == 201  # the DB is the truth: the add succeeded
        track = r.json()
        monkeypatch.undo()
        deadline = time.monotonic() + 10
        while live.track_sig.get(track["id"]) is None:
            assert time.monotonic() < deadline, "the sync loop did not pick the track up"
            time.sleep(0.1)
        ids = {x["track"]["id"] for x in api.recommend(photo_bytes(), n=100).json()["results"]}
        assert track["id"] in ids
        assert api.client.delete(f"/tracks/{track['id']}", headers=AUTH).status_code == 204

    @pytest.mark.parametrize(
        ("payload", "status", "words"),
        [
            (b"GIF89a definitely not audio" * 10, 415, "not a supported audio file"),
            (b"OggS" + b"\x00garbage" * 200, 400, "cannot decode"),
            (wav_bytes(40.0), 413, "the limit is 30 s"),
            (wav_bytes(1.0), 422, "at least 2 s"),
            (wav_bytes(5.0, silent=True), 422, "no usable 2-second clip"),
            (b"", 400, "empty"),
        ],
        ids=["not-audio", "corrupt-ogg", "too-long", "too-short", "silent", "empty"],
    )
    def test_bad_audio(self, api: Api, payload: bytes, status: int, words: str) -> None:
        r = api.client.post("/tracks", files={"audio": ("x.wav", payload, "audio/wav")}, headers=AUTH)
        assert r.status_code == status, r.text
        assert words in api.check("/tracks", "POST", r)["detail"]

    def test_missing_audio_field(self, api: Api) -> None:
        r = api.client.post("/tracks", data={"title": "x"}, headers=AUTH)
        assert r.status_code == 422
        assert api.check("/tracks", "POST", r)["detail"] == "missing form field 'audio'"

    def test_audio_whole_and_ranges(self, api: Api) -> None:
        for song, track in zip(api.songs, api.tracks, strict=True):
            original = song.path.read_bytes()
            whole = api.client.get(track["audio_url"])
            assert whole.status_code == 200 and whole.content == original
            assert whole.headers["content-type"] == song.media_type
            assert whole.headers["accept-ranges"] == "bytes"
        song, track = api.songs[0], api.tracks[0]
        original = song.path.read_bytes()
        part = api.client.get(track["audio_url"], headers={"Range": "bytes=100-1099"})
        assert part.status_code == 206 and part.content == original[100:1100]
        assert part.headers["content-range"] == f"bytes 100-1099/{len(original)}"
        tail = api.client.get(track["audio_url"], headers={"Range": "bytes=-10"})
        assert tail.status_code == 206 and tail.content == original[-10:]
        beyond = api.client.get(track["audio_url"], headers={"Range": f"bytes={len(original) + 5}-"})
        assert beyond.status_code == 416
        assert api.client.get("/tracks/999999/audio").status_code == 404


# ---------------------------------------------------------------------------------------- auth
class TestAuth:
    def test_write_needs_a_valid_key(self, api: Api) -> None:
        song = api.songs[1]
        files = {"audio": (song.path.name, song.path.read_bytes(), song.media_type)}
        r = api.client.post("/tracks", files=files)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        api.check("/tracks", "POST", r)
        assert api.client.post("/tracks", files=files, headers={"X-API-Key": "wrong"}).status_code == 401
        bad_bearer = api.client.post("/tracks", files=files, headers={"Authorization": "Bearer nope"})
        assert bad_bearer.status_code == 401
        ok = api.client.post("/tracks", files=files, headers={"Authorization": f"Bearer {API_KEY}"})
        assert ok.status_code == 200  # already there: proves the key was accepted
        assert api.client.post("/tracks", files=files, headers=AUTH).status_code == 200

    def test_no_key_configured_refuses_writes_and_says_how(self, api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(api.app.state.settings, "api_keys", [])
        r = api.client.delete(f"/tracks/{api.tracks[0]['id']}", headers=AUTH)
        assert r.status_code == 403
        detail = api.check("/tracks/{track_id}", "DELETE", r)["detail"]
        assert "PHOTOSCORE_API_KEYS" in detail
        assert api.client.get("/tracks").status_code == 200  # reads stay public

    def test_private_reads(self, api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(api.app.state.settings, "public_reads", False)
        assert api.client.get("/tracks").status_code == 401
        assert api.recommend(photo_bytes()).status_code == 401
        assert api.client.get(api.tracks[0]["audio_url"]).status_code == 401
        assert api.client.get("/tracks", headers=AUTH).status_code == 200
        assert api.recommend(photo_bytes(), headers=AUTH).status_code == 200
        assert api.client.get("/health").status_code == 200


# ---------------------------------------------------------------------------------- operations
class TestOperations:
    def test_health_ready_metrics(self, api: Api) -> None:
        api.check("/health", "GET", api.client.get("/health"))
        ready = api.check("/ready", "GET", api.client.get("/ready"))
        assert ready["status"] == "ready" and all(ready["checks"].values())
        assert ready["tracks"] == len(api.tracks) and ready["clips"] == sum(t["clip_count"] for t in api.tracks)
        api.recommend(photo_bytes())
        text = api.client.get("/metrics").text
        assert 'photoscore_http_request_duration_seconds_count{method="POST",route="/recommend",status="200"}' in text
        assert 'route="/tracks/{track_id}"' in text  # templates, not raw paths
        assert f"photoscore_catalogue_tracks {float(len(api.tracks))}" in text
        assert "photoscore_inference_batch_size_count" in text

    def test_ready_reports_indexing_progress_without_becoming_unready(self, api: Api) -> None:
        """An indexer's status file (as `photoscore index` writes it) shows on /ready while it
        runs, and is information only: the service stays ready and keeps answering."""
        from app.core.progress import ProgressWriter, default_path

        path = default_path(api.app.state.settings.data_dir)
        writer = ProgressWriter(path, "the demo library")
        try:
            writer.update(done=12, total=73, current="sad.ogg")
            r = api.client.get("/ready")
            body = api.check("/ready", "GET", r)
            assert r.status_code == 200 and body["status"] == "ready" and all(body["checks"].values())
            assert body["detail"] == "indexing the demo library: 12 of 73 songs"
            progress = body["indexing"]
            assert progress["state"] == "running" and (progress["done"], progress["total"]) == (12, 73)
            assert progress["message"] == body["detail"] and progress["current"] == "sad.ogg"
            assert api.recommend(photo_bytes()).status_code == 200

            writer.update(done=73)
            writer.finish("done")
            body = api.check("/ready", "GET", api.client.get("/ready"))
            assert body["detail"] is None and body["indexing"]["state"] == "done"
            assert body["indexing"]["message"] == "indexed the demo library: 73 of 73 songs"
        finally:
            path.unlink(missing_ok=True)
        assert api.client.get("/ready").json()["indexing"] is None

    def test_database_down_is_503_fast(self, api: Api) -> None:
        state = api.app.state
        saved = state.session_factory, state.engine
        dead = make_engine("postgresql+psycopg://postgres@127.0.0.1:1/none", connect_args={"connect_timeout": 2})
        state.session_factory, state.engine = sessionmaker(dead), dead
        try:
            started = time.perf_counter()
            r = api.client.get("/tracks")
            assert r.status_code == 503 and time.perf_counter() - started < 3
            assert "database is unavailable" in api.check("/tracks", "GET", r)["detail"]
            assert r.headers["retry-after"]
            r = api.recommend(photo_bytes())
            assert r.status_code == 503, r.text
            ready = api.client.get("/ready")
            assert ready.status_code == 503
            body = api.check("/ready", "GET", ready)
            assert body["checks"]["database"] is False and "database" in body["detail"]
        finally:
            state.session_factory, state.engine = saved
            dead.dispose()

    def test_docs_describe_every_route(self, api: Api) -> None:
        assert api.client.get("/docs").status_code == 200
        spec = api.spec
        expected = {
            ("/recommend", "post"), ("/tracks", "post"), ("/tracks", "get"),
            ("/tracks/{track_id}", "get"), ("/tracks/{track_id}", "delete"),
            ("/tracks/{track_id}/audio", "get"), ("/health", "get"), ("/ready", "get"),
            ("/metrics", "get"),
        }  # fmt: skip
        found = {(p, m) for p, ops in spec["paths"].items() for m in ops}
        assert expected <= found
        for path, method in expected:
            op = spec["paths"][path][method]
            assert op.get("summary") and op.get("tags"), (path, method)
            for code, resp in op["responses"].items():
                assert resp.get("description"), (path, method, code)
                if code[0] in "45" and path != "/ready":
                    schema = resp["content"]["application/json"]["schema"]
                    assert schema.get("$ref", "").endswith("/ErrorResponse"), (path, method, code)
        schemas = spec["components"]["schemas"]
        for name in ("RecommendResponse", "TrackOut", "TrackList", "ErrorResponse", "ReadyResponse"):
            assert schemas[name].get("examples"), name
        assert spec["paths"]["/tracks/{track_id}/audio"]["get"]["responses"]["206"]
        auth = spec["components"]["securitySchemes"]
        assert {"HTTPBearer", "APIKeyHeader"} <= set(auth)

    def test_web_page_is_served(self, api: Api) -> None:
        page = api.client.get("/", follow_redirects=False)
        index = REPO / "app" / "api" / "static" / "index.html"
        if index.is_file():
            assert page.status_code == 200 and "text/html" in page.headers["content-type"]
            assert api.client.get("/static/style.css").status_code == 200
        else:
            assert page.status_code == 307 and page.headers["location"] == "/docs"
        assert api.client.get("/static/../main.py").status_code == 404

    def test_no_500_for_odd_requests(self, api: Api) -> None:
        odd = [  # (method, url, httpx keyword arguments)
            ("POST", "/recommend", {"content": b"\x00" * 100, "headers": {"Content-Type": "multipart/form-data"}}),
            ("POST", "/recommend", {"content": b"--x\r\n\r\n", "headers": {"Content-Type": MULTIPART_X}}),
            ("POST", "/recommend?n=abc", {"files": {"image": ("a", photo_bytes(), "image/jpeg")}}),
            ("POST", "/recommend", {"files": {"image": ("a", b"\x89PNG\r\n\x1a\n" + b"\0" * 50, "image/png")}}),
            ("POST", "/tracks", {"files": {"audio": ("a", b"RIFF\0\0\0\0WAVEfmt ", "audio/wav")}, "headers": AUTH}),
            ("POST", "/tracks", {"files": NUL_AUDIO, "data": NUL_TITLE, "headers": AUTH}),
            ("GET", "/tracks?offset=-1", {}),
            ("GET", "/tracks?q=" + "x" * 500, {}),
            ("GET", "/tracks/1/audio", {"headers": {"Range": "bytes=oops"}}),
            ("PUT", "/tracks/1", {}),
            ("GET", "/nowhere", {}),
        ]  # fmt: skip
        for method, url, kw in odd:
            r = api.client.request(method, url, **kw)
            assert r.status_code < 500, (method, url, r.status_code, r.text)
            if r.headers.get("content-type", "").startswith("application/json"):
                assert isinstance(r.json()["detail"], str), (method, url, r.text)
