"""POST /soundtrack (issue 27): a video in, its scenes with a song segment each out.

One real app in process (tiny real model, real SQLite, real Wesnoth songs) and real videos that
PyAV encodes here from pictures with known cut frames. The cue sheet is held to the published
OpenAPI schema; the Opus preview is decoded again and compared, scene by scene, with the songs'
own audio at the planned segments.
"""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.api.main import create_app
from app.services.soundtrack import CROSSFADE_SECONDS
from model.audio import SAMPLE_RATE, load_audio
from tests.support.media import photo_bytes
from tests.support.service import add_song, assert_matches_schema, service_settings
from tests.support.songs import Song, make_songs
from tests.support.video import video_bytes

FPS = 25
MAX_UPLOAD_MB = 2.0  # photos and songs; videos have their own limit (PHOTOSCORE_MAX_VIDEO_MB, 200 MB)


@dataclass
class Api:
    client: TestClient
    songs: list[Song]
    folder: Path
    spec: dict

    def soundtrack(self, data: bytes, name: str = "clip.mp4", **params: Any) -> Any:
        return self.client.post("/soundtrack", files={"video": (name, data, "video/mp4")}, params=params)


@pytest.fixture(scope="module")
def api(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    root = tmp_path_factory.mktemp("soundtrack")
    songs = make_songs(root / "songs", seconds=12.0)
    settings = service_settings(
        root / "data", tiny_checkpoint, max_upload_mb=MAX_UPLOAD_MB, max_video_seconds=30.0, max_video_shots=12
    )
    with TestClient(create_app(settings)) as client:
        for song in songs:
            r = add_song(client, song)
            assert r.status_code == 201, r.text
        yield Api(client, songs, root, client.get("/openapi.json").json())


def _picture(kind: str) -> Image.Image:
    return Image.open(io.BytesIO(photo_bytes(kind, size=(400, 240))))


def _clip(api: Api, name: str, shots: list[tuple[Any, float]]) -> bytes:
    return video_bytes(api.folder / name, shots, fps=FPS)


def test_cue_sheet_follows_the_scenes(api: Api) -> None:
    shots = [(_picture("warm"), 3.2), (_picture("cold"), 4.0), (_picture("green"), 3.6)]
    r = api.soundtrack(_clip(api, "three.mp4", shots), name="three.mp4")
    assert r.status_code == 200, r.text
    assert_matches_schema(api.spec, "/soundtrack", "post", r)
    sheet = r.json()
    video = sheet["video"]
    assert video["codec"] == "h264" and video["container"] == "MP4/MOV" and video["shots"] == 3
    assert video["duration"] == pytest.approx(10.8, abs=0.05)
    expected_cuts = [3.2, 7.2]
    assert len(video["cuts"]) == 2
    for found, cut in zip(video["cuts"], expected_cuts, strict=True):
        assert abs(found - cut) <= 2 / FPS, (video["cuts"], expected_cuts)
    assert [s["cue"] for s in sheet["scenes"]] == [0, 1, 2]
    assert sheet["total_duration"] == pytest.approx(video["duration"])
    songs = {c["song"]["id"] for c in sheet["cues"]}
    assert len(songs) == 3, "one song per scene, no song twice"
    for cue, scene in zip(sheet["cues"], sheet["scenes"], strict=True):
        assert cue["timeline"] == {"start": scene["start"], "end": scene["end"]}
        assert cue["photo"] == {"filename": "three.mp4", **scene["image"]}
        length = min(scene["end"] - scene["start"], cue["song"]["duration"])
        assert cue["segment"]["end"] - cue["segment"]["start"] == pytest.approx(length, abs=0.01)
        assert cue["segment"]["start"] >= 0 and cue["segment"]["end"] <= cue["song"]["duration"] + 1e-3
        assert cue["why"]["summary"] and cue["song"]["url"].startswith("http://testserver/tracks/")
        assert scene["keyframe"] is None


def test_short_shots_merge_into_scenes_and_keyframes_come_on_request(api: Api) -> None:
    kinds = ["warm", "cold", "green", "warm", "cold", "green"]
    data = _clip(api, "quick.mp4", [(_picture(k), 1.0) for k in kinds])
    r = api.soundtrack(data, min_scene_seconds=2.5, keyframes="true")
    assert r.status_code == 200, r.text
    sheet = r.json()
    assert sheet["video"]["shots"] == 6
    assert [s["shots"] for s in sheet["scenes"]] == [3, 3]
    assert [(s["start"], s["end"]) for s in sheet["scenes"]] == [(0.0, 3.0), (3.0, 6.0)]
    for scene in sheet["scenes"]:
        assert scene["keyframe"].startswith("data:image/jpeg;base64,")
    r = api.soundtrack(data, min_scene_seconds=0.5)  # six scenes, four songs: no song twice cannot hold
    assert r.status_code == 422 and "max_songs" in r.json()["detail"], r.text
    r = api.soundtrack(data, min_scene_seconds=0.5, max_songs=4)
    assert [s["shots"] for s in r.json()["scenes"]] == [1] * 6 and len(r.json()["cues"]) == 4
    r = api.soundtrack(data, min_scene_seconds=0.5, repeat_songs="true")  # each scene its best song
    assert r.status_code == 200, r.text
    ids = [c["song"]["id"] for c in r.json()["cues"]]
    assert len(ids) == 6 and len(set(ids)) <= 4


def test_max_songs_lets_scenes_share_a_song(api: Api) -> None:
    pictures = [_picture("warm"), (230, 200, 60), _picture("cold"), _picture("green")]
    data = _clip(api, "four.mp4", [(p, 2.4) for p in pictures])
    r = api.soundtrack(data, min_scene_seconds=2.0, max_songs=2)
    assert r.status_code == 200, r.text
    sheet = r.json()
    assert len(sheet["scenes"]) == 4 and len(sheet["cues"]) == 2
    covered = [s for c in sheet["cues"] for s in c["scenes"]]
    assert covered == [0, 1, 2, 3], "the groups are runs of adjacent scenes, in order"
    for cue in sheet["cues"]:
        first, last = sheet["scenes"][cue["scenes"][0]], sheet["scenes"][cue["scenes"][-1]]
        assert cue["timeline"] == {"start": first["start"], "end": last["end"]}
    r = api.soundtrack(data, min_scene_seconds=2.0, max_songs=1)
    assert len(r.json()["cues"]) == 1


def test_steering_and_exports(api: Api) -> None:
    data = _clip(api, "two.mp4", [(_picture("warm"), 3.0), (_picture("cold"), 3.0)])
    r = api.soundtrack(data, mood="happier")
    assert r.status_code == 200, r.text
    for cue in r.json()["cues"]:
        target, scene = cue["why"]["target"], cue["photo"]
        assert target["valence"] == pytest.approx(min(1.0, scene["valence"] + 0.25), abs=2e-4)
    m3u = api.soundtrack(data, format="m3u8")
    assert m3u.status_code == 200 and m3u.headers["content-type"].startswith("audio/mpegurl")
    assert m3u.text.count("#EXTVLCOPT:start-time=") == 2
    xspf = api.soundtrack(data, format="xspf")
    assert len(ET.fromstring(xspf.content).findall(".//{http://xspf.org/ns/0/}track")) == 2
    cue = api.soundtrack(data, format="cue")
    assert "attachment" in cue.headers["content-disposition"] and cue.json()["video"]["shots"] == 2
    bad = api.soundtrack(data, mood="happier,sadder")
    assert bad.status_code == 422 and "opposite" in bad.json()["detail"]


def _decode_ogg(data: bytes) -> tuple[str, np.ndarray]:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        name = stream.codec_context.name
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        chunks = [f.to_ndarray()[0] for frame in container.decode(stream) for f in resampler.resample(frame)]
        chunks += [f.to_ndarray()[0] for f in resampler.resample(None)]
    return name, np.concatenate(chunks)


def _similarity(a: np.ndarray, b: np.ndarray, max_lag: int) -> float:
    """Best normalised correlation of ``a`` against ``b`` shifted by up to ``max_lag`` samples
    (the codec's delay)."""
    best = 0.0
    for lag in range(0, max_lag + 1, 8):
        x, y = a[lag : lag + len(b) - max_lag], b[: len(b) - max_lag]
        n = min(len(x), len(y))
        x, y = x[:n] - x[:n].mean(), y[:n] - y[:n].mean()
        best = max(best, float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y) + 1e-9)))
    return best


