"""Time of ``medclipsam segment-series INPUT --list-series`` (issue 23, item 6).

Listing the series of an input reads DICOM headers only: it must not load the models or the heavy
libraries (torch, open_clip, segment_anything, SimpleITK, highdicom, ...). This writes a synthetic
CT series of ``--files`` files (64×64 by default) into a temporary folder and times the command in a
fresh interpreter ``--runs`` times (the whole process: start-up, imports, scan, printing), as the
console script runs it. ``--input PATH`` times another folder too (e.g. a real series). It prints
each run and the median; the last line is ``list_series_seconds=<median> files=<n>``. Target:
under 1 s for 50 files.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

# what the ``medclipsam`` console script does
ENTRY = "import sys; from medclipsam.cli import main; sys.exit(main())"


def time_listing(folder: Path, runs: int) -> tuple[float, list[float], str]:
    times, output = [], ""
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", ENTRY, "segment-series", str(folder), "--list-series"],
                              capture_output=True, text=True, cwd=ROOT)
        times.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise SystemExit(f"--list-series failed (rc {proc.returncode}):\n{proc.stdout}{proc.stderr}")
        output = proc.stdout
    return statistics.median(times), times, output


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=50, help="files in the synthetic series (default 50)")
    ap.add_argument("--size", type=int, default=64, help="rows and columns of each slice (default 64)")
    ap.add_argument("--runs", type=int, default=3, help="timed runs, median reported (default 3)")
    ap.add_argument("--input", action="append", default=[], help="also time this folder (repeatable)")
    args = ap.parse_args()

    from medclipsam.phantoms.synthetic_ct import write_synthetic_ct

    for extra in args.input:
        median, times, out = time_listing(Path(extra), args.runs)
        n = sum(1 for p in Path(extra).rglob("*") if p.is_file())
        print(f"{extra} ({n} files): runs {', '.join(f'{t:.2f}' for t in times)} s, median {median:.2f} s")
        print("  " + out.strip().replace("\n", "\n  "))
    with tempfile.TemporaryDirectory(prefix="list_series_") as tmp:
        write_synthetic_ct(Path(tmp) / "ct", slices=args.files, size=args.size)
        median, times, out = time_listing(Path(tmp) / "ct", args.runs)
    print(f"synthetic CT, {args.files} files of {args.size}x{args.size}: runs "
          f"{', '.join(f'{t:.2f}' for t in times)} s, median {median:.2f} s")
    print("  " + out.strip())
    print(f"list_series_seconds={median:.3f} files={args.files}")


if __name__ == "__main__":
    main()
