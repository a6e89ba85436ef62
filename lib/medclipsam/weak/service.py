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
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ..errors import ConfigError, InputError
from ..serving.request import first
from ..serving.vocabulary import Vocabulary
from .ensemble import EnsemblePredictor
from .schedule import CyclicSchedule
from .train import MANIFEST, TrainConfig, publish, train_ensemble, volumes_to_pairs

SCORE_KEY = "medclipsam_uncertainty"


def train_defaults() -> dict[str, Any]:
    """The train options clients show (Slicer's Options table, OHIF's dialog)."""
    c, s = TrainConfig(), CyclicSchedule(epochs=12, cycles=3)
    return {"epochs": s.epochs, "cycles": s.cycles, "keep_per_cycle": s.keep_per_cycle, "lr_max": s.lr_max,
            "lr_min": s.lr_min, "iterations_per_epoch": c.iterations_per_epoch, "batch_size": c.batch_size,
            "size": c.size, "optimizer": ["adam", "sgd"], "seed": c.seed, "max_studies": 0}


def _number(request: Mapping[str, Any], key: str, default: Any, cast: Callable) -> Any:
    value = first(request.get(key, default))
    try:
        return cast(value)
    except (TypeError, ValueError):
        raise ConfigError(f"train option {key!r} = {value!r} is not a {cast.__name__}") from None


def train_config(request: Mapping[str, Any], device: str) -> TrainConfig:
    d = train_defaults()
    sched = CyclicSchedule(epochs=_number(request, "epochs", d["epochs"], int),
                           cycles=_number(request, "cycles", d["cycles"], int),
                           lr_max=_number(request, "lr_max", d["lr_max"], float),
                           lr_min=_number(request, "lr_min", d["lr_min"], float),
                           keep_per_cycle=_number(request, "keep_per_cycle", d["keep_per_cycle"], int))
    return TrainConfig(schedule=sched, size=_number(request, "size", d["size"], int),
                       batch_size=_number(request, "batch_size", d["batch_size"], int),
                       iterations_per_epoch=_number(request, "iterations_per_epoch", d["iterations_per_epoch"], int),
                       optimizer=str(first(request.get("optimizer", "adam"))),
                       seed=_number(request, "seed", d["seed"], int), device=device)


def training_items(datastore: Any, max_studies: int = 0) -> list[dict[str, Any]]:
    """``{"image", "label", "label_info"}`` for every study with a final label."""
    items = []
    for d in datastore.datalist():
        image_id = image_id_of(d["image"])
        info = {}
        try:
            label_id = datastore.get_label_by_image_id(image_id, "final")
            info = datastore.get_label_info(label_id, "final") or {}
        except Exception:                                       # a datastore without label info (DICOMweb)
            info = {}
        label_info = info.get("label_info") if isinstance(info, dict) else None
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
    items = training_items(datastore, _number(request, "max_studies", 0, int))
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
    store caches that list for two hours and lists an image once per SEG; ours does neither)."""
    stamp = model_stamp(predictor) / 1e9
    count = 0
    for image_id in sorted(set(datastore.get_labeled_images())):
        try:
            label_id = datastore.get_label_by_image_id(image_id, "final")
            ts = float((datastore.get_label_info(label_id, "final") or {}).get("ts", 0))
        except Exception:
            ts = time.time()
        count += ts > stamp
    return count


def auto_train_due(datastore: Any, predictor: EnsemblePredictor, every: int) -> bool:
    return every > 0 and labels_since_training(datastore, predictor) >= every
