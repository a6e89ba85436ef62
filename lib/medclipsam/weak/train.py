"""Training the weakly supervised network on accepted labels, with cyclic learning rates and a
checkpoint ensemble (MedCLIP-SAMv2's weakly supervised stage, ``docs/algorithms.md`` §Weak).

Network (:func:`build_network`): MONAI's 2D ``BasicUNet`` over slices (one input channel, one output
per vocabulary class). 2D because the zero-shot labels are made slice by slice, the series in a
PACS have any slice spacing, and it trains on a CPU in minutes; the paper's nnU-Net for these data
is 2D too. Loss: Dice (without background) + cross-entropy, 1:1, as nnU-Net. Optimiser: AdamW
(default; weight decay 3e-5), or nnU-Net's SGD with Nesterov momentum 0.99 (``optimizer="sgd"``,
which needs far more iterations than a CPU run affords); learning rate from
:class:`~.schedule.CyclicSchedule` per iteration. AMP (bf16 autocast) on CUDA only.

Output: a folder with one ``member_<epoch>.pt`` per ensemble checkpoint (the last
``keep_per_cycle`` epochs of every cycle) and ``ensemble.json`` (classes, network, size, schedule,
members, per-epoch statistics). :func:`publish` moves a finished folder into place atomically, so
an infer task never sees half an ensemble.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..errors import ConfigError
from .data import SliceSet, augment, sample_batch
from .schedule import CyclicSchedule

MANIFEST = "ensemble.json"
OPTIMIZERS = ("adam", "sgd")
FORMAT = "medclipsam-weak-ensemble/1"


@dataclass
class NetworkConfig:
    features: tuple[int, ...] = (16, 32, 64, 128, 256, 16)
    dropout: float = 0.0


@dataclass
class TrainConfig:
    schedule: CyclicSchedule = field(default_factory=lambda: CyclicSchedule(epochs=12, cycles=3))
    network: NetworkConfig = field(default_factory=NetworkConfig)
    size: int = 128                     # in-plane size the slices are resampled to
    batch_size: int = 16
    iterations_per_epoch: int = 25
    foreground_fraction: float = 0.33
    optimizer: str = "adam"             # adam (converges in the few hundred iterations a CPU affords) | sgd
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        for name in ("size", "batch_size", "iterations_per_epoch"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be at least 1")
        if self.size % 16:
            raise ConfigError(f"size {self.size} must be a multiple of 16 (four poolings of the U-Net)")


def build_network(num_classes: int, cfg: NetworkConfig | None = None) -> torch.nn.Module:
    from monai.networks.nets import BasicUNet

    cfg = cfg or NetworkConfig()
    return BasicUNet(spatial_dims=2, in_channels=1, out_channels=num_classes, features=tuple(cfg.features),
                     dropout=cfg.dropout)


def build_optimizer(params, kind: str, lr: float) -> torch.optim.Optimizer:
    """AdamW (``adam``) or nnU-Net's SGD with Nesterov momentum 0.99 (``sgd``), weight decay 3e-5."""
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.99, nesterov=True, weight_decay=3e-5)
    if kind == "adam":
        return torch.optim.AdamW(params, lr=lr, weight_decay=3e-5)
    raise ConfigError(f"optimizer {kind!r}; choose one of {', '.join(OPTIMIZERS)}")


def loss_function():
    from monai.losses import DiceCELoss

    return DiceCELoss(include_background=False, to_onehot_y=True, softmax=True, lambda_dice=1.0, lambda_ce=1.0,
                      smooth_nr=1e-5, smooth_dr=1e-5, batch=True)


