"""The weakly supervised stage behind a MONAI Label app: train from the datastore's accepted labels,
infer with the published ensemble, score unlabeled studies, pick the most uncertain one, and
decide when enough new labels call for retraining. The app's tasks only forward to these.

Datastore use (MONAI Label's ``Datastore`` interface): ``datalist()`` gives the studies with a
``final`` label (never the model's own ``original`` predictions); ``get_label_info`` holds the
``label_info`` a client submitted (segment names → values); image info stores each study's
uncertainty with the ensemble it was computed with (``medclipsam_uncertainty``), so a newly
published ensemble makes old scores stale.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..errors import ConfigError, InputError
from ..serving.request import first
from ..serving.vocabulary import Vocabulary
from .ensemble import EnsemblePredictor
from .schedule import CyclicSchedule
from .train import MANIFEST, OPTIMIZERS, NetworkConfig, TrainConfig, publish, train_ensemble, volumes_to_pairs

SCORE_KEY = "medclipsam_uncertainty"

logger = logging.getLogger(__name__)

# What a datastore that keeps no label info raises when asked for it: MONAI Label's XNAT store raises
# NotImplementedError from get_label_by_image_id (and, like the DSA store, returns {} from get_label_info).
NO_LABEL_INFO = (NotImplementedError,)


def train_defaults() -> dict[str, Any]:
    """The train options clients show (Slicer's Options table, OHIF's dialog)."""
    c, s = TrainConfig(), CyclicSchedule(epochs=12, cycles=3)
    return {"epochs": s.epochs, "cycles": s.cycles, "keep_per_cycle": s.keep_per_cycle, "lr_max": s.lr_max,
            "lr_min": s.lr_min, "iterations_per_epoch": c.iterations_per_epoch, "batch_size": c.batch_size,
            "size": c.size, "optimizer": list(OPTIMIZERS), "seed": c.seed, "max_studies": 0}


# keys MONAI Label itself puts in a train request: the endpoint's "model", "gpus" (async_tasks),
# "local_rank" (the task process), "bundle_path" (bundle trainers), and BasicTrainTask's default
# config (monailabel/tasks/train/basic_train.py), which the trainer's config() — merged under every
# request — carries and medclipsam_weak ignores; "device" is ours, resolved apart
TRAIN_REQUEST_KEYS = ("model", "gpus", "local_rank", "bundle_path", "device")
BASIC_TRAIN_CONFIG_KEYS = ("name", "pretrained", "max_epochs", "early_stop_patience", "val_split", "train_batch_size",
                           "val_batch_size", "multi_gpu", "dataset", "dataloader", "tracking", "tracking_uri",
                           "tracking_experiment_name")
SIZE_MULTIPLE = 2 ** 4                  # BasicUNet pools four times: the in-plane size must halve 4 times
MAX_SEED = 2 ** 63 - 1
MAX_LR = 1.0


def _option(request: Mapping[str, Any], key: str, default: Any) -> Any:
    value = first(request.get(key, default))
    return default if value is None or value == "" else value


def _whole(request: Mapping[str, Any], key: str, default: int, low: int, high: int | None = None,
           hint: str = "") -> int:
    """Option ``key`` as a whole number in ``low..high`` (``high`` None: no upper bound)."""
    value = _option(request, key, default)
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        number = int(value.strip())
    span = f"≥ {low}" if high is None else f"≥ {low} and < 2^63" if high == MAX_SEED else f"{low}..{high}"
    if number is None or number < low or (high is not None and number > high):
        raise ConfigError(f"train option {key!r} = {value!r}: must be a whole number {span}{hint}; "
                          f"e.g. {default} (the default)")
    return number


def _real(request: Mapping[str, Any], key: str, default: float) -> float:
    """Option ``key`` as a learning rate: a finite number in (0, MAX_LR]."""
    value = _option(request, key, default)
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not (math.isfinite(number) and 0 < number <= MAX_LR):
        raise ConfigError(f"train option {key!r} = {value!r}: must be a number in (0, {MAX_LR:g}]; e.g. {default:g} "
                          "(the default)")
    return number


def train_config(request: Mapping[str, Any], device: str) -> TrainConfig:
    """The :class:`TrainConfig` of a train request, every option range-checked (a
    :class:`ConfigError` names the option, its range and the default to use)."""
    d = train_defaults()
    epochs = _whole(request, "epochs", d["epochs"], 1)
    cycles = _whole(request, "cycles", d["cycles"], 1, epochs, " (at most epochs)")
    if epochs % cycles:
        raise ConfigError(f"train options 'epochs' = {epochs} and 'cycles' = {cycles}: epochs must be a multiple of "
                          f"cycles (equal cycles); e.g. epochs {cycles * max(1, epochs // cycles)}")
    keep = _whole(request, "keep_per_cycle", d["keep_per_cycle"], 1, epochs // cycles,
                  f" (at most the {epochs // cycles} epochs of one cycle: epochs / cycles)")
    lr_max, lr_min = _real(request, "lr_max", d["lr_max"]), _real(request, "lr_min", d["lr_min"])
    if lr_min > lr_max:
        raise ConfigError(f"train options 'lr_min' = {lr_min:g} > 'lr_max' = {lr_max:g}: need lr_min ≤ lr_max "
                          f"(each cycle decays from lr_max to lr_min); e.g. lr_min {lr_max / 100:g}")
    size = _whole(request, "size", d["size"], SIZE_MULTIPLE)
    if size % SIZE_MULTIPLE:
        lower = size // SIZE_MULTIPLE * SIZE_MULTIPLE
        raise ConfigError(f"train option 'size' = {size}: must be a multiple of {SIZE_MULTIPLE} (the U-Net halves it "
                          f"four times); e.g. {lower} or {lower + SIZE_MULTIPLE}")
    optimizer = str(_option(request, "optimizer", d["optimizer"][0])).strip().lower()
    if optimizer not in OPTIMIZERS:
        raise ConfigError(f"train option 'optimizer' = {optimizer!r}: choose one of {', '.join(OPTIMIZERS)} "
                          f"(default {d['optimizer'][0]})")
    sched = CyclicSchedule(epochs=epochs, cycles=cycles, lr_max=lr_max, lr_min=lr_min, keep_per_cycle=keep)
    return TrainConfig(schedule=sched, size=size, batch_size=_whole(request, "batch_size", d["batch_size"], 1),
                       iterations_per_epoch=_whole(request, "iterations_per_epoch", d["iterations_per_epoch"], 1),
                       optimizer=optimizer, seed=_whole(request, "seed", d["seed"], 0, MAX_SEED), device=device)


@dataclass(frozen=True)
class StepMemory:
    """Estimated memory of one training step (:func:`train_step_memory`)."""

    activation_bytes: int               # saved activations, transient gradients, workspace
    parameter_bytes: int                # weights, their gradients, optimiser state

    @property
    def total_bytes(self) -> int:
        return self.activation_bytes + self.parameter_bytes


LOSS_FLOATS_PER_CLASS = 3.2             # Dice + CE keep softmax, one-hot target, log-softmax (+ sums)
WORKSPACE_BYTES = 128 * 2 ** 20         # convolution workspace and allocator slack (measured: ~100 MiB)
OPTIMIZER_STATE = {"adam": 2, "sgd": 1}  # float32 tensors per parameter: AdamW's two moments, SGD's momentum


def activation_floats_per_pixel(features: Sequence[int], num_classes: int) -> float:
    """float32 values one sample of a training step holds per input pixel (see :func:`train_step_memory`)."""
    f = list(features)
    if len(f) != 6:
        raise ConfigError(f"BasicUNet takes 6 feature widths, not {len(f)}: {f}")
    encoder = 1 + 4 * f[0] + sum((3 * f[lv - 1] + 4 * f[lv]) / 4 ** lv for lv in range(1, 5))
    out = {4: f[4], 3: f[3], 2: f[2], 1: f[1], 0: f[5]}          # each level's output width in the decoder
    decoder = 0.0
    for lv in (3, 2, 1, 0):
        up = out[lv + 1] if lv == 0 else out[lv + 1] // 2         # the last up-sampling keeps its width
        decoder += (2 * up + f[lv] + 4 * out[lv]) / 4 ** lv
    transient = 2 * (f[0] + out[1]) + 2 * num_classes
    return encoder + decoder + LOSS_FLOATS_PER_CLASS * num_classes + transient


def train_step_memory(batch_size: int, size: int, num_classes: int, network: NetworkConfig | None = None,
                      optimizer: str = "adam") -> StepMemory:
    """Memory of one step of :func:`~.train.train_ensemble` (forward, Dice + CE, backward, optimiser
    step) on ``batch_size`` slices of ``size × size``, in float32 (as on a CPU; on CUDA, under bf16
    autocast, the convolution outputs are half as big — not measured here, no GPU: the float32 figure is
    used there too, on the safe side except for cuDNN's workspace).

    With the U-Net's feature widths f0..f5 (levels l = 0..4 at 1/4^l of the pixels; decoder
    outputs u4 = f4, u3 = f3, u2 = f2, u1 = f1, u0 = f5; up-sampled widths up_l = u_(l+1)/2, up_0 = u1),
    C classes and P parameters::

        bytes = 4 · B · S² · A + W + 4 · P · (2 + k)
        A = 1 + 4 f0 + Σ_(l=1..4) (3 f_(l-1) + 4 f_l) / 4^l       encoder: per conv its output and the
                                                                   norm/activation output; max-pool output
                                                                   and int64 indices
          + Σ_(l=3..0) (2 up_l + f_l + 4 u_l) / 4^l                decoder: transposed conv, concatenation,
                                                                   two convs
          + 3.2 C                                                  loss (softmax, one-hot, log-softmax)
          + 2 (f0 + u1) + 2 C                                      gradients alive at once in the backward
                                                                   pass (the widest full-size pair + logits)

    W = 128 MiB of convolution workspace and allocator slack, k = optimiser tensors per parameter
    (AdamW 2, SGD 1). The saved-activation terms equal what autograd keeps (counted with
    ``torch.autograd.graph.saved_tensors_hooks``: 389.8 + 32.0 floats per pixel for the default
    widths and 10 classes, formula 389.5 + 32). Checked against the peak resident memory of one step on
    a CPU (``benchmarks/weak_train_memory.py``, 2-core machine, default widths, 10 classes, AdamW;
    measured / estimated activation part, MiB): 16 × 128² 606 / 666, 32 × 128² 1022 / 1203,
    4 × 256² 554 / 666 (670 in another run), 16 × 256² 1894 / 2278, 2 × 512² 1070 / 1203,
    1 × 1024² 1914 / 2278 — measured/estimated 0.83–1.01. The training set itself (every labelled
    slice at ``size²``) is not included: it depends on the studies."""
    import torch

    from .train import build_network

    net_cfg = network or NetworkConfig()
    with torch.device("meta"):
        params = sum(p.numel() for p in build_network(num_classes, net_cfg).parameters())
    per_pixel = activation_floats_per_pixel(net_cfg.features, num_classes)
    activations = int(4 * batch_size * size * size * per_pixel) + WORKSPACE_BYTES
    return StepMemory(activations, 4 * params * (2 + OPTIMIZER_STATE.get(optimizer, 2)))


def available_memory(device: str) -> tuple[int, str]:
    """Bytes a training step may use on ``device`` and what that figure is."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        free, total = torch.cuda.mem_get_info(dev)
        return int(free), f"free memory of {dev} ({total / 2 ** 30:.1f} GiB in all)"
    import psutil

    vm = psutil.virtual_memory()
    return int(vm.available), f"available system memory ({vm.total / 2 ** 30:.1f} GiB in all)"


