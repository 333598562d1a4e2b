"""`photoscore soundtrack VIDEO [--url SERVER]`: a video's cue sheet from a running service.

The video is streamed to `POST /soundtrack` (never read whole into memory) and the cue sheet is
printed as the service answered it (JSON, or M3U8/XSPF with `--format`). `--preview FILE` also
writes the soundtrack as Ogg/Opus, rendered from that cue sheet by `POST /soundtrack/preview`
(the video is not uploaded twice). Standard library only: the client needs no extra package.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import urlencode
from urllib.request import Request, urlopen

from app.cli.subcommand import add_subcommand

DEFAULT_URL = "http://127.0.0.1:8000"
_CHUNK = 1 << 20
_TYPES = {".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime", ".webm": "video/webm",
          ".mkv": "video/x-matroska"}  # fmt: skip


def add_soundtrack_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = add_subcommand(
        subparsers,
        "soundtrack",
        help="print the cue sheet (scenes -> songs) a running service plans for a video",
        doc=__doc__,
        handler=run_soundtrack,
    )
    parser.add_argument("video", type=Path, help="MP4, MOV, MKV or WebM file")
    parser.add_argument(
        "--url", default=os.environ.get("PHOTOSCORE_URL", DEFAULT_URL), help="the service (PHOTOSCORE_URL)"
    )
    parser.add_argument("--api-key", default=os.environ.get("PHOTOSCORE_API_KEY"), help="when reads need a key")
    parser.add_argument("--min-scene-seconds", type=float, help="shots shorter than this merge (default 3)")
    parser.add_argument("--max-songs", type=int, help="at most this many songs (calm scenes share one)")
    parser.add_argument("--mood", action="append", help="happier, sadder, calmer, more energetic (repeatable)")
    parser.add_argument("--smoothness", type=float, help="VA-jump penalty between songs (default 1)")
    parser.add_argument("--format", choices=["json", "m3u8", "xspf"], default="json", help="what to print")
    parser.add_argument("--preview", type=Path, metavar="FILE", help="also write the soundtrack as Ogg/Opus")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the answer")
    return parser


def _multipart(path: Path, boundary: str) -> tuple[Iterator[bytes], int]:
    """The multipart body streamed from the file, and its length."""
    name = path.name.replace('"', "_").replace("\r", "_").replace("\n", "_")
    ctype = _TYPES.get(path.suffix.lower(), "application/octet-stream")
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="video"; filename="{name}"\r\n'
        f"Content-Type: {ctype}\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def chunks() -> Iterator[bytes]:
        yield head
        with path.open("rb") as f:
            while block := f.read(_CHUNK):
                yield block
        yield tail

    return chunks(), len(head) + path.stat().st_size + len(tail)


def _call(req: Request, timeout: float) -> bytes:
    with urlopen(req, timeout=timeout) as response:  # noqa: S310 - the user's own service URL
        return response.read()


def _detail(exc: HTTPError) -> str:
    try:
        return str(json.loads(exc.read().decode("utf-8", "replace"))["detail"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {exc.code} {exc.reason}"


def run_soundtrack(args: argparse.Namespace) -> int:
    if not args.video.is_file():
        print(f"photoscore soundtrack: no such file: {args.video}", file=sys.stderr)
        return 2
    params: dict[str, Any] = {"format": args.format}
    for key in ("min_scene_seconds", "max_songs", "smoothness"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    query = urlencode([*params.items(), *(("mood", m) for m in args.mood or [])])
    base = args.url.rstrip("/")
    boundary = uuid.uuid4().hex
    body, length = _multipart(args.video, boundary)
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}", "Content-Length": str(length)}
    if args.api_key:
        headers["X-API-Key"] = args.api_key
    try:
        answer = _call(Request(f"{base}/soundtrack?{query}", data=body, headers=headers, method="POST"), args.timeout)
        if args.preview is not None:
            sheet = answer
            if args.format != "json":  # the preview renders from the JSON cue sheet
                params["format"] = "json"
                body, length = _multipart(args.video, boundary)
                url = f"{base}/soundtrack?{urlencode([*params.items(), *(('mood', m) for m in args.mood or [])])}"
                sheet = _call(Request(url, data=body, headers=headers, method="POST"), args.timeout)
            json_headers = {
                "Content-Type": "application/json",
                **{k: v for k, v in headers.items() if k == "X-API-Key"},
            }
            audio = _call(
                Request(f"{base}/soundtrack/preview", data=sheet, headers=json_headers, method="POST"), args.timeout
            )
            args.preview.write_bytes(audio)
    except HTTPError as exc:
        print(f"photoscore soundtrack: {exc.code}: {_detail(exc)}", file=sys.stderr)
        return 1
    except (URLError, OSError) as exc:
        print(f"photoscore soundtrack: cannot reach {base}: {getattr(exc, 'reason', exc)}", file=sys.stderr)
        return 2
    if args.format == "json":
        print(json.dumps(json.loads(answer), ensure_ascii=False, indent=2))
    else:
        sys.stdout.write(answer.decode("utf-8"))
    return 0
