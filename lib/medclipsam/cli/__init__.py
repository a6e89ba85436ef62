"""The ``medclipsam`` command line (see :mod:`.main`)."""

from __future__ import annotations

from .common import DEFAULT_CLIP, DEFAULT_SAM
from .main import build_parser, main

__all__ = ["main", "build_parser", "DEFAULT_CLIP", "DEFAULT_SAM"]
