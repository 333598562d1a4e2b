"""Bad input: every hostile or broken upload gets a clear 4xx and leaves NOTHING behind.

One real app (tiny real model, real SQLite, real audio) through the ASGI test client. Before and
after each case the suite compares: track, clip and event rows; every file in the audio store
(temporary ones included); the live index (clip table and FAISS vectors); the process's temp
folder (decoders spill uploads there) and, for path-traversal names, the target path itself.
"""

from __future__ import annotations

import io
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.api.main import create_app
from tests.support import API_KEY
from tests.support.audit import Stored, app_stored, files_under, sha256_of
from tests.support.media import (
    HTML,
    JS_AS_GIF,
    SCRIPT,
    SVG,
    midi_bytes,
    photo_bytes,
    png_bomb,
    sparse_three_hour_wav,
    three_hour_flac,
    tone_pcm16,
    truncated,
    video_only_mp4,
    wav_bytes,
    wav_header,
)
from tests.support.service import service_settings
from tests.support.songs import Song
from tests.support.video import audio_only_mkv, video_bytes

MAX_UPLOAD_MB = 20.0
MAX_VIDEO_MB, MAX_VIDEO_SECONDS, MAX_VIDEO_SHOTS = 3.0, 10.0, 8
AUTH = {"X-API-Key": API_KEY}
TRAVERSAL_TOKEN = uuid.uuid4().hex[:12]
TRAVERSAL_TARGET = Path(f"/tmp/photoscore-traversal-{TRAVERSAL_TOKEN}.wav")


@dataclass
class Api:
    client: TestClient
    app: FastAPI
    songs: list[Song]
    spare: Song
    media: Path
    tmp: Path

    def stored(self) -> Stored:
        return app_stored(self.app)


