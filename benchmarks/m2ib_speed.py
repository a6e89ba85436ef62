"""M2IB speed: our efficient form vs the literal naive form, full-size BiomedCLIP architecture, CPU.

Both run the identical algorithm (layer 9, β 1, 10 steps, 10 noise samples, Adam lr 1, seed 12)
on one 224×224 image with random-initialised weights (cost does not depend on weight values).
The naive form runs both towers forward and backward at every step with weight gradients on, as
the reference does; ours encodes the text once and runs only the blocks after the bottleneck.
Last line: ``m2ib_speedup=<ratio> max_abs_diff=<value>`` (difference of the min-max normalised
saliency maps).

``--slices N`` instead times the volume engine's two ways of running M2IB on N different CT-like
slices (same prompt, slice k seeded ``seed + k``): N per-slice calls of ``m2ib`` vs one call of
``m2ib_batch`` on all N, and checks that the maps agree. Last line:
``batched_vs_per_slice=<ratio> max_abs_diff=<value> slices=<N> device=<device>`` (ratio = per-slice
seconds / batched seconds; difference of the raw capacity grids).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ct_like_slice, machine  # noqa: E402

from medclipsam.image import clip_input  # noqa: E402
from medclipsam.models import load_clip  # noqa: E402
from medclipsam.saliency import M2IBConfig, m2ib, m2ib_batch, m2ib_naive, min_max, text_target, upsample_grid  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="biomedclip", help="bundled CLIP architecture (default: full-size biomedclip)")
    ap.add_argument("--layer", type=int, default=9)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--slices", type=int, default=0,
                    help="time N per-slice M2IB calls against one batched call on N slices (0: naive comparison)")
    args = ap.parse_args()
    if args.slices < 0:
        ap.error("--slices must be >= 1 (or 0 for the naive comparison)")

    print(f"machine: {machine()}")
    clip = load_clip(f"random:{args.arch}", device=args.device)
    print(f"model: {clip.spec} ({sum(p.numel() for p in clip.model.parameters()) / 1e6:.1f} M parameters, "
          "RANDOM WEIGHTS: cost only)")
    prompt = "A medical CT scan showing a suspicious round mass suggestive of a tumor."
    if args.slices:
        batched_vs_per_slice(clip, prompt, args.slices, args.layer)
        return
    rgb = ct_like_slice(224)
    pixels, _ = clip_input(rgb, clip.image_size, clip.mean, clip.std)
    cfg = M2IBConfig(layer=args.layer, beta=1.0, seed=12)

    with torch.no_grad():  # warm-up (allocator, kernels) shared by both forms
        clip.encode_image(pixels)
        clip.encode_text([prompt])

    t = time.perf_counter()
    text = text_target(clip, prompt)
    ours = m2ib(clip, pixels, text, cfg).raw_grid
    t_ours = time.perf_counter() - t
    print(f"efficient M2IB: {t_ours:.2f} s (text encoded once, blocks 0..{cfg.layer} once, "
          f"{cfg.steps - 1} steps through blocks {cfg.layer + 1}.., no weight gradients)")

    t = time.perf_counter()
    naive = m2ib_naive(clip, pixels, [prompt], cfg).raw_grid
    t_naive = time.perf_counter() - t
    print(f"naive M2IB:     {t_naive:.2f} s ({cfg.steps} steps × both towers forward+backward on "
          f"{cfg.samples} samples, weight gradients on)")

    size = clip.image_size
    a = min_max(upsample_grid(ours, size).numpy())
    b = min_max(upsample_grid(naive, size).numpy())
    raw_rel = float((ours - naive).abs().max() / naive.abs().max())
    diff = float(np.abs(a - b).max())
    print(f"raw capacity grid: max relative difference {raw_rel:.2e}")
    print(f"m2ib_speedup={t_naive / t_ours:.2f} max_abs_diff={diff:.2e}")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(device: torch.device, fn):
    """fn() with its wall seconds, this process's CPU seconds and (CUDA) its peak GPU memory in MiB."""
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    _sync(device)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return out, wall, cpu, peak


def batched_vs_per_slice(clip, prompt: str, n: int, layer: int) -> None:
    """N different slices, one prompt: N calls of ``m2ib`` (seed 12 + k) vs one ``m2ib_batch`` call."""
    device = clip.device
    pixels = torch.cat([clip_input(ct_like_slice(224, seed=k), clip.image_size, clip.mean, clip.std)[0]
                        for k in range(n)]).to(device)
    cfg = M2IBConfig(layer=layer, beta=1.0, seed=12)
    cfgs = [dataclasses.replace(cfg, seed=cfg.seed + k) for k in range(n)]
    text = text_target(clip, prompt)
    with torch.no_grad():  # warm-up (allocator, kernels) shared by both ways
        clip.encode_image(pixels[:1])
    m2ib(clip, pixels[:1], text, dataclasses.replace(cfg, steps=2, samples=2))

    def report(name: str, wall: float, cpu: float, peak: float | None, how: str) -> None:
        mem = f", peak GPU memory {peak:.0f} MiB" if peak is not None else f", {cpu:.2f} CPU s"
        print(f"{name} {wall:.2f} s for {n} slices ({wall / n:.2f} s/slice{mem}; {how})")

    per_slice, t_per_slice, cpu, peak = _timed(
        device, lambda: [m2ib(clip, pixels[k:k + 1], text, cfgs[k]).raw_grid for k in range(n)])
    report("per-slice M2IB:", t_per_slice, cpu, peak,
           f"{n} calls of {cfg.steps - 1} steps × {cfg.samples} samples through blocks {cfg.layer + 1}..")
    batched, t_batched, cpu, peak = _timed(
        device, lambda: [o.raw_grid for o in m2ib_batch(clip, pixels, text.expand(n, -1), cfgs)])
    report("batched M2IB:  ", t_batched, cpu, peak, f"one call, {n}×{cfg.samples} noisy samples per step")

    diff = max(float((a - b).abs().max()) for a, b in zip(per_slice, batched))
    scale = max(float(a.abs().max()) for a in per_slice)
    print(f"raw capacity grids (slice k seeded {cfg.seed} + k): max abs difference {diff:.2e} "
          f"(largest value {scale:.3g})")
    print(f"batched_vs_per_slice={t_per_slice / t_batched:.2f} max_abs_diff={diff:.2e} slices={n} device={device.type}")

if __name__ == "__main__":
    main()
