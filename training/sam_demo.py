"""Train a small SAM-architecture *demo* model on synthetic slices with box and point prompts.

The result is an ordinary SAM ``.pth`` state dict (segment-anything's own classes, built from a
JSON architecture, by default ``configs/sam/demo.json``) that the pipeline loads with
``load_sam("demo:PATH")``, plus a model card ``<out>.json`` next to it. It is a demo model trained on
synthetic data: it shows the pipeline working end to end without the multi-GB official weights,
and is **not for clinical use**.

Training follows the way the zero-shot pipeline prompts SAM (``sam_stage.SamSegmenter``):

* images go through exactly what ``SamPredictor.set_image`` does: ``ResizeLongestSide`` to the
  architecture's image size (PIL resize of the uint8 RGB image), ``Sam.preprocess`` (normalise
  with SAM's pixel mean/std, pad to a square);
* prompts are sampled as the pipeline derives them from a coarse, saliency-based mask, which is
  often loose or shifted: a jittered (sometimes enlarged) box around the structure, one jittered
  box per connected component (lungs: two), ~1-10 positive points inside (some of them, sometimes,
  just outside the structure, as a coarse mask that spills over gives), optional negative points
  outside, or a box with points; coordinates in original image pixels, mapped to the model's input
  frame with ``ResizeLongestSide.apply_boxes_torch`` / ``apply_coords_torch``;
* image_encoder -> prompt_encoder(points, boxes) -> mask_decoder -> ``Sam.postprocess_masks``
  (the path of ``SamPredictor.predict_torch``); the single-mask output (``multimask_output=False``,
  the pipeline's default) is trained with BCE + Dice against the structure mask at the original
  resolution, the three multimask outputs with the minimum BCE + Dice over the three (as SAM's
  paper does, so ``SamStageConfig(multimask=True)`` also works), and the IoU head with an MSE to
  the IoU each mask actually reaches.

Data: any ``Sequence`` of objects with ``.rgb`` (uint8 H×W×3) and ``.masks`` (``dict`` structure
name -> bool H×W). The CLI uses ``medclipsam.phantoms.training_slices``.

Everything is seeded (numpy ``Generator`` for data and prompts, ``torch.manual_seed`` for the
weights) and nothing is cached across steps, so the same seed gives the same weights.

CLI::

    python training/sam_demo.py --out models/demo-sam.pth [--steps N] [--seed S] [--n-train N]
        [--device cpu|cuda] [--ct-share K] [--tumour-slices K] [--sampling KEY=VALUE ...]

``--ct-share`` / ``--tumour-slices`` change the training mix (``phantoms.training_slices``),
``--sampling`` any :class:`PromptSampling` field (e.g. ``--sampling p_favoured=0.8``). ``--device
cuda`` trains on a GPU, but the step is bound by the CPU work around the small model (augmentation,
prompt sampling, one decoder call per image): on an H100 machine with one thread per run and four
to eight runs sharing the card it took 0.2–0.3 s a step against 1.15 s on the 2-core reference CPU.

The recipe's parts live in ``training/sam_recipe/``: ``sampling`` (training prompts and
:class:`PromptSampling`), ``inputs`` (augmentation, SAM's input transform), ``losses``, ``evaluate``
(held-out Dice through ``SamSegmenter``), ``card`` (recommended settings, model card) and ``train``
(:func:`train_demo_sam`). This file is the command line and re-exports them. The recipe's cost and
the rounds that chose the shipped model (SAM 16) are in ``benchmarks/RESULTS.md`` ("Demo SAM training
history"); the model card records how its model was trained.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from typing import Sequence

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:          # the recipe's package beside this file, however this file is loaded
    sys.path.insert(0, _HERE)

# the recipe's public names, importable from here as before the split
from sam_recipe.card import DISCLAIMER, RECOMMENDED_SETTINGS  # noqa: E402,F401
from sam_recipe.evaluate import dice, evaluate_sam  # noqa: E402,F401
from sam_recipe.inputs import augment, model_input  # noqa: E402,F401
from sam_recipe.losses import dice_loss, mask_iou, prompt_losses  # noqa: E402,F401
from sam_recipe.sampling import (  # noqa: E402,F401
    ImagePrompts,
    PromptSampling,
    Slice,
    bounding_box,
    components,
    jitter_box,
    sample_image_prompts,
    sample_points,
    sampling_from_overrides,
    with_unions,
)
from sam_recipe.train import train_demo_sam  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="checkpoint to write (e.g. models/demo-sam.pth)")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-train", type=int, default=3200, help="synthetic training slices")
    ap.add_argument("--n-val", type=int, default=40, help="held-out synthetic slices (another seed)")
    ap.add_argument("--size", type=int, default=128, help="phantom slice size in pixels")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--architecture", default="demo", help="bundled SAM architecture name or JSON file")
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2,
                    help="torch CPU threads (2 on the reference 2-core machine; 1 is faster when other processes "
                         "compete for the cores)")
    ap.add_argument("--device", default="cpu", help="cpu (the reference) or cuda")
    ap.add_argument("--ct-share", type=int, default=1, help="CT slices per MR/US/X-ray slice in the mix (default 1)")
    ap.add_argument("--tumour-slices", type=int, default=3,
                    help="at most this many of each CT/MR series' 8 slices show its tumour (default 3)")
    ap.add_argument("--sampling", action="append", default=[], metavar="KEY=VALUE",
                    help="override a PromptSampling field, e.g. --sampling p_enlarge=0.5 (repeatable)")
    ap.add_argument("--init", type=Path, default=None, metavar="CHECKPOINT",
                    help="start from this checkpoint of the same architecture (fine-tuning) instead of random weights")
    args = ap.parse_args(argv)
    if args.init is not None and not args.init.is_file():
        ap.error(f"--init {args.init}: no such checkpoint file; give a .pth written by this recipe")
    try:
        sampling = sampling_from_overrides(args.sampling)
    except ValueError as e:
        ap.error(str(e))

    if importlib.util.find_spec("medclipsam.phantoms") is None:
        print("error: medclipsam.phantoms is missing, so there are no synthetic training slices to train on "
              "(the recipe needs medclipsam.phantoms.training_slices(seed, n, size)). Nothing was written.",
              file=sys.stderr)
        return 2
    from medclipsam import phantoms

    unions: dict[str, tuple[str, ...]] = {}
    for alias, parts in getattr(phantoms, "ALIASES", {}).items():  # "lungs" = left ∪ right lung
        if len(parts) > 1 and tuple(parts) not in unions.values():
            unions[alias] = tuple(parts)
    t0 = time.perf_counter()
    shares = (args.ct_share, 1, 1, 1)
    train = phantoms.training_slices(args.seed, args.n_train, size=args.size, shares=shares,
                                     tumour_slices=args.tumour_slices)
    val = phantoms.training_slices(args.seed + 1_000_003, args.n_val, size=args.size)
    print(f"generated {len(train)} training and {len(val)} held-out phantom slices ({args.size} px) in "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
    m = train_demo_sam(train, args.out, steps=args.steps, batch_size=args.batch_size, seed=args.seed, lr=args.lr,
                       log_every=args.log_every, architecture=args.architecture, val_data=val, unions=unions,
                       threads=args.threads, device=args.device, sampling=sampling, init=args.init,
                       data_description=(f"medclipsam.phantoms.training_slices(seed={args.seed}, n={args.n_train}, "
                                         f"size={args.size}, shares={shares}, tumour_slices={args.tumour_slices})"
                                         f"; held out: training_slices(seed={args.seed + 1_000_003},"
                                         f" n={args.n_val})"),
                       log=lambda s: print(s, flush=True))
    for name, d in m["per_structure"].items():
        print(f"  {name:12s} box {d.get('box_dice', float('nan')):.3f}  components "
              f"{d.get('component_box_dice', float('nan')):.3f}  points {d.get('point_dice', float('nan')):.3f}"
              f"  ({d['pairs']} slices)")
    seconds = time.perf_counter() - t0
    print(f"box_dice={m['box_dice']:.4f} point_dice={m['point_dice']:.4f} steps={m['steps']} seconds={seconds:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