def check_train_request(request: Mapping[str, Any], device: str, num_classes: int | None = None,
                        available: tuple[int, str] | None = None) -> TrainConfig:
    """Everything a ``medclipsam_weak`` train request can get wrong, checked before any work: every
    option's range (:func:`train_config`), ``max_studies`` ≥ 0, unknown option keys (MONAI Label's
    own :data:`TRAIN_REQUEST_KEYS` and :data:`BASIC_TRAIN_CONFIG_KEYS`, and the per-model block of
    ``POST /train/`` aside), and the memory
    of one training step (:func:`train_step_memory`) against what ``device`` has (``available``:
    bytes and a description; default: :func:`available_memory`). Returns the :class:`TrainConfig`;
    raises :class:`ConfigError` naming the option, the allowed range and the fix."""
    known = set(train_defaults()) | set(TRAIN_REQUEST_KEYS) | set(BASIC_TRAIN_CONFIG_KEYS)
    model = request.get("model")
    unknown = sorted(str(k) for k in request if k not in known and not (k == model and isinstance(request[k], dict)))
    if unknown:
        raise ConfigError(f"unknown train option(s) {', '.join(map(repr, unknown))}; the options of medclipsam_weak "
                          f"are {', '.join(train_defaults())} (and device)")
    cfg = train_config(request, device)
    _whole(request, "max_studies", train_defaults()["max_studies"], 0, hint=" (0: every study with a final label)")
    if num_classes is None:
        from ..serving.vocabulary import load_vocabulary

        num_classes = load_vocabulary().prompted_value + 1
    need = train_step_memory(cfg.batch_size, cfg.size, num_classes, cfg.network, cfg.optimizer)
    have, what = available if available is not None else available_memory(device)
    if need.total_bytes > have:
        budget = have - need.parameter_bytes - WORKSPACE_BYTES       # for the activations
        per_slice = max(need.activation_bytes - WORKSPACE_BYTES, 1) / cfg.batch_size
        fit = int(budget // per_slice)
        side = int(math.sqrt(max(budget, 0) / per_slice) * cfg.size) // SIZE_MULTIPLE * SIZE_MULTIPLE
        hint = (f"lower batch_size to {fit} or less" if fit >= 1 else
                f"lower size to {side} or less and batch_size to 1" if side >= SIZE_MULTIPLE else
                "this device cannot hold even the smallest step: use another device")
        raise ConfigError(f"train options 'batch_size' = {cfg.batch_size} and 'size' = {cfg.size}: one training step "
                          f"needs about {_gib(need.total_bytes)} but the {what} is {_gib(have)}; {hint} "
                          f"(memory grows with batch_size × size²; defaults {train_defaults()['batch_size']} and "
                          f"{train_defaults()['size']})")
    return cfg


def _gib(n: float) -> str:
    return f"{n / 2 ** 30:.2f} GiB" if n < 2 ** 40 else f"{n / 2 ** 40:.2f} TiB"


def final_label_info(datastore: Any, image_id: str) -> dict[str, Any]:
    """The info stored with ``image_id``'s final label; ``{}`` from a datastore that keeps none
    (:data:`NO_LABEL_INFO`). Any other failure propagates: the caller decides what it means."""
    try:
        label_id = datastore.get_label_by_image_id(image_id, "final")
        info = datastore.get_label_info(label_id, "final") if label_id else {}
    except NO_LABEL_INFO:
        logger.debug("medclipsam_weak: the datastore keeps no label info (study %s)", image_id)
        return {}
    return info if isinstance(info, dict) else {}


def training_items(datastore: Any, max_studies: int = 0) -> list[dict[str, Any]]:
    """``{"image", "label", "label_info"}`` for every study with a final label.

    A datastore that keeps no label info gives ``label_info`` None (values are taken as vocabulary
    values). A study whose label info cannot be read is left out with a warning naming it and the
    error: without its segment names its values could be trained as the wrong classes."""
    items = []
    for d in datastore.datalist():
        image_id = image_id_of(d["image"])
        try:
            info = final_label_info(datastore, image_id)
        except Exception as e:
            logger.warning("medclipsam_weak: study %s left out of training: its final label's info (segment "
                           "names) cannot be read: %s: %s", image_id, type(e).__name__, e)
            continue
        label_info = info.get("label_info")
        items.append({"image": d["image"], "label": d["label"], "label_info": label_info, "id": image_id})
    items.sort(key=lambda it: it["id"])
    return items[:max_studies] if max_studies > 0 else items


def image_id_of(path: str | Path) -> str:
    """The datastore id of an image file (its name without the volume suffix)."""
    from ..volume.inputs import volume_stem

    return volume_stem(path) or Path(path).stem


def read_array(image: str | Path) -> tuple[np.ndarray, Any]:
    """A volume file or DICOM series as float32 (slices, rows, cols) and its geometry."""
    from ..volume.inputs import close_volume, open_volume

    src = open_volume(image)
    try:
        return np.stack([np.asarray(src.read_slice(k), np.float32) for k in range(len(src))]), src.geometry
    finally:
        close_volume(src)


def train_from_datastore(datastore: Any, vocabulary: Vocabulary, request: Mapping[str, Any], model_dir: str | Path,
                         device: str = "cpu", log: Callable[[str], None] = print,
                         should_stop: Callable[[], bool] = lambda: False) -> dict[str, Any]:
    """Train on the final labels and publish to ``model_dir/ensemble``; returns the train stats."""
    from .data import slice_set

    cfg = train_config(request, device)
    items = training_items(datastore, _whole(request, "max_studies", 0, 0))
    if not items:
        raise InputError("no study has a final label yet: submit at least one label (Slicer: Submit Label) "
                         "before training")
    log(f"training on {len(items)} studies with final labels: {', '.join(i['id'] for i in items)}")
    data = slice_set(volumes_to_pairs(items, vocabulary), cfg.size)
    runs = Path(model_dir) / "runs"
    run = runs / time.strftime("%Y%m%d_%H%M%S")
    while run.exists():
        run = run.with_name(run.name + "_")
    manifest = train_ensemble(data, vocabulary.prompted_value + 1, run, cfg, classes=vocabulary.labels(), log=log,
                              should_stop=should_stop)
    manifest["studies_used"] = [i["id"] for i in items]
    (run / MANIFEST).write_text(json.dumps(manifest, indent=1))
    published = publish(run, ensemble_dir(model_dir))
    stats = {"name": "medclipsam_weak", "published": str(published), "studies": len(items),
             "slices": manifest["slices"], "members": len(manifest["members"]), "total_time": manifest["seconds"],
             "epochs": len(manifest["epochs"]), "final_loss": manifest["epochs"][-1]["loss"],
             "schedule": asdict(cfg.schedule), "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    (Path(model_dir) / "train_stats.json").write_text(json.dumps(stats, indent=1))
    log(f"published {len(manifest['members'])} checkpoints to {published}")
    return stats


def ensemble_dir(model_dir: str | Path) -> Path:
    return Path(model_dir) / "ensemble"


def model_stamp(predictor: EnsemblePredictor) -> int:
    """Identifies the published ensemble (its manifest's mtime); 0 when none."""
    p = predictor.folder / MANIFEST
    return p.stat().st_mtime_ns if p.is_file() else 0


def infer_volume(predictor: EnsemblePredictor, image: str | Path, request: Mapping[str, Any], device: str,
                 vocabulary: Vocabulary) -> tuple[str, dict[str, Any], Any]:
    """Label (or, with ``return=entropy``, the entropy map) of ``image`` on its own grid; returns
    (file, result JSON, the ensemble result)."""
    import tempfile

    from ..volume.itk_io import write_label

    if not predictor.available():
        raise InputError("the weakly supervised model is not trained yet: train it first "
                         "(POST /train/medclipsam_weak, or Slicer's Train button)")
    what = str(first(request.get("return", "label")) or "label").lower()
    if what not in ("label", "entropy"):
        raise ConfigError(f"option 'return' = {what!r}; choose label or entropy")
    t0 = time.perf_counter()
    volume, geometry = read_array(image)
    result, manifest = predictor(volume, device)
    ext = str(request.get("result_extension") or ".nii.gz")
    fd, tmp = tempfile.mkstemp(prefix="medclipsam_weak_", suffix=ext)
    os.close(fd)
    os.unlink(tmp)
    names = {v: k for k, v in vocabulary.labels().items()}
    present = sorted(int(v) for v in np.unique(result.labels) if v)
    if what == "entropy":
        path = _write_float(Path(tmp), result.entropy, geometry)
    else:
        path = write_label(tmp, result.labels, geometry, label_names={v: names.get(v, f"label {v}") for v in present})
    js = {"tool": "medclipsam", "model": "medclipsam_weak", "returned": what,
          "label_names": {names.get(v, f"label {v}"): v for v in present},
          "uncertainty": round(result.uncertainty, 6), "mean_entropy": round(result.mean_entropy, 6),
          "member_agreement": round(result.member_agreement, 6),
          "members": result.members, "ensemble": str(predictor.folder), "trained_on": manifest.get("studies_used", []),
          "seconds": round(time.perf_counter() - t0, 3)}
    return str(path), js, result


def _write_float(path: Path, array: np.ndarray, geometry) -> Path:
    from ..volume.itk_io import write_image
    from ..volume.source import ArrayVolume

    return write_image(path, ArrayVolume(array.astype(np.float32), geometry, description="entropy map"))


def record_score(datastore: Any, image_id: str, uncertainty: float, stamp: int) -> None:
    datastore.update_image_info(image_id, {SCORE_KEY: {"value": float(uncertainty), "model": stamp,
                                                       "ts": int(time.time())}})


def stored_score(datastore: Any, image_id: str, stamp: int) -> float | None:
    info = datastore.get_image_info(image_id) or {}
    s = info.get(SCORE_KEY)
    if isinstance(s, dict) and s.get("model") == stamp:
        return float(s["value"])
    return None


NOTHING_TO_SCORE = ("nothing to score yet: no trained medclipsam_weak ensemble (train it: POST "
                    "/train/medclipsam_weak, or submit final labels until auto_train_after starts it)")


def score_unlabeled(datastore: Any, predictor: EnsemblePredictor, device: str = "cpu",
                    log: Callable[[str], None] = print) -> dict[str, float]:
    """Uncertainty of every unlabeled study not yet scored with the current ensemble; returns all scores.

    Without a trained ensemble (every start before the first training: MONAI Label runs every
    scoring method at start-up) there is nothing to score: :data:`NOTHING_TO_SCORE` is logged and
    the result is empty — a normal outcome, not an error."""
    if not predictor.available():
        log(NOTHING_TO_SCORE)
        return {}
    stamp = model_stamp(predictor)
    scores = {}
    for image_id in sorted(datastore.get_unlabeled_images()):
        known = stored_score(datastore, image_id, stamp)
        if known is not None:
            scores[image_id] = known
            continue
        volume, _ = read_array(datastore.get_image_uri(image_id))
        result, _ = predictor(volume, device)
        record_score(datastore, image_id, result.uncertainty, stamp)
        scores[image_id] = result.uncertainty
        log(f"{image_id}: uncertainty {result.uncertainty:.4f}")
    return scores


def most_uncertain(datastore: Any, predictor: EnsemblePredictor) -> tuple[str | None, float | None, str]:
    """The unlabeled study with the highest score of the current ensemble; (id, score, how chosen).
    Without any current score, the first unlabeled study, said so."""
    images = sorted(datastore.get_unlabeled_images())
    if not images:
        return None, None, "no unlabeled study left"
    stamp = model_stamp(predictor)
    scored = [(s, i) for i in images if (s := stored_score(datastore, i, stamp)) is not None] if stamp else []
    if not scored:
        return images[0], None, ("fallback to the first unlabeled study: no uncertainty scores for the current "
                                 "model yet (run scoring 'medclipsam_uncertainty', or train first)")
    score, image = max(scored)
    unscored = len(images) - len(scored)
    return image, score, "highest ensemble uncertainty" + (f" ({unscored} unlabeled studies not scored yet)"
                                                             if unscored else "")


def labels_since_training(datastore: Any, predictor: EnsemblePredictor) -> int:
    """Images whose final label was saved after the published ensemble was trained (all of them before
    the first training). Each image counts once, however often its label was resubmitted; the
    datastore's ``get_labeled_images()`` must list a label saved a moment ago (MONAI Label's DICOMweb
    store caches that list for two hours and lists an image once per SEG; ours does neither).
    A label whose info cannot be read is not counted, with a warning naming the study and the error;
    a datastore that keeps no label info has no save times, so nothing counts as new there."""
    stamp = model_stamp(predictor) / 1e9
    count = 0
    for image_id in sorted(set(datastore.get_labeled_images())):
        try:
            ts = float(final_label_info(datastore, image_id).get("ts", 0))
        except Exception as e:                  # not counted: an unreadable label must not start training
            logger.warning("medclipsam_weak: final label of study %s not counted as new (its save time cannot "
                           "be read): %s: %s", image_id, type(e).__name__, e)
            continue
        count += ts > stamp
    return count


def auto_train_due(datastore: Any, predictor: EnsemblePredictor, every: int) -> bool:
    return every > 0 and labels_since_training(datastore, predictor) >= every
