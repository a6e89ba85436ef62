"""The app's server under a steady load: N sequential inferences while ``GET /info/`` is polled.

    python benchmarks/server_soak.py [--inferences 30] [--slices 8:24] [--prompt tumor]

Starts ``monailabel start_server --app apps/medclipsam`` on 127.0.0.1 over a NIfTI store holding the
phantom CT series (demo models, CPU), sends the inferences one after another (each must answer 200
with a label), polls ``/info/`` from another thread every 0.2 s, and samples the server's resident
memory (the server process and its children) after every inference. Prints the figures and, last:

    inferences=<n> failures=<n> info_p50_ms=<x> info_p95_ms=<x> info_max_ms=<x>
    rss_start_mb=<x> rss_end_mb=<x> rss_peak_mb=<x>   (one line)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine  # noqa: E402

from servers import monailabel_server  # noqa: E402


def server_rss_mb(port: int) -> float:
    """Resident memory of the process listening on ``port`` and its children, in MiB."""
    import psutil

    for c in psutil.net_connections(kind="tcp"):
        if c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN and c.pid:
            p = psutil.Process(c.pid)
            procs = [p] + p.children(recursive=True)
            return sum(q.memory_info().rss for q in procs if q.is_running()) / 2 ** 20
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    k = min(len(s) - 1, max(0, int(round(q * (len(s) - 1)))))
    return s[k]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inferences", type=int, default=30)
    ap.add_argument("--slices", default="8:24", help="slice range of each inference (START:STOP; '' for all)")
    ap.add_argument("--prompt", default="tumor")
    args = ap.parse_args()

    from medclipsam.dicom import read_series
    from medclipsam.volume.itk_io import write_image

    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        studies = Path(tmp) / "studies"
        studies.mkdir()
        with read_series(ROOT / "sample-data" / "phantoms" / "ct_chest") as s:
            write_image(studies / "ct_chest.nii.gz", s)
        with monailabel_server(studies, Path(tmp) / "work") as url:
            port = int(url.rsplit(":", 1)[1])
            rss = [server_rss_mb(port)]
            info_ms: list[float] = []
            stop = threading.Event()

            def poll() -> None:
                while not stop.is_set():
                    t0 = time.perf_counter()
                    r = requests.get(f"{url}/info/", timeout=30)
                    if r.status_code == 200:
                        info_ms.append((time.perf_counter() - t0) * 1000)
                    stop.wait(0.2)

            poller = threading.Thread(target=poll, daemon=True)
            poller.start()
            failures, seconds = 0, []
            params = {"prompt": args.prompt, "slices": args.slices}
            for i in range(args.inferences):
                t0 = time.perf_counter()
                r = requests.post(f"{url}/infer/medclipsam?image=ct_chest", data={"params": json.dumps(params)},
                                  timeout=600)
                seconds.append(time.perf_counter() - t0)
                ok = r.status_code == 200 and b"params" in r.content
                failures += not ok
                rss.append(server_rss_mb(port))
                print(f"inference {i + 1}/{args.inferences}: {r.status_code} {seconds[-1]:.1f} s, "
                      f"server {rss[-1]:.0f} MiB" + ("" if ok else f" FAILED {r.text[:200]}"), flush=True)
            stop.set()
            poller.join(timeout=30)
    print(f"inference seconds: median {statistics.median(seconds):.1f}, first {seconds[0]:.1f} (loads the models)")
    print(f"/info/ polled {len(info_ms)} times during the inferences")
    print(f"inferences={args.inferences} failures={failures} info_p50_ms={percentile(info_ms, 0.5):.1f} "
          f"info_p95_ms={percentile(info_ms, 0.95):.1f} info_max_ms={max(info_ms):.1f} rss_start_mb={rss[0]:.0f} "
          f"rss_end_mb={rss[-1]:.0f} rss_peak_mb={max(rss):.0f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
