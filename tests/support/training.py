"""Arguments for tiny real training runs on the shared data."""

from __future__ import annotations

from pathlib import Path

from tests.support import REPO


def tiny_train_args(run: Path, dataset_dir: Path, *settings: str) -> list[str]:
    """``photoscore train`` arguments: ``configs/tiny.yaml`` cut to 24 items per source and 8-s
    pieces, writing ``run`` with a private cache beside it, plus ``settings`` (``section.key=value``)."""
    args = ["train", "--config", str(REPO / "configs" / "tiny.yaml"), "--out", str(run), "--quiet"]
    for setting in (
        f"data.root={dataset_dir}",
        f"data.cache_dir={run.parent / f'{run.name}-cache'}",
        "data.max_items_per_source=24",
        "data.max_seconds=8",
        *settings,
    ):
        args += ["--set", setting]
    return args
