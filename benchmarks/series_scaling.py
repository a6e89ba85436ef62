"""Memory and time of ``segment-series`` as the series grows (issue 3, item 7).

Writes a synthetic 512×512 CT series (DICOM, one file per slice) of 50, 100 and 200 slices and
segments each in a fresh process with the tiny random-weight models (their cost is not the point;
the engine's streaming is), every slice processed (presence gate off: the worst case), output
written as NIfTI. For each size it prints the child's peak RSS (``ru_maxrss``) and seconds; then
the growth of peak RSS per 100 slices and the engine's seconds per slice (least-squares slopes
over the three sizes, so start-up and model loading drop out).

The target: peak memory grows by no more than the label volume itself (512×512 uint8 = 26.2 MB
per 100 slices) plus a constant. Last line:
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

LABEL_MB_PER_100 = 512 * 512 * 100 / 1e6


def child(folder: str, out: str) -> None:
    """Run in a fresh process: segment the series, print one JSON line."""
    from medclipsam.config import PipelineConfig
    from medclipsam.models import load_clip, load_sam
    from medclipsam.pipeline import Pipeline
    from medclipsam.volume.engine import VolumeConfig, VolumePipeline
    from medclipsam.volume.inputs import open_volume
    from medclipsam.volume.outputs import write_result
    from medclipsam.volume.presence import PresenceConfig

    t0 = time.perf_counter()
    pipeline = Pipeline(load_clip("random:tiny"), load_sam("tiny:random"),
                        PipelineConfig.from_preset("v2", {"m2ib.layer": "2"}))
    src = open_volume(folder)
    t1 = time.perf_counter()
    result = VolumePipeline(pipeline, VolumeConfig(presence=PresenceConfig(enabled=False))).run(src, ["lesion"])
    write_result(out, result, src, series_description="tiny random", algorithm_version="bench")
    t2 = time.perf_counter()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"slices": result.slices, "processed": result.processed, "peak_rss_mb": peak_mb,
                      "engine_seconds": t2 - t1, "total_seconds": t2 - t0}))


def slope(xs: list[float], ys: list[float]) -> float:
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="50,100,200", help="slice counts (default 50,100,200)")
    ap.add_argument("--size", type=int, default=512, help="rows = columns (default 512)")
    ap.add_argument("--child", nargs=2, metavar=("FOLDER", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    from medclipsam.dicom.synthetic import write_synthetic_ct

    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"machine: {machine()}")
    print(f"series: synthetic CT {args.size}x{args.size}, slices {sizes}; tiny random models; gate off; NIfTI out")
    rows = []
    with tempfile.TemporaryDirectory(prefix="medclipsam-bench-") as tmp:
        for n in sizes:
            folder = Path(tmp) / f"ct{n}"
            write_synthetic_ct(folder, slices=n, size=args.size, seed=n)
            out = Path(tmp) / f"labels{n}.nii.gz"
            proc = subprocess.run([sys.executable, __file__, "--child", str(folder), str(out)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                sys.exit(f"the {n}-slice run failed:\n{proc.stderr[-3000:]}")
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append(r)
            print(f"slices={r['slices']:4d} processed={r['processed']:4d} peak_rss_mb={r['peak_rss_mb']:8.1f} "
                  f"engine_seconds={r['engine_seconds']:7.2f} total_seconds={r['total_seconds']:7.2f} "
                  f"seconds_per_slice={r['engine_seconds'] / r['slices']:.3f}")
    xs = [float(r["slices"]) for r in rows]
    growth = slope(xs, [r["peak_rss_mb"] for r in rows]) * 100.0
    per_slice = slope(xs, [r["engine_seconds"] for r in rows])
    print(f"label volume: {LABEL_MB_PER_100:.1f} MB per 100 slices; measured growth / label volume = "
          f"{growth / LABEL_MB_PER_100:.2f}")
    print(f"rss_growth_mb_per_100_slices={growth:.1f} seconds_per_slice={per_slice:.3f}")


if __name__ == "__main__":
    main()
