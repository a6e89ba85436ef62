"""The recipe: :func:`train_demo_sam` trains a SAM of an architecture on slices and writes its checkpoint and card."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from .card import _sha256, write_card
from .evaluate import evaluate_sam
from .inputs import augment, model_input
from .losses import prompt_losses
from .sampling import ImagePrompts, PromptSampling, Slice, sample_image_prompts, with_unions


def train_demo_sam(data: Sequence[Slice], out_path: str | Path, *, steps: int, batch_size: int = 8, seed: int = 0,
                   lr: float = 1e-3, log_every: int = 50, architecture: str = "demo",
                   val_data: Sequence[Slice] | None = None, sampling: PromptSampling | None = None,
                   weight_decay: float = 0.01, warmup_steps: int | None = None, multimask_weight: float = 0.5,
                   iou_weight: float = 1.0, unions: Mapping[str, Sequence[str]] | None = None,
                   threads: int | None = 2, device: str = "cpu", data_description: str = "",
                   init: str | Path | None = None,
                   log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Train a SAM of ``architecture`` (a bundled name or a JSON file) on ``data`` and save it.

    ``data``: a sequence of slices with ``.rgb`` (uint8 H×W×3) and ``.masks`` (structure -> bool
    H×W). ``val_data``: held-out slices for the reported Dice; by default the last
    ``max(1, len(data) // 10)`` slices of ``data`` are held out (and not trained on). ``unions``:
    extra targets made of several structures (:func:`with_unions`, e.g. ``{"lungs": ("left lung",
    "right lung")}``), trained and evaluated like the others.

    Writes ``out_path`` (a SAM state dict, atomically, with :func:`save_sam_checkpoint`) and the
    model card ``out_path.with_suffix(".json")`` (``intended_use: demo``, read by ``load_sam``); reloads the
    checkpoint with ``load_sam(f"{architecture}:{out_path}")`` and measures held-out Dice through ``SamSegmenter``
    (:func:`evaluate_sam`). Returns the metrics: ``box_dice``, ``component_box_dice``,
    ``point_dice``, ``per_structure``, ``loss_history`` (one value per step), ``loss_first`` /
    ``loss_last`` (mean of the first / last ``min(20, steps)`` steps), ``steps``, ``seconds``.
    ``threads``: torch CPU threads while training (the previous setting is restored afterwards).
    ``device``: where the model trains (``"cpu"``, ``"cuda"``); the held-out evaluation reloads the
    checkpoint and runs on the CPU either way. ``init``: a checkpoint of the same architecture to
    start from (fine-tuning) instead of random weights; the card records its name and SHA-256.
    """
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _train(data, Path(out_path), steps=steps, batch_size=batch_size, seed=seed, lr=lr, log_every=log_every,
                      architecture=architecture, val_data=val_data, sampling=sampling, weight_decay=weight_decay,
                      warmup_steps=warmup_steps, multimask_weight=multimask_weight, iou_weight=iou_weight,
                      unions=unions, device=device, data_description=data_description, init=init, log=log)
    finally:
        torch.set_num_threads(previous)


def _optimiser(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW; no weight decay on vectors and the positional embeddings."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "pos_embed" in name or "rel_pos" in name else decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.999))


def _schedule(lr: float, steps: int, warm: int) -> Callable[[int], float]:
    def lr_at(step: int) -> float:  # linear warm-up, cosine decay to 5 %
        if step < warm:
            return lr * (step + 1) / warm
        t = (step - warm) / max(1, steps - warm)
        return lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))
    return lr_at


def _sample_batch(train: Sequence[Slice], rng: np.random.Generator, cfg: PromptSampling,
                  unions: Mapping[str, Sequence[str]] | None, model, transform, batch_size: int
                  ) -> tuple[list[torch.Tensor], list[tuple[int, int]], list[ImagePrompts]]:
    """``batch_size`` augmented images with prompts (images without a structure to prompt are skipped)."""
    images, sizes, batch_prompts = [], [], []
    while len(images) < batch_size:
        item = train[int(rng.integers(len(train)))]
        rgb, masks = augment(np.asarray(item.rgb), with_unions(item.masks, unions), rng)
        prompts = sample_image_prompts(masks, rng, cfg)
        if prompts is None:
            continue
        x, size = model_input(model, transform, rgb)
        images.append(x)
        sizes.append(size)
        batch_prompts.append(prompts)
    return images, sizes, batch_prompts


def _evaluate_on_one_thread(sam, val_data: Sequence[Slice], **kwargs) -> dict[str, Any]:
    # one thread for the evaluation: many small decoder calls, which a second thread does not speed up
    # and which slow down badly when other processes compete for the cores
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return evaluate_sam(sam, val_data, **kwargs)
    finally:
        torch.set_num_threads(threads)


