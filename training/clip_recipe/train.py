"""The recipe: :func:`train_demo_clip` trains a demo CLIP on slices and writes a complete ``local-dir:`` folder."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from .calibration import SALIENCY_CHECKS, heldout_contrastive_loss, heldout_scores, saliency_check
from .card import ARCHITECTURE, RECOMMENDED_SETTINGS, _write_card, pipeline_recommendations, write_model_folder
from .data import prepare, vocabulary_words
from .forward import Heads, batch_losses
from .losses import LOSS_WEIGHTS, lateral_pairs
from .model import HEAD_LR, _build_model, _cpu_has_bf16, _lr_at, load_init_weights, make_optimiser
from .prompts import GROUPS, Slice, prompts_for
from .tuning import BETA_TARGETS, tune_beta

log = logging.getLogger("medclipsam.training.clip_demo")


@contextlib.contextmanager
def _deterministic(threads: int | None):
    """``threads`` torch threads (None / 0: as they are) and deterministic algorithms, restored after."""
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    if threads:
        torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old_det)
        torch.set_num_threads(old_threads)


def train_demo_clip(data: Sequence[Slice], out_dir: str | os.PathLike, *, steps: int, batch_size: int = 32,
                    seed: int = 0, lr: float = 1e-3, log_every: int = 50, val_data: Sequence[Slice] | None = None,
                    val_fraction: float = 0.15, architecture: str | dict[str, Any] = ARCHITECTURE,
                    m2ib_layer: int | None = None, weights: Mapping[str, float] | None = None,
                    dense_focal: float = 1.0, presence_focal: float = 0.0, threads: int | None = 2,
                    bf16: bool | None = None, check_saliency: int = 24, tune_slices: int = 0,
                    hidden_targets: str = "present", data_note: str = "", device: str = "cpu",
                    mass_structures: Sequence[str] = (),
                    init: str | os.PathLike | None = None, head_steps: int = 100,
                    progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train a demo CLIP model on ``data`` and write a complete ``local-dir:`` folder to ``out_dir``.

    ``data``: a sequence of slices with ``.rgb`` (uint8 H×W×3), ``.caption`` and ``.masks``
    (structure → bool H×W); optional ``.kind``. ``val_data``: held-out slices for the presence
    calibration and checks (default: the last ``val_fraction`` of ``data``, not trained on).
    ``weights``: loss weights (``contrastive``, ``presence``, ``dense``, ``token_dense``, ``token_scale``,
    ``laterality``, ``mass``, ``peak``).
    ``presence_focal``: focal γ of the presence loss (0: plain balanced BCE).
    ``bf16``: bfloat16 autocast for the training forward passes (weights, losses and the saved
    model stay float32); None: where the CPU has native bfloat16 matrix units (always on CUDA).
    ``hidden_targets``: see :func:`prepare` (``unknown`` was tried and did not help; RESULTS.md).
    ``tune_slices``: > 0 chooses M2IB's β for the card on up to that many held-out slices per target
    (:func:`tune_beta`); 0 keeps the preset's β.
    ``device``: where to train (``cpu`` or ``cuda``); the recipe is deterministic on a given device,
    but a CUDA run does not reproduce a CPU run bit for bit. The committed demo model is a CPU run.
    ``mass_structures``: the ``mass`` and ``peak`` terms only for the prompts naming one of these structures
    (e.g. ``("tumor",)``); empty: every prompt.
    ``init``: a demo CLIP folder written by this recipe to fine-tune (its architecture and vocabulary
    must be the ones this data gives: same data seed and size); its weights replace the random
    initialisation. The training heads (scales and biases, not saved with a model) start afresh, so
    for the first ``head_steps`` steps only they learn; the model's learning rate then follows the
    usual warm-up and cosine schedule over the remaining steps.
    Returns the metrics (also stored in the model card).
    """
    from medclipsam.models.clip import clip_architecture, write_clip_folder

    say = progress or log.info
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    if steps < 1 or batch_size < 2:
        raise ValueError("steps must be >= 1 and batch_size >= 2")
    head_steps = int(head_steps) if init is not None else 0
    if not 0 <= head_steps <= steps:
        raise ValueError(f"head_steps must be between 0 and steps ({steps}); got {head_steps}")
    data = list(data)
    if val_data is None:
        n_val = max(1, int(round(len(data) * val_fraction)))
        if len(data) - n_val < 2:
            raise ValueError(f"{len(data)} slices are too few to hold out {n_val} for calibration")
        data, val_data = data[:-n_val], data[-n_val:]
    val_data = list(val_data)
    w = {**LOSS_WEIGHTS, **dict(weights or {})}
    unknown = set(w) - set(LOSS_WEIGHTS)
    if unknown:
        raise ValueError(f"unknown loss weights {sorted(unknown)}; known: {', '.join(LOSS_WEIGHTS)}")

    arch = clip_architecture(architecture) if isinstance(architecture, str) else dict(architecture)
    structures = sorted({k for s in data for k in s.masks})
    prompts = prompts_for(structures)
    vocab = vocabulary_words([s.caption for s in data] + [s.caption for s in val_data], prompts)

    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device cuda was asked for but CUDA is not available here; use device='cpu'")
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")      # deterministic cuBLAS
    if bf16 is None:
        bf16 = dev.type == "cuda" or _cpu_has_bf16()
    with (_deterministic(threads), torch.random.fork_rng(devices=[]),
          tempfile.TemporaryDirectory(prefix="medclipsam-demo-clip-") as tmp):
        staged = write_clip_folder(Path(tmp) / "model", arch, None, vocab_words=vocab)
        model, tokenizer = _build_model(staged, seed)
        if init is not None:
            init_sha256 = load_init_weights(model, staged, Path(init))
            say(f"fine-tuning {init} (heads alone for {head_steps} steps)")
        model.to(dev)
        visual = model.visual
        vt_layers = len(visual.trunk.blocks)
        layer = (vt_layers - 1 if m2ib_layer is None else m2ib_layer) % vt_layers
        size = int(arch["open_clip_config"]["model_cfg"]["vision_cfg"]["image_size"])
        grid = int(visual.trunk.patch_embed.grid_size[0])
        npre = int(getattr(visual.trunk, "num_prefix_tokens", 1))
        mean = tuple(arch["open_clip_config"]["preprocess_cfg"]["mean"])
        std = tuple(arch["open_clip_config"]["preprocess_cfg"]["std"])
        train = prepare(data, prompts, size, grid, mean, std, hidden_targets)
        val = prepare(val_data, prompts, size, grid, mean, std, hidden_targets)
        say(f"data: {len(data)} training and {len(val_data)} held-out slices, structures {structures}, "
            f"{len(prompts)} prompts, {len(set(train.captions))} distinct captions, vocabulary {len(vocab)} words "
            f"({time.perf_counter() - t0:.1f} s)")

        heads = Heads().to(dev)
        opt = make_optimiser(model, heads, lr, fine_tune=init is not None)
        warmup = max(1, min(50, (steps - head_steps) // 10))
        order_rng = np.random.default_rng(seed)
        prompt_texts = [p.text for p in prompts]
        pairs = lateral_pairs(prompt_texts)
        unknown_mass = set(mass_structures) - set(structures)
        if unknown_mass:
            raise ValueError(f"mass_structures {sorted(unknown_mass)} are not structures of this data: {structures}")
        mass_prompts = (torch.tensor([any(t in mass_structures for t in p.targets) for p in prompts], device=dev)
                        if mass_structures else None)

        eval_idx = np.arange(min(len(val_data), 64))     # fixed held-out batch for the contrastive loss
        loss0 = heldout_contrastive_loss(model, tokenizer, val, eval_idx)
        say(f"step 0: held-out contrastive loss {loss0:.4f}")
        history: list[dict[str, float]] = []
        perm = np.empty(0, dtype=np.int64)
        n = len(data)
        bs = min(batch_size, n)
        running: dict[str, float] = {}
        t_train = time.perf_counter()
        for step in range(steps):
            if perm.size < bs:
                perm = np.concatenate([perm, order_rng.permutation(n)])
            idx, perm = perm[:bs], perm[bs:]
            ids = torch.from_numpy(idx)
            model.train()
            model_lr = 0.0 if step < head_steps else _lr_at(step - head_steps, steps - head_steps, lr, warmup)
            for i, g in enumerate(opt.param_groups):
                g["lr"] = HEAD_LR if (i == 2 and step < head_steps) else model_lr

            batch = (train.pixels[ids].to(dev), train.cover[ids].to(dev), train.labels[ids].to(dev),
                     train.known[ids].to(dev))
            parts = batch_losses(model, tokenizer, heads, batch, [train.captions[i] for i in idx], layer=layer,
                                 npre=npre, prompt_texts=prompt_texts, weights=w, pairs=pairs,
                                 mass_prompts=mass_prompts, dense_focal=dense_focal,
                                 presence_focal=presence_focal, bf16=bf16)
            loss = sum(w[k] * v for k, v in parts.items())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(model.parameters()) + list(heads.parameters()), 1.0)
            opt.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0.0, math.log(100.0))

            for k, v in parts.items():
                running[k] = running.get(k, 0.0) + float(v.detach())
            running["loss"] = running.get("loss", 0.0) + float(loss.detach())
            running["_n"] = running.get("_n", 0.0) + 1
            if (step + 1) % log_every == 0 or step + 1 == steps:
                k_n = running.pop("_n")
                entry = {"step": step + 1, **{k: round(v / k_n, 4) for k, v in running.items()}}
                history.append(entry)
                running = {}
                el = time.perf_counter() - t_train
                say(f"step {step + 1}/{steps}: " + " ".join(f"{k}={v:.4f}" for k, v in entry.items() if k != "step")
                    + f" lr={opt.param_groups[0]['lr']:.2e} ({el:.0f} s, {el / (step + 1):.2f} s/step)")
        train_seconds = time.perf_counter() - t_train
        loss1 = heldout_contrastive_loss(model, tokenizer, val, eval_idx)
        say(f"held-out contrastive loss {loss0:.4f} -> {loss1:.4f}")
        calib, caption_top1, distinct_captions = heldout_scores(model, tokenizer, val, prompts)
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}

    calibrated_on = (f"{len(val_data)} held-out synthetic slices ({data_note or 'recipe data'}), "
                     f"{calib['pairs']} (slice, structure prompt) pairs, {calib['present_pairs']} present")
    folder = write_model_folder(out_dir, arch, state, vocab, calib, calibrated_on)
    metrics: dict[str, Any] = {
        "steps": steps, "batch_size": bs, "seed": seed, "lr": lr, "bf16": bool(bf16), "device": dev.type,
        "n_train": len(data), "n_val": len(val_data),
        "structures": structures, "m2ib_layer": layer, "loss_weights": w, "dense_focal": dense_focal,
        "presence_focal": presence_focal, **({"mass_structures": list(mass_structures)} if mass_structures else {}),
        **({"init": str(init), "init_weights_sha256": init_sha256, "head_steps": head_steps} if init else {}),
        "contrastive_loss_initial": round(loss0, 4), "contrastive_loss_final": round(loss1, 4),
        "retrieval_auc": calib["auc"], "presence_threshold": calib["presence_threshold"],
        "presence_balanced_accuracy": calib["balanced_accuracy"], "per_prompt_auc": calib["per_prompt_auc"],
        "caption_top1": round(caption_top1, 4), "distinct_val_captions": distinct_captions,
        "train_seconds": round(train_seconds, 1), "history": history,
    }
    if check_saliency > 0:
        checks = {k: v for k, v in SALIENCY_CHECKS.items() if v in structures}
        metrics["m2ib"] = saliency_check(folder, val_data, checks, check_saliency, layer)
        for name, r in metrics["m2ib"].items():
            say(f"M2IB (layer {layer}) '{name}' on {r['slices']} held-out slices: inside/outside mean saliency "
                f"{r['inside_outside_ratio_median']:.2f} (median), inside > outside on {r['inside_gt_outside']:.0%}, "
                f"pointing game {r['pointing_game']:.0%}")
    beta = None
    if tune_slices > 0:
        targets = {k: v for k, v in BETA_TARGETS.items() if all(p in structures for p in GROUPS.get(v, (v,)))}
        metrics["beta_tuning"] = tuned = tune_beta(folder, val_data, targets, tune_slices, layer, RECOMMENDED_SETTINGS)
        beta = tuned["beta"]
        say(f"M2IB β chosen on held-out slices {tuned['slices']}: {beta:g} (coarse-mask Dice per β "
            f"{tuned['mean_dice']})" if beta is not None else "M2IB β: no held-out slices to tune on; default kept")
    metrics["seconds"] = round(time.perf_counter() - t0, 1)
    card_metrics = {k: v for k, v in metrics.items() if k != "history"}
    _write_card(folder, {"architecture": arch["name"], "training": "training/clip_demo.py",
                         "data": data_note or "synthetic slices given to train_demo_clip",
                         "pipeline_overrides": pipeline_recommendations(layer, beta), "metrics": card_metrics})
    say(f"wrote {folder} ({metrics['seconds']:.0f} s)")
    return metrics
