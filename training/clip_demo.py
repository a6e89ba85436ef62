"""Train the demo CLIP model: a small BiomedCLIP-shaped model on synthetic phantom slices.

The result is an ordinary ``local-dir:`` folder (the layout of the real BiomedCLIP folder, written
by :func:`medclipsam.models.clip.write_clip_folder`) that ``load_clip("local-dir:FOLDER")`` loads
through the normal path, plus a model card saying it is a demo model and a presence calibration
(``medclipsam_presence.json``) that the slice engine's presence gate reads.

Architecture: ``configs/clip/demo.json`` — timm ViT ``vit_medclipsam_demo_patch8_128`` (128 px,
patch 8 → 16×16 tokens, 4 blocks, width 128, 4 heads; timm's average pooling of the normed patch
tokens, so the image embedding is the mean of the patch tokens' embeddings; linear projection) and
a 2-layer BERT (width 64, CLS pooling, MLP projection), 64-d joint space; the vocabulary is written
by the project (:func:`medclipsam.models.vocab.build_wordpiece_vocab`) from the default medical
words, the captions and the structure prompts.

The recipe's parts live in ``training/clip_recipe/``: ``prompts`` (structure prompts and presence
labels), ``data`` (CLIP input, token coverage, vocabulary), ``losses`` (what the model must do and
the loss term for each), ``forward`` (training heads and token scores), ``model`` (building,
``--init``, schedule), ``calibration`` (presence gate, M2IB check), ``tuning`` (M2IB's β), ``card``
(folder, card and README) and ``train`` (:func:`train_demo_clip`). This file is the command line and
re-exports them. Each round's measurements and choices are in ``benchmarks/RESULTS.md`` ("Demo CLIP
training history"); the model card records how its model was trained.

Data: ``phantoms.training_slices(seed, 16000)`` by default — 3000 steps × 32 images see each slice
about six times. The shipped model, CLIP 16, is two runs, each with ``--threads 1`` (a seed gives the
same weights at a given thread count): ``--out CLIP15 --threads 1``, then ``--out CLIP16 --threads 1
--init CLIP15 --steps 1600 --lr 2e-4 --loss-weight mass=0.3 --mass-structure tumor``.

Deterministic: fixed data order from ``seed``, seeded initialisation and noise,
``torch.use_deterministic_algorithms(True)`` during training, 2 threads by default (``--threads``).

After training, the presence gate is calibrated on held-out slices: cosine similarities of
every (slice, structure prompt) pair with a present/absent label, AUC, and the threshold that
maximises balanced accuracy → ``medclipsam_presence.json``. The saved folder is then loaded with
``load_clip`` and M2IB saliency is checked on held-out slices (mass inside vs outside the target).

Options, off by default so that the defaults reproduce the shipped model bit for bit:
``--hidden-targets unknown`` (a target the slice's rendering window hides — a hepatic tumour in the
lung window — is neither present nor absent, and the caption names only what shows), ``--tune-beta N``
(M2IB's β for the card chosen on N held-out slices per target), ``--ct-share`` / ``--tumour-slices``
(the training mix), ``--device cuda``, ``--architecture NAME|FILE.json``, ``--loss-weight TERM=W`` (a
term of :data:`LOSS_WEIGHTS`; ``mass``, the pointing term of :func:`mass_loss`, and ``peak``,
:func:`peak_loss`, are 0 by default), ``--mass-structure NAME`` (the two pointing terms only for the
prompts naming it), ``--init FOLDER`` (fine-tune a written demo CLIP folder instead of starting from
random weights: the training heads are fitted alone for ``--head-steps`` steps, then the model follows
the usual schedule at ``--lr``).

Library: :func:`train_demo_clip`. CLI::

    python training/clip_demo.py --out models/demo-clip [--steps N] [--seed S] [--n-train N]
        [--hidden-targets present|unknown] [--tune-beta N] [--ct-share K] [--tumour-slices K] [--device cpu|cuda]
        [--architecture NAME|FILE.json] [--loss-weight TERM=W ...] [--mass-structure NAME ...]
        [--init FOLDER --head-steps N]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:          # the recipe's package beside this file, however this file is loaded
    sys.path.insert(0, _HERE)

# the recipe's public names, importable from here as before the split
from clip_recipe.calibration import SALIENCY_CHECKS, best_threshold, calibrate_presence, saliency_check, similarities  # noqa: E402,F401
from clip_recipe.card import (  # noqa: E402,F401
    ARCHITECTURE,
    CALIBRATION_FILE,
    M2IB_LAYER,
    MODEL_NAME,
    NOTICE,
    RECOMMENDED_SETTINGS,
    pipeline_recommendations,
)
from clip_recipe.data import HIDDEN_TARGETS, Prepared, prepare, vocabulary_words  # noqa: E402,F401
from clip_recipe.forward import Heads, _pooled, dense_scores, token_contributions, token_features  # noqa: E402,F401
from clip_recipe.losses import (  # noqa: E402,F401
    LOSS_WEIGHTS,
    contrastive_loss,
    dense_loss,
    lateral_pairs,
    laterality_loss,
    loss_weights_from_overrides,
    mass_loss,
    peak_loss,
    presence_loss,
)
from clip_recipe.model import _build_model, load_init_weights  # noqa: E402,F401
from clip_recipe.prompts import GROUPS, STRUCTURE_PROMPTS, Slice, StructurePrompt, presence_label, prompts_for  # noqa: E402,F401
from clip_recipe.train import train_demo_clip  # noqa: E402
from clip_recipe.tuning import BETA_CANDIDATES, BETA_TARGETS, tune_beta  # noqa: E402,F401

from medclipsam.evaluation import roc_auc  # noqa: E402,F401

# The training mix (training_slices' balanced default: the shipped model). A mix with twice the CT
# share and up to 5 tumour slices per series (--ct-share 2 --tumour-slices 5) was tried and lost
# tumour Dice (RESULTS.md).
TRAIN_MIX = {"shares": (1, 1, 1, 1), "tumour_slices": 3}


def _phantom_data(seed: int, n_train: int, n_val: int, mix: Mapping[str, Any] | None = None):
    if importlib.util.find_spec("medclipsam.phantoms") is None:
        return None
    from medclipsam import phantoms
    if not hasattr(phantoms, "training_slices"):
        return None
    return (phantoms.training_slices(seed, n_train, **dict(mix or TRAIN_MIX)),
            phantoms.training_slices(seed + 100_003, n_val))


def _architecture_arg(value: str) -> str | dict[str, Any]:
    """A bundled architecture name, or the contents of a JSON file in the bundled form."""
    path = Path(value)
    if value.endswith(".json") and path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    return value


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=f"Train the demo CLIP model on synthetic phantom slices ({NOTICE}).")
    ap.add_argument("--out", required=True, type=Path, help="model folder to write (load with --clip local-dir:OUT)")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-train", type=int, default=16000, help="training slices (phantoms.training_slices)")
    ap.add_argument("--n-val", type=int, default=300, help="held-out slices for calibration")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--log-every", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu (the committed demo model) or cuda")
    ap.add_argument("--architecture", default=ARCHITECTURE,
                    help=f"bundled CLIP architecture name or a JSON file of that form (default {ARCHITECTURE})")
    ap.add_argument("--ct-share", type=int, default=1, help="CT slices per MR/US/X-ray slice in the mix (default 1)")
    ap.add_argument("--tumour-slices", type=int, default=3,
                    help="at most this many of the 8 slices taken from each CT/MR series show its tumour (default 3)")
    ap.add_argument("--hidden-targets", choices=HIDDEN_TARGETS, default="present",
                    help="targets the slice's window hides: labelled present (default, the shipped model) or unknown")
    ap.add_argument("--loss-weight", action="append", default=[], metavar="TERM=W",
                    help=f"weight of a loss term instead of its default (terms: {', '.join(LOSS_WEIGHTS)}), "
                         "e.g. --loss-weight laterality=0.3 (repeatable)")
    ap.add_argument("--tune-beta", type=int, default=0, metavar="N",
                    help="choose M2IB's β on up to N held-out slices per target (0: keep the preset's)")
    ap.add_argument("--mass-structure", action="append", default=[], metavar="NAME",
                    help="the mass and peak terms only for prompts naming this structure "
                         "(repeatable; default: every prompt)")
    ap.add_argument("--init", type=Path, default=None, metavar="FOLDER",
                    help="fine-tune this demo CLIP folder (same data and architecture) instead of random weights")
    ap.add_argument("--head-steps", type=int, default=100, metavar="N",
                    help="with --init: steps in which only the training heads learn (default 100)")
    ap.add_argument("--check-saliency", type=int, default=24, metavar="N",
                    help="M2IB check on up to N held-out slices per prompt after training (0: skip)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        weights = loss_weights_from_overrides(args.loss_weight)
    except ValueError as e:
        ap.error(str(e))

    t0 = time.perf_counter()
    mix = {"shares": (args.ct_share, 1, 1, 1), "tumour_slices": args.tumour_slices}
    got = _phantom_data(args.seed, args.n_train, args.n_val, mix)
    if got is None:
        print("error: the phantom module medclipsam.phantoms (training_slices) is missing from this installation, "
              "so there is no training data; install a medclipsam that has it", file=sys.stderr)
        return 2
    train, val = got
    print(f"generated {len(train)} + {len(val)} phantom slices in {time.perf_counter() - t0:.1f} s", flush=True)
    metrics = train_demo_clip(train, args.out, steps=args.steps, batch_size=args.batch_size, seed=args.seed,
                              lr=args.lr, log_every=args.log_every, val_data=val, threads=args.threads,
                              check_saliency=args.check_saliency, tune_slices=args.tune_beta,
                              hidden_targets=args.hidden_targets, weights=weights,
                              device=args.device, architecture=_architecture_arg(args.architecture),
                              init=args.init, head_steps=args.head_steps, mass_structures=tuple(args.mass_structure),
                              data_note=f"medclipsam.phantoms.training_slices(seed={args.seed}, n={args.n_train}"
                                        + ("" if mix == TRAIN_MIX else
                                           f", shares={mix['shares']}, tumour_slices={mix['tumour_slices']}")
                                        + f"), held out: seed {args.seed + 100_003}",
                              progress=lambda s: print(s, flush=True))
    seconds = time.perf_counter() - t0
    print(json.dumps({k: v for k, v in metrics.items() if k != "history"}), flush=True)
    print(f"retrieval_auc={metrics['retrieval_auc']:.4f} steps={metrics['steps']} seconds={seconds:.1f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
