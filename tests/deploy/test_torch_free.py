"""Serving and indexing run on ONNX Runtime: the processes that do them never load PyTorch.

Import-linter forbids the imports statically (pyproject.toml); this runs the real paths in a fresh
interpreter (the shipped model, `photoscore index` on a real song, the app's start-up, a
`POST /recommend`, a `POST /tracks`) and then looks at what that interpreter loaded.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tests.support import REPO
from tests.support.media import photo_bytes
from tests.support.songs import make_songs

SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    from fastapi.testclient import TestClient

    from app.api.main import create_app
    from app.cli import main
    from tests.support.service import add_song, service_settings
    from tests.support.songs import Song

    data_dir, song_path, photo = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    settings = service_settings(data_dir, settings_checkpoint := Path(sys.argv[4]))
    code = main(["index", str(song_path), "--database-url", settings.database_url,
                 "--index-dir", str(settings.index_dir), "--workers", "0", "--checkpoint", str(settings_checkpoint)])
    assert code == 0, code
    with TestClient(create_app(settings)) as client:
        r = client.post("/recommend", files={"image": ("p.jpg", photo.read_bytes(), "image/jpeg")})
        assert r.status_code == 200 and r.json()["results"], r.text
        song = Song(song_path, "Upload", "Tester", media_type="audio/wav", license="CC0-1.0")
        r = add_song(client, song, title="Upload again")
        assert r.status_code in (200, 201, 409), r.text
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision"))
    print("LOADED:", ",".join(loaded))
    """
)


def test_serving_and_indexing_never_import_torch(tmp_path: Path) -> None:
    from app.core.settings import DEFAULT_CHECKPOINT

    song = make_songs(tmp_path / "songs", seconds=6.0)[0]
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(photo_bytes("warm"))
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "data"), str(song.path), str(photo), str(DEFAULT_CHECKPOINT)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "LOADED: \n" in run.stdout, f"PyTorch was loaded while serving/indexing: {run.stdout[-500:]}"