@pytest.fixture(scope="module")
def api(model_checkpoint: Path, song_pool: list[Song], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    root = tmp_path_factory.mktemp("bad-input")
    private_tmp = root / "proc-tmp"
    private_tmp.mkdir()
    settings = service_settings(
        root / "data",
        model_checkpoint,
        max_upload_mb=MAX_UPLOAD_MB,
        max_audio_seconds=1800.0,
        max_video_mb=MAX_VIDEO_MB,
        max_video_seconds=MAX_VIDEO_SECONDS,
        max_video_shots=MAX_VIDEO_SHOTS,
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tempfile, "tempdir", str(private_tmp))  # decoders' spill files land here, visibly
        app = create_app(settings)
        with TestClient(app) as client:
            songs = song_pool[:2]
            for song in songs:  # a non-empty catalogue, so "nothing changed" means something
                r = client.post(
                    "/tracks", files={"audio": (song.path.name, song.path.read_bytes(), song.media_type)}, headers=AUTH
                )
                assert r.status_code == 201, r.text
            yield Api(client, app, songs, song_pool[2], root / "media", private_tmp)


@pytest.fixture(scope="module")
def media(api: Api) -> dict[str, Any]:
    """Hostile media made once per module (some cost a second or two)."""
    api.media.mkdir(exist_ok=True)
    song = api.songs[0].path.read_bytes()
    flac = io.BytesIO()
    import soundfile as sf

    y, sr = sf.read(api.songs[1].path, dtype="float32")
    sf.write(flac, y, sr, format="FLAC")
    return {
        "jpeg": photo_bytes("warm", fmt="JPEG"),
        "png": photo_bytes("cold", fmt="PNG"),
        "ogg": song,
        "flac": flac.getvalue(),
        "flac_3h": three_hour_flac(),
        "wav_3h": sparse_three_hour_wav(api.media / "three-hours.wav"),
        "mp4_video": video_only_mp4(api.media),
        **_bad_videos(api.media),
    }


# Differ in brightness and saturation, not only hue, as cuts in footage do.
COLOURS = [(200, 30, 30), (20, 20, 60), (240, 240, 200), (30, 120, 30), (150, 150, 150)]


def _bad_videos(folder: Path) -> dict[str, bytes]:
    """Tiny broken or over-limit videos (320x180, a few seconds), encoded with PyAV."""
    out = {}
    out["video_ok"] = video_bytes(folder / "ok.mp4", [(c, 1.0) for c in COLOURS[:3]])
    out["video_ok_webm"] = video_bytes(folder / "ok.webm", [(c, 1.0) for c in COLOURS])
    out["video_long"] = video_bytes(folder / "long.mp4", [(COLOURS[4], MAX_VIDEO_SECONDS + 5)], fps=5)
    out["video_shots"] = video_bytes(folder / "shots.mp4", [(c, 0.4) for c in COLOURS * 2], fps=10)
    out["video_ffv1"] = video_bytes(folder / "ffv1.mkv", [(COLOURS[0], 1.0)], codec="ffv1")
    out["video_mpeg2"] = video_bytes(folder / "mpeg2.mkv", [(COLOURS[0], 1.0)], codec="mpeg2video")
    out["video_black"] = video_bytes(folder / "black.mp4", [((0, 0, 0), 2.0)])
    out["audio_mkv"] = audio_only_mkv(folder / "audio.mkv")
    return out


def _detail(r: Any) -> str:
    assert r.headers.get("content-type", "").startswith("application/json"), (r.status_code, r.text[:200])
    detail = r.json().get("detail")
    assert isinstance(detail, str) and 10 <= len(detail) <= 600, r.text[:300]
    return detail


def _assert_nothing_stored(api: Api, before: Stored) -> None:
    after = api.stored()
    assert after == before, f"a refused request changed what is stored:\nbefore {before}\nafter  {after}"
    assert files_under(api.tmp) == (), f"temporary files left behind: {files_under(api.tmp)}"
    assert not TRAVERSAL_TARGET.exists(), f"a user file name was used as a path: {TRAVERSAL_TARGET}"


def _refused(
    api: Api, record: Callable[..., None], case: str, send: Callable[[], Any], status: int | tuple[int, ...], words: str
) -> None:
    before = api.stored()
    t0 = time.perf_counter()
    r = send()
    ms = (time.perf_counter() - t0) * 1000
    statuses = (status,) if isinstance(status, int) else status
    assert r.status_code in statuses, f"{case}: {r.status_code} {r.text[:300]}"
    detail = _detail(r)
    assert words.lower() in detail.lower(), f"{case}: unclear message {detail!r}"
    for secret_place in (str(api.tmp), str(api.app.state.settings.data_dir), "/tmp/", str(Path.cwd())):
        assert secret_place not in detail, f"{case}: the message reveals a server path: {detail!r}"
    _assert_nothing_stored(api, before)
    record(case, f"{r.status_code} nothing stored", ms=round(ms, 1), detail=detail[:120])


# ------------------------------------------------------------------------------------- images
IMAGE_CASES: dict[str, tuple[Callable[[dict], tuple[str, bytes, str]], int | tuple[int, ...], str]] = {
    "image: zero bytes": (lambda m: ("p.jpg", b"", "image/jpeg"), 400, "empty"),
    "image: truncated JPEG (first half)": (lambda m: ("p.jpg", truncated(m["jpeg"]), "image/jpeg"), 400, "truncated"),
    "image: truncated JPEG (first 300 B)": (lambda m: ("p.jpg", m["jpeg"][:300], "image/jpeg"), 400, "corrupt"),
    "image: truncated PNG (first half)": (lambda m: ("p.png", truncated(m["png"]), "image/png"), 400, "corrupt"),
    "image: truncated PNG (signature + 20 B)": (lambda m: ("p.png", m["png"][:28], "image/png"), 400, "corrupt"),
    "image: 50,000 x 50,000 PNG bomb": (lambda m: ("bomb.png", png_bomb(50_000, 50_000), "image/png"), 413,
                                        "too large"),
    "image: SVG with script posing as JPEG": (lambda m: ("cat.jpg", SVG, "image/jpeg"), 415, "not a supported image"),
    "image: SVG as image/svg+xml": (lambda m: ("cat.svg", SVG, "image/svg+xml"), 415, "not a supported image"),
    "image: HTML posing as PNG": (lambda m: ("cat.png", HTML, "image/png"), 415, "not a supported image"),
    "image: shell script posing as JPEG": (lambda m: ("cat.jpg", SCRIPT, "image/jpeg"), 415, "not a supported image"),
    "image: GIF/JavaScript polyglot": (lambda m: ("cat.gif", JS_AS_GIF, "image/gif"), (400, 415), "image"),
    "image: audio posing as JPEG": (lambda m: ("cat.jpg", m["ogg"], "image/jpeg"), 415, "not a supported image"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(IMAGE_CASES))
def test_bad_images_are_refused(api: Api, media: dict, record: Callable[..., None], case: str) -> None:
    make, status, words = IMAGE_CASES[case]
    name, data, ctype = make(media)
    _refused(api, record, case, lambda: api.client.post("/recommend", files={"image": (name, data, ctype)}), status,
             words)  # fmt: skip


# -------------------------------------------------------------------------------------- audio
AUDIO_CASES: dict[str, tuple[Callable[[dict], tuple[str, Any, str]], int | tuple[int, ...], str]] = {
    "audio: zero bytes": (lambda m: ("a.ogg", b"", "audio/ogg"), 400, "empty"),
    "audio: corrupt Ogg (magic + garbage)": (lambda m: ("a.ogg", b"OggS" + b"\x00garbage" * 500, "audio/ogg"), 400,
                                             "cannot decode"),
    "audio: corrupt WAV (header + random bytes)": (
        lambda m: ("a.wav", b"RIFF\xff\xff\x00\x00WAVEjunk" + bytes(range(256)) * 40, "audio/wav"), 400,
        "cannot decode"),
    "audio: truncated Ogg (first 10%)": (lambda m: ("a.ogg", truncated(m["ogg"], 0.1), "audio/ogg"), (400, 422),
                                         "audio"),
    "audio: truncated FLAC (first 5%)": (lambda m: ("a.flac", truncated(m["flac"], 0.05), "audio/flac"), (400, 422),
                                         "audio"),
    "audio: silent 5 s": (lambda m: ("a.wav", wav_bytes(5.0, silent=True), "audio/wav"), 422, "no usable"),
    "audio: 0.5 s": (lambda m: ("a.wav", wav_bytes(0.5), "audio/wav"), 422, "at least 2 s"),
    "audio: 3 h FLAC (real, 0.3 MB)": (lambda m: ("long.flac", m["flac_3h"], "audio/flac"), 413, "10800.0 s long"),
    "audio: 3 h WAV (real sparse file, 173 MB)": (
        lambda m: ("long.wav", m["wav_3h"].open("rb"), "audio/wav"), 413, "upload limit"),
    "audio: WAV header claiming 3 h, 1 s of data": (
        lambda m: ("a.wav", wav_header(3 * 3600, tone_pcm16(1.0)), "audio/wav"), 422, "at least 2 s"),
    "audio: WAV header claiming 3 h, no data": (lambda m: ("a.wav", wav_header(3 * 3600), "audio/wav"), 413,
                                               "10800.0 s long"),
    "audio: unsupported codec (WAV format tag 0xBEEF)": (
        lambda m: ("a.wav", wav_header(4.0, tone_pcm16(4.0), fmt_tag=0xBEEF), "audio/wav"), (400, 415), "audio"),
    "audio: unsupported codec (MIDI)": (lambda m: ("a.mid", midi_bytes(), "audio/midi"), 415,
                                        "not a supported audio file"),
    "audio: MP4 with video only": (lambda m: ("a.m4a", m["mp4_video"], "audio/mp4"), (400, 415), "no audio stream"),
    "audio: mislabelled PNG (song.mp3, audio/mpeg)": (lambda m: ("song.mp3", m["png"], "audio/mpeg"), 415,
                                                      "not a supported audio file"),
    "audio: mislabelled JPEG (song.wav, audio/wav)": (lambda m: ("song.wav", m["jpeg"], "audio/wav"), 415,
                                                      "not a supported audio file"),
    "audio: mislabelled text (song.ogg, audio/ogg)": (lambda m: ("song.ogg", b"la la la\n" * 300, "audio/ogg"), 415,
                                                      "not a supported audio file"),
    "audio: HTML posing as MP3": (lambda m: ("song.mp3", HTML, "audio/mpeg"), 415, "not a supported audio file"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(AUDIO_CASES))
def test_bad_audio_is_refused(api: Api, media: dict, record: Callable[..., None], case: str) -> None:
    make, status, words = AUDIO_CASES[case]
    name, data, ctype = make(media)
    try:
        _refused(
            api,
            record,
            case,
            lambda: api.client.post("/tracks", files={"audio": (name, data, ctype)}, headers=AUTH),
            status,
            words,
        )
    finally:
        if hasattr(data, "close"):
            data.close()  # fmt: skip


# -------------------------------------------------------------------------------------- video
VIDEO_CASES: dict[str, tuple[Callable[[dict], tuple[str, Any, str]], int | tuple[int, ...], str]] = {
    "video: zero bytes": (lambda m: ("v.mp4", b"", "video/mp4"), 400, "empty"),
    "video: text posing as MP4": (lambda m: ("v.mp4", b"not a video\n" * 400, "video/mp4"), 415,
                                  "not a supported video"),
    "video: JPEG posing as MP4": (lambda m: ("v.mp4", m["jpeg"], "video/mp4"), 415, "not a supported"),
    "video: HTML posing as WebM": (lambda m: ("v.webm", HTML, "video/webm"), 415, "not a supported video"),
    "video: truncated MP4 (first half)": (lambda m: ("v.mp4", truncated(m["video_ok"]), "video/mp4"), 400,
                                          "truncated"),
    "video: truncated MP4 (first 64 B)": (lambda m: ("v.mp4", m["video_ok"][:64], "video/mp4"), 400, "truncated"),
    "video: truncated WebM (first half)": (lambda m: ("v.webm", truncated(m["video_ok_webm"]), "video/webm"), 400,
                                           "truncated"),
    "video: unsupported codec (FFV1 in MKV)": (lambda m: ("v.mkv", m["video_ffv1"], "video/x-matroska"), 415,
                                               "unsupported video codec 'ffv1'"),
    "video: unsupported codec (MPEG-2 in MKV)": (lambda m: ("v.mkv", m["video_mpeg2"], "video/x-matroska"), 415,
                                                 "unsupported video codec"),
    "video: no video stream (Opus in MKV)": (lambda m: ("v.mkv", m["audio_mkv"], "video/x-matroska"), 422,
                                             "no video stream"),
    "video: audio file (Ogg song)": (lambda m: ("v.ogg", m["ogg"], "audio/ogg"), 415, "not a supported video"),
    "video: every frame black": (lambda m: ("v.mp4", m["video_black"], "video/mp4"), 422, "black"),
    "video: too long (15 s, limit 10 s)": (lambda m: ("v.mp4", m["video_long"], "video/mp4"), 413,
                                           "PHOTOSCORE_MAX_VIDEO_SECONDS"),
    "video: too many shots (10, limit 8)": (lambda m: ("v.mp4", m["video_shots"], "video/mp4"), 422,
                                            "PHOTOSCORE_MAX_VIDEO_SHOTS"),
    "video: too large (4 MB, limit 3 MB)": (lambda m: ("v.mp4", m["video_ok"] + b"\0" * 4_000_000, "video/mp4"), 413,
                                            "PHOTOSCORE_MAX_VIDEO_MB"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(VIDEO_CASES))
def test_bad_videos_are_refused(api: Api, media: dict, record: Callable[..., None], case: str) -> None:
    make, status, words = VIDEO_CASES[case]
    name, data, ctype = make(media)
    _refused(api, record, case, lambda: api.client.post("/soundtrack", files={"video": (name, data, ctype)}), status,
             words)  # fmt: skip


def test_a_good_video_after_the_bad_ones_still_works(api: Api, media: dict) -> None:
    r = api.client.post("/soundtrack", files={"video": ("ok.mp4", media["video_ok"], "video/mp4")},
                        params={"min_scene_seconds": 0.5, "max_songs": 2})  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["video"]["shots"] == 3


# ----------------------------------------------------------------------- content type and size
def _raw(path: str, body: bytes, ctype: str, **kw: Any) -> Callable[[Api], Any]:
    return lambda api: api.client.post(path, content=body, headers={"Content-Type": ctype, **kw.get("headers", {})})


def _stream(path: str, mb: int) -> Callable[[Api], Any]:
    """A multipart upload without Content-Length (chunked): the cap must hold while streaming."""

    def send(api: Api) -> Any:
        head = (b'--b\r\nContent-Disposition: form-data; name="audio"; filename="x.wav"\r\n'
                b"Content-Type: audio/wav\r\n\r\n")  # fmt: skip
        field = "image" if path == "/recommend" else "audio"
        head = head.replace(b'name="audio"', f'name="{field}"'.encode())

        def body() -> Iterator[bytes]:
            yield head
            for _ in range(mb):
                yield b"\0" * 1_000_000
            yield b"\r\n--b--\r\n"

        ctype = {"Content-Type": "multipart/form-data; boundary=b"}
        return api.client.post(path, content=body(), headers={**ctype, **AUTH})

    return send


TYPE_CASES: dict[str, tuple[Callable[[Api], Any], int | tuple[int, ...], str]] = {
    "content type: JSON instead of multipart (recommend)": (
        lambda api: api.client.post("/recommend", json={"image": "http://example.com/x.jpg"}), 422, "image"),
    "content type: raw image/jpeg body (recommend)": (
        _raw("/recommend", photo_bytes(), "image/jpeg"), 422, "missing form field 'image'"),
    "content type: text/plain body (recommend)": (_raw("/recommend", b"image=x", "text/plain"), 422, "image"),
    "content type: form field instead of file (recommend)": (
        lambda api: api.client.post("/recommend", data={"image": "not a file"}), 422, "image"),
    "content type: multipart without boundary (recommend)": (
        _raw("/recommend", b"--x\r\n\r\n", "multipart/form-data"), 400, "boundary"),
    "content type: JSON instead of multipart (tracks)": (
        lambda api: api.client.post("/tracks", json={"audio": "aGVsbG8="}, headers=AUTH), 422, "audio"),
    "content type: urlencoded (tracks)": (
        lambda api: api.client.post("/tracks", data={"audio": "x", "title": "t"}, headers=AUTH), 422, "audio"),
    "content type: raw audio/ogg body (tracks)": (
        lambda api: api.client.post("/tracks", content=api.songs[0].path.read_bytes(),
                                    headers={"Content-Type": "audio/ogg", **AUTH}), 422, "missing form field 'audio'"),
    "content type: truncated multipart (tracks)": (
        _raw("/tracks", b'--b\r\nContent-Disposition: form-data; name="audio"; filename="a.ogg"\r\n\r\nOggS',
             "multipart/form-data; boundary=b", headers=AUTH), (400, 422), "audio"),
    "size: 25 MB image (limit 20 MB, declared length)": (
        lambda api: api.client.post("/recommend", files={"image": ("p.jpg", b"\xff\xd8\xff" + b"\0" * 25_000_000,
                                                                   "image/jpeg")}), 413, "upload limit"),
    "size: 25 MB image, chunked without length": (_stream("/recommend", 25), 413, "upload limit"),
    "size: 25 MB audio, chunked without length": (_stream("/tracks", 25), 413, "upload limit"),
    "metadata: title of 10,000 characters": (
        lambda api: api.client.post("/tracks", files={"audio": ("a.wav", wav_bytes(3.0, seed=9), "audio/wav")},
                                    data={"title": "t" * 10_000}, headers=AUTH), 422, "title"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(TYPE_CASES))
def test_wrong_content_type_and_size_are_refused(api: Api, record: Callable[..., None], case: str) -> None:
    send, status, words = TYPE_CASES[case]
    _refused(api, record, case, lambda: send(api), status, words)


# ------------------------------------------------------------------------------------ file names
HOSTILE_NAMES = {
    "path traversal": f"../../../../../../..{TRAVERSAL_TARGET}",
    "absolute path": str(TRAVERSAL_TARGET),
    "windows traversal": "..\\..\\..\\Windows\\System32\\drivers\\etc\\hosts.wav",
    "unicode (RTL override, emoji, NFD)": "\u202egnp.wav\U0001f3b5 Cafe\u0301 \u0645\u0648\u0633\u064a\u0642\u0649.wav",
    "very long (1,000 characters)": "a" * 1000 + ".wav",
    "very long (5,000 characters)": "a" * 5000 + ".wav",
    "NUL and CR/LF inside": "evil\x00name\r\nX-Injected: 1.wav",
    "dot files": "../.bashrc",
}


MULTIPART_HEADER_LIMIT = 4096  # python-multipart's longest part header line: longer names are 400


def _too_long_for_multipart(name: str) -> bool:
    return len(name.encode()) > MULTIPART_HEADER_LIMIT


@pytest.mark.parametrize("kind", list(HOSTILE_NAMES))
def test_hostile_file_name_with_bad_content_is_refused(api: Api, record: Callable[..., None], kind: str) -> None:
    name = HOSTILE_NAMES[kind]
    huge = _too_long_for_multipart(name)
    _refused(api, record, f"file name ({kind}), bad audio",
             lambda: api.client.post("/tracks", files={"audio": (name, b"not audio at all" * 20, "audio/wav")},
                                     headers=AUTH),
             400 if huge else 415, "multipart" if huge else "not a supported audio file")  # fmt: skip
    _refused(api, record, f"file name ({kind}), bad image",
             lambda: api.client.post("/recommend", files={"image": (name, SVG, "image/png")}),
             400 if huge else 415, "multipart" if huge else "not a supported image")  # fmt: skip


@pytest.mark.parametrize("kind", list(HOSTILE_NAMES))
def test_hostile_file_name_with_good_content_is_never_a_path(api: Api, record: Callable[..., None], kind: str) -> None:
    """Good audio under a hostile name is accepted (names are not paths): the file is stored only
    under its content hash, the title derived from the name is cleaned and bounded, and deleting
    the track leaves the store exactly as it was."""
    name = HOSTILE_NAMES[kind]
    data = wav_bytes(3.0, seed=100 + list(HOSTILE_NAMES).index(kind))
    if _too_long_for_multipart(name):  # refused by the multipart parser before any route code
        _refused(api, record, f"file name ({kind}), good audio",
                 lambda: api.client.post("/tracks", files={"audio": (name, data, "audio/wav")}, headers=AUTH), 400,
                 "multipart")  # fmt: skip
        return
    before = api.stored()
    r = api.client.post("/tracks", files={"audio": (name, data, "audio/wav")}, headers=AUTH)
    assert r.status_code == 201, r.text
    track = r.json()
    title = track["title"]
    assert len(title) <= 200 and "/" not in title and not any(ord(c) < 32 for c in title), title
    assert not set(title) & set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"), f"bidi control in {title!r}"
    added = set(api.stored().audio_files) - set(before.audio_files)
    digest = sha256_of(data)
    assert added == {f"{digest[:2]}/{digest[2:4]}/{digest}.wav"}, added
    assert not TRAVERSAL_TARGET.exists()
    assert api.client.delete(f"/tracks/{track['id']}", headers=AUTH).status_code == 204
    after = api.stored()
    assert (after.tracks, after.clips, after.audio_files, after.index_clips, after.index_vectors) == (
        before.tracks, before.clips, before.audio_files, before.index_clips, before.index_vectors,
    )  # fmt: skip
    assert after.events == before.events + 2  # the add and the delete, as the replicas need
    record(f"file name ({kind}), good audio", "201 then 204; stored only under its hash", title=title[:60])


# ------------------------------------------------------------------------------- query params
QUERY_CASES = [
    ("POST", "/recommend?n=abc"), ("POST", "/recommend?n=0"), ("POST", "/recommend?n=101"),
    ("POST", "/recommend?n=-1"), ("POST", "/recommend?n=1.5"), ("POST", "/recommend?n="),
    ("POST", "/recommend?n=1e3"), ("POST", "/recommend?n=%00"), ("POST", "/recommend?n=99999999999999999999999"),
    ("GET", "/tracks?limit=0"), ("GET", "/tracks?limit=201"), ("GET", "/tracks?limit=abc"),
    ("GET", "/tracks?offset=-1"), ("GET", "/tracks?offset=9223372036854775808"), ("GET", "/tracks?q=" + "x" * 201),
    ("GET", "/tracks/abc"), ("GET", "/tracks/0"), ("GET", "/tracks/-1"), ("GET", "/tracks/1.5"),
    ("GET", f"/tracks/{2**70}"), ("GET", "/tracks/%00/audio"), ("DELETE", "/tracks/abc"), ("DELETE", "/tracks/0"),
    ("DELETE", f"/tracks/{2**64}"), ("DELETE", "/tracks/1%20OR%201=1"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "url"), QUERY_CASES)
def test_malformed_parameters_are_422(api: Api, record: Callable[..., None], method: str, url: str) -> None:
    kw: dict[str, Any] = {"headers": AUTH}
    if method == "POST":
        kw["files"] = {"image": ("p.jpg", photo_bytes(), "image/jpeg")}
    _refused(api, record, f"query: {method} {url[:60]}", lambda: api.client.request(method, url, **kw), 422,
             "parameter")  # fmt: skip


def test_sniffing_not_labels_decides(api: Api, record: Callable[..., None]) -> None:
    """Real Ogg Vorbis sent as `song.mp3` / audio/mpeg is stored as .ogg and served as audio/ogg;
    a real photo labelled text/plain is still a photo. Labels are never trusted either way."""
    before = api.stored()
    data = api.spare.path.read_bytes()
    r = api.client.post("/tracks", files={"audio": ("song.mp3", data, "audio/mpeg")}, headers=AUTH)
    assert r.status_code == 201, r.text
    added = set(api.stored().audio_files) - set(before.audio_files)
    assert [Path(f).name for f in added] == [f"{sha256_of(data)}.ogg"]
    audio = api.client.get(r.json()["audio_url"], headers={"Range": "bytes=0-3"})
    assert audio.status_code == 206 and audio.content == b"OggS" and audio.headers["content-type"] == "audio/ogg"
    assert api.client.delete(r.json()["audio_url"].removesuffix("/audio"), headers=AUTH).status_code == 204
    photo = api.client.post("/recommend", files={"image": ("notes.txt", photo_bytes(), "text/plain")})
    assert photo.status_code == 200
    after = api.stored()
    assert (after.tracks, after.audio_files, after.index_clips) == (
        before.tracks, before.audio_files, before.index_clips,
    )  # fmt: skip
    record("labels: Ogg sent as song.mp3; JPEG sent as text/plain", "201 stored as .ogg / 200: content sniffed")
