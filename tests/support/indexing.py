"""`photoscore index` run in process, and what it left: the catalogue and the index agree."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select

from app.core.catalogue import load_embeddings
from app.core.db import make_engine, make_session_factory
from app.core.models import Clip, Track
from app.core.vector_index import ClipIndex
from indexer.cli import add_arguments, run_index


def index(capsys: pytest.CaptureFixture[str], *argv: Any) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    code = run_index(parser.parse_args([str(a) for a in argv]))
    out, err = capsys.readouterr()
    return code, out, err


def catalogue(url: str, checkpoint_hash: str | None = None) -> dict[str, Any]:
    """Tracks by file name, their clip rows counted, and the clip embeddings of a checkpoint."""
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as s:
            tracks = {Path(t.source).name: t for t in s.scalars(select(Track))}
            rows = dict(s.execute(select(Clip.track_id, func.count()).group_by(Clip.track_id)).all())
            ids, embs = load_embeddings(s, checkpoint_hash=checkpoint_hash)
        return {"tracks": tracks, "clip_rows": rows, "ids": ids, "embs": embs}
    finally:
        engine.dispose()


def assert_consistent(url: str, index_dir: Path, checkpoint_hash: str) -> dict[str, Any]:
    """No partial track, no duplicate content, and the index holds exactly the DB's clips."""
    cat = catalogue(url, checkpoint_hash)
    shas = [t.sha256 for t in cat["tracks"].values()]
    assert len(shas) == len(set(shas))
    for t in cat["tracks"].values():
        assert cat["clip_rows"].get(t.id, 0) == t.clip_count > 0, t.title
    idx = ClipIndex.load(index_dir, expected_checkpoint_hash=checkpoint_hash)
    np.testing.assert_array_equal(idx.ids(), cat["ids"])
    if len(cat["ids"]):
        np.testing.assert_array_equal(idx.reconstruct(cat["ids"]), cat["embs"])
    assert idx.count == len(cat["ids"])  # the sidecar describes what the file holds
    return cat


def file_hash(path: Path) -> str:
    from app.core.files import file_sha256

    return file_sha256(path)


def group_exits(pgid: int, within_s: float) -> bool:
    """True once every process of group `pgid` has exited (polled for `within_s` seconds)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False
