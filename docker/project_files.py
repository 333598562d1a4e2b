"""Copy the files the installed `photoscore` distribution owns (its packages, metadata and
console script) under DEST, keeping their absolute paths (DEST/opt/photoscore/venv/...).

The image's builder stage lays exactly these over the dependency-only virtual environment in
the runtime stage, so a source edit never copies the GBs of dependencies again.
Run by path with the image's venv python:  python docker/project_files.py /opt/photoscore/project
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import sys


def main(dest: str) -> int:
    dist = importlib.metadata.distribution("photoscore")
    copied = 0
    for file in dist.files or []:
        path = os.path.realpath(dist.locate_file(file))
        if os.path.isfile(path):
            target = os.path.join(dest, path.lstrip("/"))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(path, target)
            copied += 1
    print(f"project_files: {copied} files of photoscore {dist.version} under {dest}")
    return 0 if copied else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
