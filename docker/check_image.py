"""Build-time check of an image's installed PhotoScore: fail the build, not the first request.

Run by path (`python /src/docker/check_image.py`): sys.path then starts with docker/, not the
checkout, so the import below finds the installed package.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def main(torch_free: bool) -> int:
    """``torch_free``: PyTorch must not be installed at all (the CPU image; the GPU base has one)."""
    import app
    from app.api.main import STATIC_DIR, create_app
    from app.core.db import MIGRATIONS_DIR
    from app.core.settings import Settings

    problems = []
    if "site-packages" not in str(Path(app.__file__)):
        problems.append(f"app imported from {app.__file__}, not from the installed package")
    settings = Settings()
    if not settings.checkpoint.is_file():
        problems.append(f"shipped checkpoint missing: {settings.checkpoint}")
    else:  # the ONNX graphs beside it load and run on ONNX Runtime, without PyTorch
        from model.inference import Matcher

        Matcher.load(settings.checkpoint, "cpu").warmup()
    if torch_free and importlib.util.find_spec("torch") is not None:
        problems.append("PyTorch is installed: the runtime image serves with ONNX Runtime alone")
    if "torch" in sys.modules:
        problems.append("loading the model imported torch")
    if not (STATIC_DIR / "index.html").is_file():
        problems.append(f"web page missing: {STATIC_DIR / 'index.html'}")
    if not any((MIGRATIONS_DIR / "versions").glob("*.py")):
        problems.append(f"migrations missing under {MIGRATIONS_DIR}")
    create_app(settings)  # routes and OpenAPI build without loading the model
    for problem in problems:
        print(f"check_image: {problem}", file=sys.stderr)
    if not problems:
        print(f"check_image: ok ({settings.checkpoint.name}, {MIGRATIONS_DIR})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(torch_free="--torch-free" in sys.argv[1:]))
