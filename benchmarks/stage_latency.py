"""Latency and memory of each stage for one 512×512 slice through the v2 preset on CPU.

Full-size random-initialised BiomedCLIP (ViT-B/16 + PubMedBERT) and SAM ViT-B (random weights:
the cost does not depend on weight values; the masks are meaningless). Peak memory per stage is
the highest process RSS sampled while the stage ran; with ``--device cuda`` also the peak GPU memory
allocated by torch during the stage, each stage is timed between CUDA synchronisations, and one
unreported warm-up slice runs first (CUDA context, kernel selection). Last line: ``slice_seconds=<total>``
(text + saliency + post-processing + SAM, model loading excluded).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RssSampler, ct_like_slice, machine, rss_mb  # noqa: E402

from medclipsam.config import PipelineConfig, parse_overrides  # noqa: E402
from medclipsam.models import load_clip, load_sam  # noqa: E402
from medclipsam.pipeline import Pipeline  # noqa: E402
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
    ap.add_argument("--sam", default="vit_b:random")
    ap.add_argument("--clip", default="random:biomedclip")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE")
    args = ap.parse_args()

    print(f"machine: {machine()}")
    sampler = RssSampler()
    base = rss_mb()
    t = time.perf_counter()
    clip = load_clip(args.clip, device=args.device)
    t_clip = time.perf_counter() - t
    t = time.perf_counter()
    sam = load_sam(args.sam, device=args.device)
    t_sam = time.perf_counter() - t
    print(f"models: CLIP {clip.spec} loaded in {t_clip:.1f} s, SAM {sam.spec} in {t_sam:.1f} s; "
          f"RSS {base:.0f} MB before, {rss_mb():.0f} MB after (RANDOM WEIGHTS: cost only)")
    config = PipelineConfig.from_preset("v2", parse_overrides(args.set))
    pipeline = Pipeline(clip, sam, config)
    rgb = ct_like_slice(args.size)
    cuda = args.device.startswith("cuda")
    if cuda:        # warm-up slice, not reported: CUDA context, kernel selection, allocator
        pipeline.segment(rgb, "A medical CT scan showing a round tumor in the lung.")
    clock = MemoryClock(sampler, cuda=cuda)
    result = pipeline.segment(rgb, "A medical CT scan showing a round tumor in the lung.", clock=clock)
    sampler.close()
    print(f"slice {args.size}×{args.size}, preset v2 ({config.saliency} -> {config.postprocess.method} -> "
          f"{config.prompts.kind} -> SAM {sam.architecture}), target found: {result.found}")
    print(f"{'stage':<14}{'seconds':>10}{'peak RSS MB':>14}" + (f"{'peak GPU MB':>14}" if cuda else ""))
    stages = [s for s in ("text", "saliency", "postprocess", "sam_encoder", "sam_decoder") if s in clock.seconds]
    for s in stages:
        print(f"{s:<14}{clock.seconds[s]:>10.3f}{clock.peak_mb[s]:>14.0f}" +
              (f"{clock.gpu_mb[s]:>14.0f}" if cuda else ""))
    total = sum(clock.seconds[s] for s in stages)
    print(f"slice_seconds={total:.2f}")


if __name__ == "__main__":
    main()
