"""Memory of one training step of the weakly supervised network, measured against the estimate that
``check_train_request`` refuses oversized requests with (issue 21).

For each ``batch_size × size²`` a fresh Python process builds the network and optimiser as
``train_ensemble`` does, runs one warm-up step at 1 × 32² (libraries, optimiser state), reads its peak
resident memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss``), runs one step at the requested size
(augment, forward, Dice + CE, backward, clipping, optimiser step) and reads the peak again. The
difference is what the step needed beyond the model; the estimate's activation part
(:func:`medclipsam.weak.service.train_step_memory`, without parameters, gradients and optimiser state,
which the warm-up already holds) is printed beside it. CPU only (float32; on CUDA bf16 autocast
needs less). Usage::

    python benchmarks/weak_train_memory.py [--sizes 16x128,4x256,16x256,2x512] [--optimizer adam]

Last line: ``max_ratio=<measured / estimated, the largest>``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

STEP = r"""
import json, resource, sys
import numpy as np, torch
from medclipsam.serving.vocabulary import load_vocabulary
from medclipsam.weak.data import augment
from medclipsam.weak.train import build_network, build_optimizer, loss_function
torch.set_num_threads(2)
b, s, kind = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
c = load_vocabulary().prompted_value + 1
net = build_network(c); net.train()
opt = build_optimizer(net.parameters(), kind, 1e-3)
loss_fn = loss_function()
gen = torch.Generator().manual_seed(0)

def step(b, s):
    x, y = augment(torch.rand(b, 1, s, s) * 2 - 1, torch.randint(0, c, (b, s, s)), gen)
    loss = loss_fn(net(x).float(), y[:, None])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), 12.0)
    opt.step()

step(1, 32)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
step(b, s)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"step_bytes": peak - base, "classes": c}))
"""


def main(argv: list[str] | None = None) -> int:
    from medclipsam.weak.service import train_step_memory
    from medclipsam.weak.train import NetworkConfig

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="16x128,4x256,16x256,2x512", help="batch×size pairs, comma-separated")
    ap.add_argument("--optimizer", default="adam", choices=["adam", "sgd"])
    args = ap.parse_args(argv)
    ratios = []
    for pair in args.sizes.split(","):
        b, s = (int(v) for v in pair.lower().split("x"))
        out = subprocess.run([sys.executable, "-c", STEP, str(b), str(s), args.optimizer], capture_output=True,
                             text=True, check=True)
        measured = json.loads(out.stdout.strip().splitlines()[-1])
        est = train_step_memory(b, s, measured["classes"], NetworkConfig(), args.optimizer)
        ratio = measured["step_bytes"] / est.activation_bytes
        ratios.append(ratio)
        print(f"batch {b:3d} size {s:4d}: measured {measured['step_bytes'] / 2**20:8.1f} MiB, estimated "
              f"{est.activation_bytes / 2**20:8.1f} MiB (activations + transients; whole step with "
              f"parameters {est.total_bytes / 2**20:.1f} MiB), measured/estimated {ratio:.2f}")
    print(f"max_ratio={max(ratios):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
