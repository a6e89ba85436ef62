"""Saliency pointing game of a CLIP model on held-out phantom slices (issue 4, item 5).

For every case (prompt, the structure it names, another structure the slice must show, slice kind)
and every held-out slice that shows both structures, the peak of the M2IB saliency map for the
prompt must lie on the named structure (within one demo token, 8 px, of it). Slices where the
structure is too small (< 32 px), covers more than half the slice, or is hidden by the slice's
rendering window do not count. M2IB runs with the settings the model's card recommends
(``medclipsam.demo.demo_pipeline_config``), as ``segment-series`` runs it.

Held-out sets: ``phantoms.training_slices(seed, 160)`` for each seed. The **report sets** are
826 060–826 065 (issue 24, item 9): chosen after the demo CLIP was shipped, scored once with it and
used for nothing else — no model, setting or test scene was picked on them. The sets before them
are kept for the record under what they now are: 424 243–424 247 (``SELECTION_SETS``), which the
ninth to twelfth rounds chose among CLIP runs on, and 424 242 and 424 248–424 252
(``SEEN_SETS``), the earlier report sets: two fine-tuned candidates failed the lung-tumour goal on
them (59 and 60 of 67) before the shipped CLIP 16 was trained, scored there and kept, so they were
seen before the choice and cannot measure it without bias (benchmarks/RESULTS.md, rounds ten to
twelve). The test (tests/test_demo_models.py) scores the report sets: a set of 9 slices, the
test's earliest one, cannot measure a rate of 0.9 (one slice is 0.11).

    python benchmarks/pointing_game.py [--clip SPEC] [--sets report|selection|seen|826060-826065]

Prints the hits per case and set, and last ``pointing <case>=<rate> ...`` over all sets.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Iterable, NamedTuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine  # noqa: E402

REPORT_SETS: tuple[int, ...] = (826_060, 826_061, 826_062, 826_063, 826_064, 826_065)
SELECTION_SETS: tuple[int, ...] = (424_243, 424_244, 424_245, 424_246, 424_247)
SEEN_SETS: tuple[int, ...] = (424_242, 424_248, 424_249, 424_250, 424_251, 424_252)   # seen before the choice
NAMED_SETS: dict[str, tuple[int, ...]] = {"report": REPORT_SETS, "selection": SELECTION_SETS, "seen": SEEN_SETS}
SLICES_PER_SET = 160
TOLERANCE_PX = 8          # one demo CLIP token
MIN_PX = 32               # half a token


class Case(NamedTuple):
    name: str
    prompt: str
    structure: str        # the structure the prompt names
    other: str            # another structure the slice must show
    kind: str             # phantom slice kind


CASES: tuple[Case, ...] = (
    Case("brain", "brain", "brain", "tumor", "mr-brain"),
    Case("lungs", "lungs", "lungs", "spine", "ct-chest"),
    Case("brain-tumor", "tumor", "tumor", "brain", "mr-brain"),
    Case("lung-tumor", "tumor", "tumor", "lungs", "ct-chest"),
    Case("left-lung", "left lung", "left lung", "right lung", "ct-chest"),
    Case("right-lung", "right lung", "right lung", "left lung", "ct-chest"),
)


def held_out_slices(seeds: Iterable[int], n: int = SLICES_PER_SET) -> list[Any]:
    """The held-out phantom slices of these sets, in order."""
    from medclipsam.phantoms import training_slices

    out: list[Any] = []
    for seed in seeds:
        out.extend(training_slices(int(seed), n))
    return out


def counts(s: Any, case: Case) -> bool:
    """Whether slice ``s`` takes part in ``case``."""
    if s.kind != case.kind or case.structure in s.hidden:
        return False
    m, o = np.asarray(s.mask(case.structure), bool), np.asarray(s.mask(case.other), bool)
    return bool(m.sum() >= MIN_PX and o.sum() >= MIN_PX and m.mean() <= 0.5)


def pointing_hits(clip: Any, slices: Iterable[Any], case: Case) -> list[bool]:
    """For each slice of ``slices`` that takes part in ``case``: whether the M2IB peak is on the structure."""
    from scipy.ndimage import binary_dilation

    from medclipsam.demo import demo_pipeline_config
    from medclipsam.saliency import compute_saliency, text_target

    cfg = demo_pipeline_config(clip).m2ib
    target = text_target(clip, case.prompt)
    hits: list[bool] = []
    for s in slices:
        if not counts(s, case):
            continue
        sal = compute_saliency(clip, np.asarray(s.rgb), target, "m2ib", cfg).saliency_map
        peak = np.unravel_index(int(np.argmax(sal)), sal.shape)
        hits.append(bool(binary_dilation(np.asarray(s.mask(case.structure), bool), iterations=TOLERANCE_PX)[peak]))
    return hits


def parse_sets(text: str) -> list[int]:
    """``"424242,424248-424252"`` → [424242, 424248, ..., 424252]; a name of ``NAMED_SETS``
    (``report``, ``selection``, ``seen``) stands for its seeds."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if part in NAMED_SETS:
            out.extend(NAMED_SETS[part])
            continue
        lo, sep, hi = part.partition("-")
        try:
            out.extend(range(int(lo), int(hi) + 1) if sep else [int(lo)])
        except ValueError:
            raise SystemExit(f"--sets takes seeds, ranges like 826060-826065 and the names {', '.join(NAMED_SETS)}; "
                             f"got {part!r}") from None
    if not out:
        raise SystemExit("--sets names no seed")
    return out


def main(argv: list[str] | None = None) -> int:
    from medclipsam.demo import DEMO_CLIP
    from medclipsam.models import load_clip

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clip", default=DEMO_CLIP, help="CLIP model spec (default: the shipped demo CLIP)")
    ap.add_argument("--sets", default="report",
                    help="held-out set seeds, e.g. 826060-826065, or report / selection / seen "
                         "(default: report, the sets never used for a choice)")
    ap.add_argument("--cases", default=",".join(c.name for c in CASES))
    args = ap.parse_args(argv)
    by_name = {c.name: c for c in CASES}
    unknown = [n for n in args.cases.split(",") if n not in by_name]
    if unknown:
        raise SystemExit(f"unknown case(s) {unknown}; known: {', '.join(by_name)}")
    cases = [by_name[n] for n in args.cases.split(",")]
    seeds = parse_sets(args.sets)

    print(f"machine: {machine()}")
    print(f"clip: {args.clip}; sets: {seeds}")
    clip = load_clip(args.clip)
    total: dict[str, list[bool]] = {c.name: [] for c in cases}
    for seed in seeds:
        slices = held_out_slices([seed])
        row = []
        for c in cases:
            h = pointing_hits(clip, slices, c)
            total[c.name].extend(h)
            row.append(f"{c.name} {sum(h)}/{len(h)}")
        print(f"set {seed}: " + "  ".join(row), flush=True)
    for c in cases:
        h = total[c.name]
        print(f"{c.name}: {sum(h)} of {len(h)} = {np.mean(h) if h else float('nan'):.3f}")
    print("pointing " + " ".join(f"{c.name}={np.mean(total[c.name]) if total[c.name] else float('nan'):.3f}"
                                 for c in cases))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
