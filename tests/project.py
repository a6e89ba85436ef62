"""The project's own scripts as modules, for tests (``training/`` and ``benchmarks/`` are not packages)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def project_module(folder: str, name: str) -> ModuleType:
    """Import ``<project>/<folder>/<name>.py`` (e.g. ``project_module("benchmarks", "_reference")``)."""
    sys.path.insert(0, str(ROOT / folder))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)
