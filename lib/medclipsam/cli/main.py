"""Command line: ``medclipsam segment``, ``segment-series``, ``demo``, ``evaluate`` and ``check-weights``.

Each command is a module of this package with an ``add_parser`` and its ``cmd_*`` function; they
share :mod:`.common`. Module level imports stay light (``segment-series --list-series`` must not pay
for torch or the models): the heavy ones are inside the commands.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from .. import __version__
from ..errors import MedClipSamError
from . import check_weights, demo, segment, series
from .common import DEFAULT_CLIP, DEFAULT_SAM


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medclipsam", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"medclipsam {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    defaults = {"clip": DEFAULT_CLIP, "sam": DEFAULT_SAM}
    segment.add_parser(sub, defaults)
    series.add_parser(sub, defaults)
    demo.add_parser(sub)
    check_weights.add_parser(sub, defaults)
    segment.add_evaluate_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except MedClipSamError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
