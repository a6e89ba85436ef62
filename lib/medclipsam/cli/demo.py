"""``medclipsam demo``: the whole product on a phantom CT series with the shipped demo models.

Segments the committed phantom series (``sample-data/phantoms/ct_chest``; generated from its seed
when the package is installed without the repository) from a text prompt and writes, in ``--out``:
a DICOM SEG, a NIfTI label volume, a PNG montage of every stage on a few slices, and a JSON report.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from .. import __version__
from .common import pick_device, warn

REPO_SAMPLE = Path(__file__).resolve().parents[3] / "sample-data" / "phantoms" / "ct_chest"
DEMO_SERIES_SEED = 7


def add_parser(sub) -> None:
    demo = sub.add_parser("demo", help="run the demo: a phantom CT series, the demo models, SEG + NIfTI + montage",
                          description="Segment a phantom CT series with the shipped demo models from a text prompt "
                                      "and write a DICOM SEG, a NIfTI label, a PNG montage of every stage and a "
                                      "JSON report (demo models: synthetic training data, not for clinical use).")
    demo.add_argument("--prompt", action="append", help="target(s) in words (default: tumor)")
    demo.add_argument("--input", help="a DICOM series to use instead of the phantom series")
    demo.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    demo.add_argument("--clip", help="CLIP model (default: the shipped demo model)")
    demo.add_argument("--sam", help="SAM model (default: the shipped demo model)")
    demo.add_argument("--device", default="cpu", help="cpu or cuda")
    demo.add_argument("--slices-to-show", type=int, default=4, help="slices in the montage (default 4)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=cmd_demo)


def _input_series(args: argparse.Namespace, out: Path) -> tuple[Path, str]:
    if args.input:
        return Path(args.input), "given"
    if REPO_SAMPLE.is_dir():
        return REPO_SAMPLE, "the committed phantom series"
    from ..phantoms import ct_chest_series

    folder = out / "input"
    ct_chest_series(DEMO_SERIES_SEED).write_dicom(folder)
    return folder, f"generated from phantom seed {DEMO_SERIES_SEED} (the repository's sample-data is not here)"


def cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import DEMO_CLIP, DEMO_SAM, check_demo_models
    from ..io import ensure_writable_dir, write_json, write_png
    from ..models import load_clip, load_sam
    from ..pipeline import Pipeline
    from ..settings import resolve_settings
    from ..volume.config import VolumeConfig
    from ..volume.engine import VolumePipeline
    from ..volume.inputs import close_volume, open_volume
    from ..volume.montage import render_montage
    from ..volume.outputs import write_result

    t0 = time.perf_counter()
    prompts = [p.strip() for p in (args.prompt or ["tumor"])]
    if not all(prompts):
        from ..errors import InputError

        raise InputError("a text prompt is empty; give the target in words, e.g. --prompt tumor")
    if not (args.clip and args.sam):
        check_demo_models()
    device = pick_device(args.device)
    out = ensure_writable_dir(args.out)
    series_path, origin = _input_series(args, out)
    clip = load_clip(args.clip or DEMO_CLIP, device=device)
    sam = load_sam(args.sam or DEMO_SAM, device=device)
    settings, setting_notes = resolve_settings("v2", (clip, sam), {},
                                               VolumeConfig(inspect=max(0, args.slices_to_show)))
    for note in setting_notes:
        print(f"note: {note}", file=sys.stderr)
    pipeline = Pipeline(clip, sam, settings.pipeline)
    for w in pipeline.warnings():
        warn(w)
    src = open_volume(series_path)
    try:
        print(f"input: {src.description} ({origin}); {src.geometry.describe()}", file=sys.stderr)
        engine = VolumePipeline(pipeline, settings.volume)
        result = engine.run(src, prompts, progress=not args.quiet)
        for note in result.notes:
            print(f"note: {note}", file=sys.stderr)
        written = []
        nifti, _ = write_result(out / "labels.nii.gz", result, src, series_description=pipeline.series_description(),
                                algorithm_version=__version__)
        written.append(("label volume (NIfTI)", nifti))
        if result.labels.any():
            seg, notes = write_result(out / "seg.dcm", result, src, series_description=pipeline.series_description(),
                                      algorithm_version=__version__)
            for note in notes:
                print(f"note: {note}", file=sys.stderr)
            written.append(("DICOM SEG", seg))
        else:
            print("note: nothing was segmented, so no DICOM SEG (it cannot be empty)", file=sys.stderr)
        if result.details:
            written.append(("montage (PNG)", write_png(out / "montage.png",
                                                       render_montage(result, banner=pipeline.warnings()))))
        report = {"tool": "medclipsam", "version": __version__, "command": "demo", "input": str(series_path),
                  "source": src.description, "models": pipeline.identity(), "warnings": pipeline.warnings(),
                  "config": pipeline.config.to_dict(), "volume_config": dataclasses.asdict(settings.volume),
                  "setting_notes": setting_notes, **result.summary()}
        written.append(("report (JSON)", write_json(out / "report.json", report)))
    finally:
        close_volume(src)
    for p in result.prompts:
        print(f"label {p.label} {p.name!r}: {p.voxels} voxels on {sum(r.found for r in p.records)} slices")
    for what, path in written:
        print(f"{what}: {path}")
    print(f"slices={result.slices} processed={result.processed} gated={result.gated} "
          f"seconds={time.perf_counter() - t0:.2f}")
    return 0
