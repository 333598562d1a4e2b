"""Screenshot the web page of a running PhotoScore server showing real recommendations.

    .venv/bin/python scripts/screenshot.py --url http://127.0.0.1:8000
    .venv/bin/python scripts/screenshot.py --url http://127.0.0.1:8000 \\
        --seed /usr/share/games/wesnoth/1.16/data/core/music/*.ogg --key "$KEY" \\
        --artist Wesnoth --license "GPL-2.0-or-later, from The Battle for Wesnoth"

Uploads a photo through the page (the file picker, as a person would), waits for the songs,
their players and the valence-arousal plot, highlights the best match and saves a PNG
(default docs/screenshot.png). `--seed` first adds audio files through `POST /tracks`.
Drives Debian's Chromium (/usr/bin/chromium) with Playwright; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
# Freely licensed photos shipped by Debian (mate-backgrounds, lomiri-wallpapers-20.04).
DEFAULT_PHOTOS = [
    "/usr/share/backgrounds/mate/nature/YellowFlower.jpg",
    "/usr/share/backgrounds/mate/nature/Garden.jpg",
    "/usr/share/backgrounds/mate/nature/Storm.jpg",
    "/usr/share/backgrounds/Fossa_by_Jasper_Roks.jpg",
]
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
    "--mute-audio",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8000", help="server base URL")
    p.add_argument("--image", type=Path, help="photo to upload (default: a Debian wallpaper photo)")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "screenshot.png")
    p.add_argument("--n", type=int, default=6, help="songs to ask for")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=900)
    p.add_argument("--viewport-only", action="store_true", help="capture the viewport, not the full page")
    p.add_argument("--chromium", default="/usr/bin/chromium")
    p.add_argument("--seed", nargs="*", type=Path, default=[], help="audio files to add first")
    p.add_argument("--key", help="API key for --seed")
    p.add_argument("--artist", help="artist for --seed files")
    p.add_argument("--album", help="album for --seed files")
    p.add_argument("--license", help="licence / attribution for --seed files")
    return p.parse_args(argv)


def seed(args: argparse.Namespace) -> None:
    if not args.key:
        sys.exit("--seed needs --key")
    with httpx.Client(base_url=args.url, timeout=600, headers={"X-API-Key": args.key}) as client:
        for path in args.seed:
            title = path.stem.replace("_", " ").replace("-", " ").strip().title()
            data = {k: v for k, v in {"title": title, "artist": args.artist, "album": args.album,
                                       "license": args.license}.items() if v}  # fmt: skip
            with path.open("rb") as fh:
                r = client.post("/tracks", files={"audio": (path.name, fh)}, data=data)
            if r.status_code not in (200, 201):
                sys.exit(f"adding {path} failed: HTTP {r.status_code} {r.text}")
            print(f"{'added' if r.status_code == 201 else 'known'}: {title} (id {r.json()['id']})")


def photo(args: argparse.Namespace, workdir: Path) -> Path:
    """The photo, downscaled to at most 1600 px so the upload is quick."""
    from PIL import Image

    source = args.image or next((Path(p) for p in DEFAULT_PHOTOS if Path(p).is_file()), None)
    if source is None:
        sys.exit("no photo: pass --image (or apt-get install mate-backgrounds)")
    out = workdir / f"{source.stem}.jpg"
    with Image.open(source) as img:
        img = img.convert("RGB")
        img.thumbnail((1600, 1600))
        img.save(out, "JPEG", quality=90)
    return out


def shoot(args: argparse.Namespace, image: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": args.width, "height": args.height})
        page.set_default_timeout(60_000)
        page.goto(args.url.rstrip("/") + "/")
        page.get_by_test_id("n-input").fill(str(args.n))
        with page.expect_response(lambda r: "/recommend" in r.url) as info:
            page.get_by_test_id("image-input").set_input_files(str(image))
        if info.value.status != 200:
            sys.exit(f"/recommend failed: HTTP {info.value.status} {info.value.text()}")
        rows = page.get_by_test_id("result-row")
        rows.first.wait_for()
        if rows.count() == 0:
            sys.exit("no recommendations: the catalogue is empty (use --seed)")
        # Let every player show its duration and position, then highlight the best match.
        page.wait_for_function(
            "() => [...document.querySelectorAll('[data-testid=result-audio]')].every(a => a.readyState >= 1)"
        )
        page.get_by_test_id("photo-preview").evaluate("img => img.decode()")
        page.evaluate("document.activeElement?.blur()")  # no focus ring on the "songs" field
        rows.first.hover()  # the hover highlights the best song's point on the plot
        args.out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(args.out), full_page=not args.viewport_only)
        browser.close()
    print(f"wrote {args.out}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.seed:
        seed(args)
    with tempfile.TemporaryDirectory() as tmp:
        shoot(args, photo(args, Path(tmp)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
