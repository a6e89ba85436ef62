"""Memory and time of ``segment-series`` as the series grows (issue 3, item 7).

Writes a synthetic 512×512 CT series (DICOM, one file per slice) of 50, 100 and 200 slices and
segments each in a fresh process with the tiny random-weight models (their cost is not the point;
the engine's streaming is), every slice processed (presence gate off: the worst case), output
written as NIfTI. ``--clip/--sam/--device`` run the same with other models, e.g. the full-size
random-init BiomedCLIP and SAM ViT-B on a GPU (``--device cuda --clip random:biomedclip --sam
vit_b:random --set m2ib.layer=9``): then the seconds per slice are the engine's GPU throughput (bf16
autocast, batched similarity, SAM batches fitted to free memory) and the peak GPU memory is printed
too. ``--format seg`` writes a DICOM SEG instead (no SimpleITK needed). ``--gate on`` keeps the
presence gate on (what a user gets): the engine's seconds per stage then show what each stage costs
on the slices it is run on (SAM only where saliency found the target), e.g. ``--sizes 300 --gate on
--clip random:biomedclip --sam litemedsam --set m2ib.layer=9`` for a 300-slice CT with the default SAM.
For each size it prints the child's peak RSS (``ru_maxrss``), seconds and the engine's seconds per
stage; then
the growth of peak RSS per 100 slices and the engine's seconds per slice (least-squares slopes
over the sizes, so start-up and model loading drop out; with a single size, the seconds per slice of
that run).

The target: peak memory grows by no more than the label volume itself (512×512 uint8 = 26.2 MB
per 100 slices; rows × columns × 100 bytes for other ``--size``) plus a constant. Last line:
``rss_growth_mb_per_100_slices=<x> seconds_per_slice=<y>``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine  # noqa: E402


def child(folder: str, out: str, opts: dict) -> None:
    """Run in a fresh process: segment the series, print one JSON line."""
    import torch

    from medclipsam.models import load_clip, load_sam
    from medclipsam.pipeline import Pipeline
    from medclipsam.settings import resolve_settings
    from medclipsam.volume.config import VolumeConfig
    from medclipsam.volume.engine import VolumePipeline
    from medclipsam.volume.inputs import open_volume
    from medclipsam.volume.outputs import write_result
    from medclipsam.volume.presence import PresenceConfig

    t0 = time.perf_counter()
    device = opts["device"]
    clip, sam = load_clip(opts["clip"], device=device), load_sam(opts["sam"], device=device)
    settings, _ = resolve_settings("v2", (clip, sam), opts["overrides"],
                                   VolumeConfig(presence=PresenceConfig(enabled=opts.get("gate", False))))
    pipeline = Pipeline(clip, sam, settings.pipeline)
    src = open_volume(folder)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t1 = time.perf_counter()
    result = VolumePipeline(pipeline, settings.volume).run(src, ["lesion"])
    write_result(out, result, src, series_description="random weights", algorithm_version="bench")
    if cuda:
        torch.cuda.synchronize()
    t2 = time.perf_counter()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    gpu_mb = torch.cuda.max_memory_allocated() / 1e6 if cuda else 0.0
    record = result.prompts[0].records
    print(json.dumps({"slices": result.slices, "processed": result.processed, "peak_rss_mb": peak_mb,
                      "peak_gpu_mb": gpu_mb, "engine_seconds": t2 - t1, "total_seconds": t2 - t0,
                      "stages": {k: round(v, 3) for k, v in result.seconds.items()},
                      "saliency_slices": sum(r.passed_similarity for r in record),
                      "sam_slices": sum(r.present for r in record)}))


def slope(xs: list[float], ys: list[float]) -> float:
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="50,100,200", help="slice counts (default 50,100,200)")
    ap.add_argument("--size", type=int, default=512, help="rows = columns (default 512)")
    ap.add_argument("--clip", default="random:tiny", help="CLIP model (default: tiny random weights)")
    ap.add_argument("--sam", default="tiny:random", help="SAM model (default: tiny random weights)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--set", action="append", default=None, metavar="KEY=VALUE",
                    help="pipeline setting (default: m2ib.layer=2, for the tiny CLIP)")
    ap.add_argument("--format", choices=("nifti", "seg"), default="nifti", help="output written (default nifti)")
    ap.add_argument("--gate", choices=("on", "off"), default="off",
                    help="presence gate (default off: every slice through saliency and SAM, the worst case)")
    ap.add_argument("--child", nargs=3, metavar=("FOLDER", "OUT", "OPTS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.child[1], json.loads(args.child[2]))
        return
    from medclipsam.config import parse_overrides

    opts = {"clip": args.clip, "sam": args.sam, "device": args.device, "gate": args.gate == "on",
            "overrides": parse_overrides(args.set if args.set is not None else ["m2ib.layer=2"])}
    from medclipsam.phantoms.synthetic_ct import write_synthetic_ct

    sizes = [int(s) for s in args.sizes.split(",")]
    label_mb_per_100 = args.size * args.size * 100 / 1e6       # one byte per voxel
    print(f"machine: {machine()}")
    print(f"series: synthetic CT {args.size}x{args.size}, slices {sizes}; CLIP {args.clip}, SAM {args.sam} "
          f"on {args.device}; settings {opts['overrides']}; presence gate {args.gate}; {args.format} out")
    rows = []
    with tempfile.TemporaryDirectory(prefix="medclipsam-bench-") as tmp:
        for n in sizes:
            folder = Path(tmp) / f"ct{n}"
            write_synthetic_ct(folder, slices=n, size=args.size, seed=n)
            out = Path(tmp) / (f"labels{n}.nii.gz" if args.format == "nifti" else f"seg{n}.dcm")
            proc = subprocess.run([sys.executable, __file__, "--child", str(folder), str(out), json.dumps(opts)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                sys.exit(f"the {n}-slice run failed:\n{proc.stderr[-3000:]}")
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append(r)
            print(f"slices={r['slices']:4d} processed={r['processed']:4d} peak_rss_mb={r['peak_rss_mb']:8.1f} "
                  f"peak_gpu_mb={r['peak_gpu_mb']:8.1f} engine_seconds={r['engine_seconds']:7.2f} "
                  f"total_seconds={r['total_seconds']:7.2f} "
                  f"seconds_per_slice={r['engine_seconds'] / r['slices']:.3f}")
            stages = r["stages"]
            print("  stages (s): " + " ".join(f"{k}={v:.1f}" for k, v in stages.items() if k != "total") +
                  f"; saliency on {r['saliency_slices']} slices, SAM on {r['sam_slices']}")
            if "saliency" in stages and "sam" in stages:
                print(f"  sam_seconds / saliency_seconds = {stages['sam'] / max(stages['saliency'], 1e-9):.3f}")
    xs = [float(r["slices"]) for r in rows]
    if len(rows) > 1:
        growth = slope(xs, [r["peak_rss_mb"] for r in rows]) * 100.0
        per_slice = slope(xs, [r["engine_seconds"] for r in rows])
    else:
        print("one size: no growth slope (give --sizes with several counts for it)")
        growth, per_slice = float("nan"), rows[0]["engine_seconds"] / rows[0]["slices"]
    print(f"label volume: {label_mb_per_100:.1f} MB per 100 slices; measured growth / label volume = "
          f"{growth / label_mb_per_100:.2f}")
    print(f"rss_growth_mb_per_100_slices={growth:.1f} seconds_per_slice={per_slice:.3f}")


if __name__ == "__main__":
    main()