def train_ensemble(data: SliceSet, num_classes: int, out_dir: str | Path, cfg: TrainConfig | None = None,
                   classes: dict[str, int] | None = None, log: Callable[[str], None] = print,
                   should_stop: Callable[[], bool] = lambda: False) -> dict[str, Any]:
    """Train on ``data`` and write the ensemble to ``out_dir`` (a new folder); returns the manifest."""
    cfg = cfg or TrainConfig()
    sched = cfg.schedule
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} is not empty; train into a new folder")
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    device = torch.device(cfg.device)
    net = build_network(num_classes, cfg.network).to(device)
    opt = build_optimizer(net.parameters(), cfg.optimizer, sched.lr_max)
    loss_fn = loss_function()
    amp = device.type == "cuda"
    members, stats = [], []
    t0 = time.perf_counter()
    for epoch in range(sched.epochs):
        net.train()
        losses = []
        for it in range(cfg.iterations_per_epoch):
            lr = sched.lr(epoch, it / cfg.iterations_per_epoch)
            for g in opt.param_groups:
                g["lr"] = lr
            idx = sample_batch(data, cfg.batch_size, rng, cfg.foreground_fraction)
            x, y = augment(data.images[idx].float(), data.labels[idx].long(), gen)
            x, y = x.to(device), y.to(device)
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=amp):
                logits = net(x)
            loss = loss_fn(logits.float(), y[:, None])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 12.0)
            opt.step()
            losses.append(float(loss.detach()))
        row = {"epoch": epoch, "cycle": sched.cycle(epoch), "lr_start": round(sched.lr(epoch), 6),
               "lr_end": round(sched.lr(epoch, 1.0), 6), "loss": round(float(np.mean(losses)), 5),
               "seconds": round(time.perf_counter() - t0, 1)}
        if sched.keeps(epoch):
            name = f"member_{epoch:04d}.pt"
            torch.save({"model": {k: v.detach().cpu() for k, v in net.state_dict().items()}}, out / name)
            members.append(name)
            row["member"] = name
        stats.append(row)
        log(f"epoch {epoch + 1}/{sched.epochs} cycle {row['cycle'] + 1} lr {row['lr_start']:.5f}->{row['lr_end']:.5f} "
            f"loss {row['loss']:.4f}" + (f" -> {row['member']}" if "member" in row else ""))
        if should_stop():
            log("stopped on request")
            break
    manifest = {"format": FORMAT, "num_classes": num_classes, "classes": classes or {}, "size": cfg.size,
                "network": {"name": "BasicUNet", **asdict(cfg.network)}, "schedule": asdict(sched),
                "members": members, "train": {k: v for k, v in asdict(cfg).items() if k not in ("schedule", "network")},
                "slices": len(data), "studies": int(data.study.max()) + 1 if len(data) else 0, "epochs": stats,
                "seconds": round(time.perf_counter() - t0, 1)}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def publish(trained: str | Path, target: str | Path) -> Path:
    """Move a trained ensemble folder to ``target`` atomically (the old one is replaced)."""
    src, dst = Path(trained), Path(target)
    if not (src / MANIFEST).is_file():
        raise ConfigError(f"{src} holds no {MANIFEST}; not a trained ensemble")
    dst.parent.mkdir(parents=True, exist_ok=True)
    staging = dst.with_name(f".{dst.name}.new")
    if staging.exists():
        shutil.rmtree(staging)
    shutil.copytree(src, staging)
    old = dst.with_name(f".{dst.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if dst.exists():
        os.replace(dst, old)
    os.replace(staging, dst)
    if old.exists():
        shutil.rmtree(old)
    return dst


def members_of(folder: str | Path) -> tuple[dict[str, Any], list[Path]]:
    f = Path(folder)
    try:
        manifest = json.loads((f / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"no trained ensemble in {f} ({e}); train it first (POST /train/medclipsam_weak)") from None
    if manifest.get("format") != FORMAT:
        raise ConfigError(f"{f / MANIFEST} is not a {FORMAT} manifest")
    paths = [f / m for m in manifest["members"]]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing or not paths:
        raise ConfigError(f"ensemble {f} is incomplete (missing: {missing or 'all members'}); train it again")
    return manifest, paths


def load_members(folder: str | Path,
                 device: torch.device | str = "cpu") -> tuple[dict[str, Any], list[torch.nn.Module]]:
    manifest, paths = members_of(folder)
    net_cfg = NetworkConfig(features=tuple(manifest["network"]["features"]), dropout=manifest["network"]["dropout"])
    nets = []
    for p in paths:
        net = build_network(int(manifest["num_classes"]), net_cfg)
        state = torch.load(p, map_location="cpu", weights_only=True)["model"]
        net.load_state_dict(state, strict=True)
        nets.append(net.to(device).eval())
    return manifest, nets


def schedule_from(values: dict[str, Any]) -> CyclicSchedule:
    return CyclicSchedule(**{k: values[k] for k in ("epochs", "cycles", "lr_max", "lr_min", "keep_per_cycle")
                             if k in values})


def volumes_to_pairs(items: Sequence[dict[str, Any]], vocabulary) -> list[tuple[np.ndarray, np.ndarray]]:
    """Datalist items ``{"image", "label", "label_info"?}`` → (normalised volume, vocabulary label) pairs."""
    from ..volume.itk_io import read_volume
    from .data import normalise_volume, remap_label

    pairs = []
    for it in items:
        image, label = read_volume(it["image"]), read_volume(it["label"])
        pairs.append((normalise_volume(image.array), remap_label(label.array, it.get("label_info"), vocabulary)))
    return pairs