def _train(data: Sequence[Slice], out_path: Path, *, steps: int, batch_size: int, seed: int, lr: float, log_every: int,
           architecture: str, val_data: Sequence[Slice] | None, sampling: PromptSampling | None,
           weight_decay: float, warmup_steps: int | None, multimask_weight: float, iou_weight: float,
           unions: Mapping[str, Sequence[str]] | None, device: str, data_description: str,
           init: str | Path | None, log: Callable[[str], None] | None) -> dict[str, Any]:
    from segment_anything.utils.transforms import ResizeLongestSide

    from medclipsam.models.sam import build_sam, load_sam, sam_architecture, save_sam_checkpoint

    t_start = time.perf_counter()
    out_path = Path(out_path)
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be at least 1, got {steps} and {batch_size}")
    if val_data is None:
        if len(data) < 2:
            raise ValueError("need at least 2 slices (one is held out) or an explicit val_data")
        n_val = max(1, len(data) // 10)
        train, val_data = list(data[:len(data) - n_val]), list(data[len(data) - n_val:])
    else:
        train = list(data)
    if not train:
        raise ValueError("no training slices")
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda was asked for but CUDA is not available here; use device='cpu'")
    cfg = sampling or PromptSampling()
    arch = sam_architecture(architecture)
    say = log or (lambda _msg: None)

    init_record: dict[str, Any] | None = None
    if init is not None:
        # load_sam checks the file and its architecture and says what is wrong; its fresh model is trained on
        start = load_sam(f"{architecture}:{init}")
        model = start.model
        init_record = {"checkpoint": Path(init).name, "sha256": _sha256(Path(init))}
        if start.card.get("training"):           # the starting model's own history, so the card tells it all
            init_record["training"] = start.card["training"]
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build_sam(arch)
    model.to(device)
    model.train()
    transform = ResizeLongestSide(arch.image_size)
    rng = np.random.default_rng(seed)
    opt = _optimiser(model, lr, weight_decay)
    warm = warmup_steps if warmup_steps is not None else min(100, max(1, steps // 10))
    lr_at = _schedule(lr, steps, warm)

    say(f"training SAM '{arch.name}' ({sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters"
        f"{', from ' + init_record['checkpoint'] if init_record else ''}) "
        f"on {len(train)} slices, {len(val_data)} held out; {steps} steps × {batch_size} images, seed {seed}, "
        f"{torch.get_num_threads()} threads, {device}")
    history: list[float] = []
    window: list[dict[str, float]] = []
    t_train = time.perf_counter()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        images, sizes, batch_prompts = _sample_batch(train, rng, cfg, unions, model, transform, batch_size)
        embeddings = model.image_encoder(torch.cat(images))
        losses, parts = [], []
        for i, prompts in enumerate(batch_prompts):
            loss_i, part = prompt_losses(model, transform, embeddings[i:i + 1], sizes[i], prompts,
                                         multimask_weight, iou_weight)
            losses.append(loss_i)
            parts.append(part)
        loss = torch.stack(losses).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        history.append(loss.item())
        window.append({k: float(np.mean([p[k] for p in parts])) for k in parts[0]} | {"loss": history[-1]})
        if log_every and ((step + 1) % log_every == 0 or step + 1 == steps):
            avg = {k: np.mean([w[k] for w in window]) for k in window[0]}
            el = time.perf_counter() - t_train
            say(f"step {step + 1}/{steps}  loss {avg['loss']:.4f}  (single {avg['single']:.4f}, multi "
                f"{avg['multi']:.4f}, iou-mse {avg['iou_mse']:.4f})  train IoU {avg['iou']:.3f}  "
                f"lr {lr_at(step):.2e}  {el:.0f} s")
            window = []
    train_seconds = time.perf_counter() - t_train

    model.eval()
    save_sam_checkpoint(model.to("cpu"), out_path)
    spec = f"{architecture}:{out_path}"
    sam = load_sam(spec)
    if sam.random_weights:  # pragma: no cover - load_sam with a path never says random
        raise RuntimeError(f"{spec} loaded as random weights")
    say(f"saved {out_path} ({out_path.stat().st_size / 1e6:.1f} MB); evaluating {len(val_data)} held-out slices "
        f"through SamSegmenter")
    ev = _evaluate_on_one_thread(sam, val_data, seed=seed + 1, sampling=cfg, unions=unions)
    k = min(20, steps)
    metrics: dict[str, Any] = {
        **ev,
        "loss_first": float(np.mean(history[:k])),
        "loss_last": float(np.mean(history[-k:])),
        "steps": steps,
        "train_seconds": round(train_seconds, 1),
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    run = {
        "recipe": "training/sam_demo.py (train_demo_sam)",
        "data": data_description or f"{len(train)} synthetic slices",
        "train_slices": len(train), "held_out_slices": len(val_data),
        "steps": steps, "batch_size": batch_size, "seed": seed, "lr": lr, "weight_decay": weight_decay,
        "warmup_steps": warm, "schedule": "linear warm-up, cosine decay to 5 %", "optimizer": "AdamW",
    }
    card_path = write_card(out_path, spec, arch, cfg, run=run, multimask_weight=multimask_weight, iou_weight=iou_weight,
                           unions=unions, init_record=init_record, device=device, metrics=metrics, ev=ev)
    say(f"model card {card_path}")
    return metrics | {"loss_history": history, "card": str(card_path), "checkpoint": str(out_path)}
