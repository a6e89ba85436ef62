"""``medclipsam segment-series``: a DICOM series (or NIfTI/NRRD volume) and text prompts → a label
volume or DICOM SEG in the source geometry. Parsing, model loading and printing only; the work is
done by :class:`medclipsam.volume.engine.VolumePipeline`."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from .. import __version__
from ..errors import InputError
from ..volume.messages import nothing_segmented_message
from .common import pick_device, warn


def add_parser(sub, defaults: dict[str, str]) -> None:
    ser = sub.add_parser(
        "segment-series", help="text-prompted zero-shot segmentation of a DICOM series or volume",
        description="Segment a DICOM series (folder, zip or files), a NIfTI/NRRD volume or a 2D image slice by "
                    "slice from one or more text prompts, skipping slices where the target is judged absent, and "
                    "write a label volume (.nii.gz, .nii, .nrrd) or a DICOM SEG (.dcm) in the source geometry. "
                    "The last line printed is 'slices=<n> processed=<n> gated=<n> seconds=<s>'.")
    ser.add_argument("input", nargs="+", help="a DICOM folder or .zip, DICOM files of one series, or a NIfTI/NRRD file")
    ser.add_argument("--prompt", action="append", help="the target in words; repeat for a multi-label output "
                                                       "(label i = i-th prompt)")
    ser.add_argument("--out", help="output file: .nii.gz, .nii, .nrrd or .dcm (DICOM SEG)")
    ser.add_argument("--series", metavar="UID", help="SeriesInstanceUID to use when the input holds several series")
    ser.add_argument("--stack", type=int, metavar="N",
                     help="the stack to read (1-based, as --list-series numbers them) when an enhanced multi-frame "
                          "file holds several at the same positions (diffusion directions, magnitude/phase, echoes)")
    ser.add_argument("--list-series", action="store_true", help="list the series (and their stacks) in the input "
                                                                "and exit")
    ser.add_argument("--window", default="auto",
                     help="rendering window: auto (from modality and prompt), ct-lung, ct-soft-tissue, ct-brain, "
                          "ct-bone, mr-percentile, dicom, as-stored")
    ser.add_argument("--presence-threshold", type=float, metavar="X",
                     help="slices whose image-text cosine similarity is below X are judged target-absent "
                          "(default: the model's calibration, else a series-relative split, announced)")
    ser.add_argument("--no-gate", action="store_true", help="process every slice (no presence gate)")
    ser.add_argument("--slices", metavar="START:STOP",
                     help="only these slices (0-based in sorted order, STOP exclusive)")
    ser.add_argument("--roi", metavar="X0,Y0,X1,Y1", help="only this pixel region of each slice (columns, rows)")
    ser.add_argument("--preset", default="v2", choices=["v1", "v2"], help="v1: gScoreCAM+CRF+box; v2: M2IB+Otsu+boxes")
    ser.add_argument("--clip", default=defaults["clip"], help="CLIP model (as for 'segment')")
    ser.add_argument("--sam", default=defaults["sam"], help="SAM model (as for 'segment')")
    ser.add_argument("--device", default="cpu", help="cpu or cuda")
    ser.add_argument("--batch-size", type=int, default=0, help="SAM slices per batch (0: CPU 1, CUDA fitted to memory)")
    ser.add_argument("--set", action="append", metavar="KEY=VALUE",
                     help="override a pipeline setting, e.g. m2ib.beta=2, consistency.keep=largest, "
                          "propagation.enabled=false, "
                          "presence.saliency_ratio=0, reorient=false (slices shown to the models as stored, "
                          "not in radiological orientation) (repeatable)")
    ser.add_argument("--report", metavar="FILE.json",
                     help="also write a JSON report (per-slice similarity, gate, masks)")
    ser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    ser.add_argument("--quiet", action="store_true", help="no progress bars")
    ser.set_defaults(func=cmd_segment_series)


def cmd_segment_series(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    if args.list_series:
        return list_series(args.input if len(args.input) > 1 else args.input[0])
    # imported here, not at module level: the CLI parser imports this module, and --list-series
    # must not pay for torch, the models, highdicom or SimpleITK
    from ..config import parse_overrides
    from ..dicom.seg import EmptySegmentationError
    from ..io import write_json
    from ..settings import resolve_settings
    from ..volume.config import VolumeConfig, parse_roi, parse_slice_range
    from ..volume.engine import VolumePipeline
    from ..volume.inputs import close_volume, open_volume
    from ..volume.outputs import check_output, write_result

    prompts = args.prompt or []
    if not prompts:
        raise InputError("no text prompt given; pass --prompt TEXT (repeat it for several labels)")
    if any(not p.strip() for p in prompts):
        raise InputError("a text prompt is empty; give the target in words, e.g. --prompt \"left lung\"")
    if not args.out:
        raise InputError("no output given; pass --out FILE.nii.gz | FILE.nrrd | FILE.dcm")
    overrides = parse_overrides(args.set)
    if args.presence_threshold is not None:
        overrides["presence.threshold"] = repr(args.presence_threshold)
    if args.no_gate:
        overrides["presence.enabled"] = "false"
    base_volume = VolumeConfig(slice_range=parse_slice_range(args.slices), roi=parse_roi(args.roi),
                               batch_size=args.batch_size)
    resolve_settings(args.preset, (), overrides, base_volume)     # a bad setting fails before any file is read
    if args.window != "auto":
        from ..volume.render import WINDOW_PRESETS

        WINDOW_PRESETS.get(args.window)        # an unknown name fails now, listing the presets
    device = pick_device(args.device)

    src = open_volume(args.input if len(args.input) > 1 else args.input[0], series_uid=args.series,
                      stack=args.stack)
    try:
        kind = check_output(args.out, src, overwrite=args.overwrite)
        if kind == "dicom-seg":     # a SEG the headers cannot give is refused before any slice is processed
            from ..dicom.seg import check_seg_sources
            from ..volume.outputs import slice_frames

            check_seg_sources(*slice_frames(src))
        print(f"input: {src.description}; {src.geometry.describe()}", file=sys.stderr)
        for note in src.notes:
            print(f"note: {note}", file=sys.stderr)
        from ..models import load_clip, load_sam
        from ..pipeline import Pipeline

        clip = load_clip(args.clip, device=device)
        sam = load_sam(args.sam, device=device)
        settings, setting_notes = resolve_settings(args.preset, (clip, sam), overrides, base_volume)
        for note in setting_notes:
            print(f"note: {note}", file=sys.stderr)
        pipeline = Pipeline(clip, sam, settings.pipeline)
        for w in pipeline.warnings():
            warn(w)
        engine = VolumePipeline(pipeline, settings.volume)
        result = engine.run(src, prompts, window=args.window, progress=not args.quiet)
        for w in dict.fromkeys(p.window for p in result.prompts):
            users = [f"{p.label}" for p in result.prompts if p.window == w]
            print(f"window (label {', '.join(users)}): {w.describe()}", file=sys.stderr)
        for note in result.notes[len(src.notes):]:
            print(f"note: {note}", file=sys.stderr)
        try:
            out, write_notes = write_result(args.out, result, src, series_description=pipeline.series_description(),
                                              algorithm_version=__version__)
        except EmptySegmentationError:
            print(_stats_line(result, t0))
            raise InputError(nothing_segmented_message(result)) from None
        for note in write_notes:
            print(f"note: {note}", file=sys.stderr)
        for p in result.prompts:
            added = len(p.propagation.added_slices)
            print(f"label {p.label} {p.name!r}: {p.voxels} voxels on "
                  f"{sum(r.found for r in p.records)} slices (presence: {p.gate.mode}"
                  + (f"; {added} added by propagation from a neighbouring slice" if added else "") + ")")
        print(f"output: {out} ({kind})")
        if args.report:
            report = {"tool": "medclipsam", "version": __version__, "command": "segment-series",
                      "input": [str(i) for i in args.input], "source": src.description, "output": str(out),
                      "models": pipeline.identity(), "warnings": pipeline.warnings(), "device": str(device),
                      "config": settings.pipeline.to_dict(), "volume_config": dataclasses.asdict(settings.volume),
                      "setting_notes": setting_notes, **result.summary()}
            print(f"report: {write_json(Path(args.report), report)}")
    finally:
        close_volume(src)
    print(_stats_line(result, t0))
    return 0


def list_series(inputs) -> int:
    """``--list-series``: the image series of a DICOM input, one a line, from the headers only.

    Imports pydicom and numpy and nothing heavier (no torch, models, highdicom or SimpleITK): a
    50-file folder lists in well under a second (benchmarks/list_series_speed.py)."""
    from ..dicom.scan import stack_lines
    from ..dicom.series import scan_series

    for s in scan_series(inputs):
        print(f"{s.series_uid or '(blank SeriesInstanceUID)'}  {s.modality}  {s.num_images} images  "
              f"{s.description!r}" + ("  localizer (a scout / projection image, not slices)" if s.localizer else "")
              + (f"  {len(s.stacks)} stacks (read one with --stack N):" if s.stacks else ""))
        for line in stack_lines(s.stacks, "    "):
            print(line)
    return 0


def _stats_line(result, t0: float) -> str:
    return (f"slices={result.slices} processed={result.processed} gated={result.gated} "
            f"seconds={time.perf_counter() - t0:.2f}")
