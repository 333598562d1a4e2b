"""The repository's scripts/ (not a package) loaded as modules, for tests that use their code."""

from __future__ import annotations

import importlib.util
from types import ModuleType

from tests.support import REPO


def load_script(name: str) -> ModuleType:
    """`scripts/<name>.py` as a module (its `if __name__ == "__main__"` part does not run)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None, f"scripts/{name}.py not found"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