def test_preview_lays_each_segment_at_its_scene(api: Api) -> None:
    data = _clip(api, "preview.mp4", [(_picture("warm"), 3.0), (_picture("cold"), 3.5), (_picture("green"), 3.0)])
    sheet = api.soundtrack(data).json()
    r = api.soundtrack(data, render="audio")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "audio/ogg"
    codec, y = _decode_ogg(r.content)
    assert codec == "opus"
    assert len(y) / SAMPLE_RATE == pytest.approx(sheet["video"]["duration"], abs=0.1)
    assert len(r.content) <= 48_000 / 8 * sheet["video"]["duration"] * 1.2
    paths = {s.title: s.path for s in api.songs}
    for cue in sheet["cues"]:
        # the middle of each stretch (away from the crossfades) is the planned segment of that song
        at, seg = cue["timeline"], cue["segment"]
        mid = (at["start"] + at["end"]) / 2
        song = load_audio(paths[cue["song"]["title"]])
        want = song[int((seg["start"] + mid - at["start"]) * SAMPLE_RATE) :][: SAMPLE_RATE // 2]
        got = y[int(mid * SAMPLE_RATE) :][: SAMPLE_RATE // 2 + 2000]
        assert _similarity(got, want, 2000) > 0.7, cue["song"]["title"]
        assert mid - at["start"] > CROSSFADE_SECONDS
    again = api.client.post("/soundtrack/preview", json=sheet)
    assert again.status_code == 200, again.text
    assert _decode_ogg(again.content)[1].shape[0] == pytest.approx(len(y), abs=SAMPLE_RATE * 0.05)
    sheet["cues"][0]["song"]["id"] = 999_999
    gone = api.client.post("/soundtrack/preview", json=sheet)
    assert gone.status_code == 422 and "999999" in gone.json()["detail"]


def test_documented_with_an_example(api: Api) -> None:
    op = api.spec["paths"]["/soundtrack"]["post"]
    assert "curl -F video=@" in op["description"]
    assert {"min_scene_seconds", "max_songs", "render", "format", "smoothness", "mood"} <= {
        p["name"] for p in op["parameters"]
    }
    assert "audio/ogg" in op["responses"]["200"]["content"]
    assert "/soundtrack/preview" in api.spec["paths"]


def test_videos_have_their_own_upload_limit(api: Api) -> None:
    """A video over the photo/song upload limit is taken: `/soundtrack` has the video limit."""
    data = _clip(api, "big.mp4", [(_picture("warm"), 3.0)]) + b"\0" * int(MAX_UPLOAD_MB * 1.5e6)
    r = api.soundtrack(data)
    assert r.status_code == 200, r.text
    r = api.client.post("/recommend", files={"image": ("p.jpg", b"\xff\xd8" + data, "image/jpeg")})
    assert r.status_code == 413 and "PHOTOSCORE_MAX_UPLOAD_MB" in r.json()["detail"]
