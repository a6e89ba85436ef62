"""Latency and memory of each stage for one 512×512 slice through the v2 preset on CPU.

Full-size random-initialised BiomedCLIP (ViT-B/16 + PubMedBERT) with each SAM given (``--sam``,
repeatable; default LiteMedSAM — the real weights of the default SAM — and SAM ViT-B with random
weights: the cost does not depend on weight values; random masks are meaningless), one after the
other on the same slice and prompt in one run, so that their SAM stages can be compared. Peak memory
per stage is the highest process RSS sampled while the stage ran; with ``--device cuda`` also the
peak GPU memory allocated by torch during the stage, each stage is timed between CUDA
synchronisations, and one unreported warm-up slice runs first (CUDA context, kernel selection).
Last line: ``slice_seconds=<total of the first SAM's run>`` (text + saliency + post-processing +
SAM, model loading excluded), followed on the same line, when several SAMs ran, by
``sam_ratio_<name>=<x>`` for each other SAM: its SAM stage (encoder + decoder) seconds over the first's.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RssSampler, ct_like_slice, machine, rss_mb  # noqa: E402

from medclipsam.config import parse_overrides  # noqa: E402
from medclipsam.models import load_clip, load_sam  # noqa: E402
from medclipsam.pipeline import Pipeline  # noqa: E402
from medclipsam.settings import resolve_settings  # noqa: E402
from medclipsam.timing import StageClock  # noqa: E402


class MemoryClock(StageClock):
    def __init__(self, sampler: RssSampler, cuda: bool = False) -> None:
        super().__init__()
        self.sampler = sampler
        self.cuda = cuda
        self.peak_mb: dict[str, float] = {}
        self.gpu_mb: dict[str, float] = {}

    def start(self, name: str) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self.sampler.reset()

    def sync(self) -> None:
        if self.cuda:               # count the stage's queued kernels in its own time
            import torch

            torch.cuda.synchronize()

    def stop(self, name: str) -> None:
        if self.cuda:
            import torch

            self.gpu_mb[name] = torch.cuda.max_memory_allocated() / 1e6
        self.peak_mb[name] = max(self.sampler.peak, rss_mb())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sam", action="append", help="SAM spec, repeatable (default: litemedsam and vit_b:random)")
    ap.add_argument("--clip", default="random:biomedclip")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE")
    args = ap.parse_args()

    specs = args.sam or ["litemedsam", "vit_b:random"]
    print(f"machine: {machine()}")
    sampler = RssSampler()
    base = rss_mb()
    t = time.perf_counter()
    clip = load_clip(args.clip, device=args.device)
    print(f"CLIP {clip.spec} loaded in {time.perf_counter() - t:.1f} s; RSS {base:.0f} MB before, {rss_mb():.0f} MB "
          f"after{' (RANDOM WEIGHTS: cost only)' if clip.random_weights else ''}")
    config = resolve_settings("v2", (clip,), parse_overrides(args.set))[0].pipeline
    rgb = ct_like_slice(args.size)
    cuda = args.device.startswith("cuda")
    prompt = "A medical CT scan showing a round tumor in the lung."
    totals: dict[str, float] = {}
    sam_seconds: dict[str, float] = {}
    for spec in specs:
        t = time.perf_counter()
        sam = load_sam(spec, device=args.device)
        print(f"\nSAM {sam.spec} ({sam.architecture}, {'RANDOM WEIGHTS' if sam.random_weights else 'real weights'}, "
              f"{sum(p.numel() for p in sam.model.parameters()) / 1e6:.1f} M parameters) loaded in "
              f"{time.perf_counter() - t:.1f} s; RSS {rss_mb():.0f} MB")
        pipeline = Pipeline(clip, sam, config)
        if cuda:        # warm-up slice, not reported: CUDA context, kernel selection, allocator
            pipeline.segment(rgb, prompt)
        clock = MemoryClock(sampler, cuda=cuda)
        result = pipeline.segment(rgb, prompt, clock=clock)
        print(f"slice {args.size}×{args.size}, preset v2 ({config.saliency} -> {config.postprocess.method} -> "
              f"{config.prompts.kind} -> SAM {sam.architecture}), target found: {result.found}")
        print(f"{'stage':<14}{'seconds':>10}{'peak RSS MB':>14}" + (f"{'peak GPU MB':>14}" if cuda else ""))
        stages = [s for s in ("text", "saliency", "postprocess", "sam_encoder", "sam_decoder") if s in clock.seconds]
        for s in stages:
            print(f"{s:<14}{clock.seconds[s]:>10.3f}{clock.peak_mb[s]:>14.0f}" +
                  (f"{clock.gpu_mb[s]:>14.0f}" if cuda else ""))
        totals[spec] = sum(clock.seconds[s] for s in stages)
        sam_seconds[spec] = sum(clock.seconds.get(s, 0.0) for s in ("sam_encoder", "sam_decoder"))
        print(f"total {totals[spec]:.2f} s, SAM stage {sam_seconds[spec]:.3f} s")
        del pipeline, sam
    sampler.close()
    first = specs[0]
    ratios = []
    if len(specs) > 1:
        print(f"\nSAM stage relative to {first} ({sam_seconds[first]:.3f} s):")
        for spec in specs[1:]:
            ratio = sam_seconds[spec] / max(sam_seconds[first], 1e-9)
            name = spec.split(":")[0]
            print(f"  {spec}: {sam_seconds[spec]:.3f} s = {ratio:.1f}×")
            ratios.append(f"sam_ratio_{name}={ratio:.1f}")
    print(" ".join([f"slice_seconds={totals[first]:.2f}"] + ratios))


if __name__ == "__main__":
    main()
