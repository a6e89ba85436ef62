"""Weak supervision on the phantom world (issue 6): does a network retrained on accepted zero-shot
labels beat the zero-shot pipeline, and does its ensemble uncertainty point at its worst cases?

1. **Pseudo-labels**: the zero-shot pipeline (demo models, the models' recommended settings) segments
   ``--m`` fresh phantom CT series (seeds 60 000 + i) for ``--target`` ("lungs" by default).
2. **A careless annotator** accepts them, but a fraction ``--corrupt`` of the studies (chosen with
   the seed) gets one of three mistakes, in turn:
   * *missed slices* — the label is erased on a contiguous third of the slices that hold it (the
     annotator did not scroll through the whole series);
   * *sloppy brush* — the label is grown by 2 pixels on every slice (a brush too large);
   * *stray blob* — a false disc (radius 6 px) is added inside the body, away from the target, on
     a run of 4 slices (a click on the wrong structure).
3. **Training**: the product's trainer (``medclipsam.weak.train``: 2D U-Net, Dice + CE, cyclic
   learning rate with ``--cycles`` restarts, the last ``--keep`` checkpoints of each cycle).
4. **Held-out**: ``--n`` fresh series (seeds 70 000 + i). Dice over the whole volume (a label on a
   slice without the target counts against it) of (a) the zero-shot pipeline, (b) the last
   checkpoint alone, (c) the ensemble (mean probabilities); and the Spearman correlation between
   each study's ensemble uncertainty and 1 − its ensemble Dice (does the uncertainty rank the worst
   studies first?).

Last line: ``zeroshot_dice=<a> weak_dice=<b> ensemble_dice=<c> uncertainty_spearman=<d>``.
Goal: c > a and d ≥ 0.5.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine  # noqa: E402

TRAIN_SEED_BASE = 60_000
HELD_OUT_SEED_BASE = 70_000
MISTAKES = ("missed slices", "sloppy brush", "stray blob")


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    denom = int(pred.sum()) + int(truth.sum())
    return 1.0 if denom == 0 else 2.0 * int((pred & truth).sum()) / denom


def corrupt(mask: np.ndarray, body: np.ndarray, mistake: str, rng: np.random.Generator) -> np.ndarray:
    """One careless-annotator mistake on a boolean (slices, rows, cols) mask (module docstring)."""
    from scipy.ndimage import binary_dilation, distance_transform_edt

    out = mask.copy()
    present = np.flatnonzero(mask.reshape(len(mask), -1).any(1))
    if mistake == "missed slices" and present.size >= 3:
        k = max(1, present.size // 3)
        start = int(rng.integers(0, present.size - k + 1))
        out[present[start:start + k]] = False
    elif mistake == "sloppy brush":
        st = np.zeros((3, 3, 3), bool)
        st[1] = [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
        out = binary_dilation(mask, structure=st, iterations=2)
    elif mistake == "stray blob":
        far = body & ~binary_dilation(mask, iterations=8)
        if present.size and far.any():
            k0 = int(present[len(present) // 2])
            ks = range(max(0, k0 - 2), min(len(mask), k0 + 2))
            cand = np.argwhere(far[k0] & (distance_transform_edt(far[k0]) > 6))
            if len(cand):
                r, c = cand[int(rng.integers(0, len(cand)))]
                yy, xx = np.mgrid[: mask.shape[1], : mask.shape[2]]
                disc = (yy - r) ** 2 + (xx - c) ** 2 <= 36
                for k in ks:
                    out[k] |= disc
    return out


def zero_shot(engine, series, target: str) -> np.ndarray:
    from medclipsam.volume import ArrayVolume

    src = ArrayVolume(series.values, series.geometry, modality=series.modality)
    return engine.run(src, [target]).labels == 1


def main(argv: list[str] | None = None) -> int:
    import torch

    from medclipsam.demo import DEMO_CLIP, DEMO_SAM
    from medclipsam.models import load_clip, load_sam
    from medclipsam.phantoms import ct_chest_series
    from medclipsam.pipeline import Pipeline
    from medclipsam.serving.vocabulary import load_vocabulary
    from medclipsam.settings import resolve_settings
    from medclipsam.volume.engine import VolumePipeline
    from medclipsam.weak.data import normalise_volume, slice_set
    from medclipsam.weak.ensemble import predict_volume
    from medclipsam.weak.schedule import CyclicSchedule
    from medclipsam.weak.train import TrainConfig, load_members, train_ensemble

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="lungs", help="a vocabulary target (default lungs)")
    ap.add_argument("--m", type=int, default=8, help="training phantom series (default 8)")
    ap.add_argument("--n", type=int, default=12, help="held-out phantom series (default 12)")
    ap.add_argument("--corrupt", type=float, default=0.3, help="fraction of training labels with a mistake")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--cycles", type=int, default=3)
    ap.add_argument("--keep", type=int, default=2, help="checkpoints kept at the end of each cycle")
    ap.add_argument("--iterations", type=int, default=40, help="iterations per epoch")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default="out/weak_benchmark", help="folder for the trained ensemble")
    args = ap.parse_args(argv)

    vocab = load_vocabulary()
    entry = vocab.find(args.target)
    if entry is None:
        ap.error(f"--target {args.target!r} is not in the vocabulary ({', '.join(e.name for e in vocab.entries)})")
    print(f"machine: {machine()}")
    print(f"target {entry.name!r} (label {entry.value}); {args.m} training + {args.n} held-out phantom CT series; "
          f"{args.corrupt:.0%} of training labels corrupted; {args.epochs} epochs in {args.cycles} cycles, "
          f"{args.keep} checkpoints kept per cycle")
    t0 = time.perf_counter()
    clip, sam = load_clip(DEMO_CLIP, device=args.device), load_sam(DEMO_SAM, device=args.device)
    settings, _ = resolve_settings("v2", (clip, sam), {})
    engine = VolumePipeline(Pipeline(clip, sam, settings.pipeline), settings.volume)
    rng = np.random.default_rng(args.seed)

    def truth_of(series) -> np.ndarray:
        return series.label(entry.name)

    pairs, pseudo_dice = [], []
    n_bad = int(round(args.corrupt * args.m))
    bad = set(rng.choice(args.m, n_bad, replace=False).tolist()) if n_bad else set()
    for i in range(args.m):
        s = ct_chest_series(TRAIN_SEED_BASE + args.seed * 1000 + i)
        mask = zero_shot(engine, s, entry.prompt if isinstance(entry.prompt, str) else entry.prompt[0])
        note = ""
        if i in bad:
            mistake = MISTAKES[sorted(bad).index(i) % len(MISTAKES)]
            mask = corrupt(mask, s.values > -500, mistake, rng)
            note = f" (annotator: {mistake})"
        pseudo_dice.append(dice(mask, truth_of(s)))
        print(f"train series {i}: accepted label Dice {pseudo_dice[-1]:.3f}{note}", flush=True)
        pairs.append((normalise_volume(s.values), np.where(mask, entry.value, 0).astype(np.uint8)))
    t_pseudo = time.perf_counter() - t0
    data = slice_set(pairs, 128)
    cfg = TrainConfig(schedule=CyclicSchedule(epochs=args.epochs, cycles=args.cycles, lr_max=3e-3, lr_min=3e-5,
                                              keep_per_cycle=args.keep),
                      size=128, batch_size=args.batch_size, iterations_per_epoch=args.iterations, seed=args.seed,
                      device=args.device)
    out = Path(args.out) / time.strftime("%Y%m%d_%H%M%S")
    t1 = time.perf_counter()
    train_ensemble(data, vocab.prompted_value + 1, out, cfg, classes=vocab.labels(),
                   log=lambda line: print("  " + line, flush=True))
    t_train = time.perf_counter() - t1
    _, nets = load_members(out, args.device)
    a, b, c, unc = [], [], [], []
    t2 = time.perf_counter()
    for i in range(args.n):
        s = ct_chest_series(HELD_OUT_SEED_BASE + args.seed * 1000 + i)
        truth = truth_of(s)
        a.append(dice(zero_shot(engine, s, entry.prompt if isinstance(entry.prompt, str) else entry.prompt[0]), truth))
        single = predict_volume(nets[-1:], s.values, cfg.size, args.device)
        ens = predict_volume(nets, s.values, cfg.size, args.device)
        b.append(dice(single.labels == entry.value, truth))
        c.append(dice(ens.labels == entry.value, truth))
        unc.append(ens.uncertainty)
        print(f"held-out series {i}: zero-shot {a[-1]:.3f} single {b[-1]:.3f} ensemble {c[-1]:.3f} "
              f"uncertainty {unc[-1]:.4f} mean entropy {ens.mean_entropy:.3f} agreement {ens.member_agreement:.3f}",
              flush=True)
    from scipy.stats import spearmanr

    rho = float(spearmanr(unc, 1.0 - np.asarray(c)).statistic) if np.ptp(c) > 0 and np.ptp(unc) > 0 else float("nan")
    print(f"accepted training labels: mean Dice {np.mean(pseudo_dice):.3f} ({n_bad} of {args.m} corrupted)")
    print(f"seconds: pseudo-labels {t_pseudo:.0f}, training {t_train:.0f}, held-out {time.perf_counter() - t2:.0f}; "
          f"ensemble of {len(nets)} in {out}; torch threads {torch.get_num_threads()}")
    print(f"goal: ensemble > zero-shot: {'met' if np.mean(c) > np.mean(a) else 'NOT met'}; "
          f"spearman >= 0.5: {'met' if rho >= 0.5 else 'NOT met'}")
    print(f"zeroshot_dice={np.mean(a):.3f} weak_dice={np.mean(b):.3f} ensemble_dice={np.mean(c):.3f} "
          f"uncertainty_spearman={rho:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
