"""Weak supervision and active learning through a real ``monailabel start_server`` (issue 6): final
labels submitted with ``PUT /datastore/label``, ``POST /train/medclipsam_weak`` (sync), inference
with the retrained ensemble, uncertainty scoring and ``/activelearning/uncertainty`` — on phantom
CT studies, CPU, a short schedule."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import requests

from servers import monailabel_server, multipart

SEEDS = (91001, 91002, 91003, 91004)
PHANTOM_TO_NAME = {"tumor": "tumor", "left lung": "left lung", "right lung": "right lung", "liver": "liver",
                   "spine": "spine"}
TRAIN = {"epochs": 3, "cycles": 3, "keep_per_cycle": 1, "iterations_per_epoch": 20, "batch_size": 8, "size": 64,
         "lr_max": 0.003, "lr_min": 0.00003}

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def weak_server(tmp_path_factory):
    from medclipsam.phantoms import ct_chest_series
    from medclipsam.volume.itk_io import write_image, write_label
    from medclipsam.volume.source import ArrayVolume

    root = tmp_path_factory.mktemp("weak")
    studies, labels = root / "studies", root / "labels"
    studies.mkdir()
    labels.mkdir()
    names = list(PHANTOM_TO_NAME)
    for seed in SEEDS:
        s = ct_chest_series(seed, slices=16, size=64)
        write_image(studies / f"study{seed}.nii.gz", ArrayVolume(s.values, s.geometry, modality="CT"))
        write_label(labels / f"study{seed}.nii.gz", s.label_volume(names), s.geometry)   # values 1..5 in `names` order
    with monailabel_server(studies, root / "work", conf={"auto_train_after": "3"},
                           env={"MONAI_LABEL_AUTO_UPDATE_SCORING": "false"}) as url:
        yield url, labels, root


def _submit(url: str, image_id: str, label: Path) -> dict:
    info = [{"name": n, "idx": i + 1} for i, n in enumerate(PHANTOM_TO_NAME)]
    with open(label, "rb") as f:
        r = requests.put(f"{url}/datastore/label?image={image_id}&tag=final",
                         data={"params": json.dumps({"label_info": info})}, files={"label": (label.name, f)},
                         timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def test_weak_model_invisible_until_trained_then_trains_infers_and_ranks(weak_server, tmp_path):
    url, labels, root = weak_server
    info = requests.get(f"{url}/info/", timeout=10).json()
    assert "medclipsam_weak" not in info["models"] and "medclipsam_weak" in info["trainers"]
    assert {"uncertainty", "random", "first"} <= set(info["strategies"])
    # before training: the strategy says it falls back, training without labels is refused
    nxt = requests.post(f"{url}/activelearning/uncertainty", json={}, timeout=30).json()
    assert nxt["id"] == f"study{SEEDS[0]}" and "fallback" in nxt["chosen_by"]
    # accept two labels (as Slicer's Submit Label does); auto-training waits for the third
    for seed in SEEDS[:2]:
        answer = _submit(url, f"study{seed}", labels / f"study{seed}.nii.gz")
    assert "2 of 3 new final labels" in json.dumps(answer)
    r = requests.post(f"{url}/train/medclipsam_weak?run_sync=true", json=TRAIN, timeout=900)
    assert r.status_code == 200, r.text
    info = requests.get(f"{url}/info/", timeout=10).json()
    assert "medclipsam_weak" in info["models"]                               # published → visible, no restart
    stats = info["train_stats"]["medclipsam_weak"]
    assert stats["studies"] == 2 and stats["members"] == 3
    # inference with the ensemble: label on the study's grid, uncertainty in the JSON
    r = requests.post(f"{url}/infer/medclipsam_weak?image=study{SEEDS[2]}",
                      data={"params": json.dumps({"result_extension": ".nii.gz"})}, timeout=300)
    assert r.status_code == 200, r.text
    parts = multipart(r)
    meta = json.loads(parts["params"])
    assert meta["uncertainty"] > 0.0 and 0.0 < meta["mean_entropy"] < 1.0 and meta["members"] == 3
    assert sorted(meta["trained_on"]) == [f"study{s}" for s in SEEDS[:2]]
    from medclipsam.volume.itk_io import read_volume

    out = tmp_path / "weak.nii.gz"
    out.write_bytes(parts["image"])
    label = read_volume(out)
    image = read_volume(root / "studies" / f"study{SEEDS[2]}.nii.gz")
    assert label.geometry.shape == image.geometry.shape
    truth = read_volume(labels / f"study{SEEDS[2]}.nii.gz").array
    lungs_p, lungs_t = np.isin(label.array, [2, 3]), np.isin(truth, [2, 3])
    assert 2 * (lungs_p & lungs_t).sum() / (lungs_p.sum() + lungs_t.sum()) > 0.6
    # the entropy map as the returned file
    r = requests.post(f"{url}/infer/medclipsam_weak?image=study{SEEDS[3]}&output=image",
                      data={"params": json.dumps({"return": "entropy"})}, timeout=300)
    assert r.status_code == 200, r.text
    ent_path = tmp_path / "entropy.nii.gz"
    ent_path.write_bytes(r.content)
    ent = read_volume(ent_path).array
    assert ent.min() >= 0.0 and ent.max() <= 1.0 and ent.max() > 0.0
    # scoring fills every unlabeled study's score; the strategy serves the most uncertain
    r = requests.post(f"{url}/scoring/medclipsam_uncertainty?run_sync=true", json={}, timeout=600)
    assert r.status_code == 200, r.text
    ds = requests.get(f"{url}/datastore/?output=all", timeout=10).json()["objects"]
    scores = {i: ds[i]["image"]["info"]["medclipsam_uncertainty"]["value"] for i in (f"study{s}" for s in SEEDS[2:])}
    nxt = requests.post(f"{url}/activelearning/uncertainty", json={}, timeout=30).json()
    assert nxt["id"] == max(scores, key=scores.get) and nxt["uncertainty"] == pytest.approx(max(scores.values()))
    assert nxt["chosen_by"].startswith("highest ensemble uncertainty")


def test_async_training_in_a_subprocess_publishes_a_new_ensemble(weak_server):
    """Slicer's Train button: an async task in a subprocess that rebuilds the app (PYTHONPATH set by the
    app, no CLIP/SAM loaded there); the next inference uses the newly published ensemble."""
    import time

    url, labels, root = weak_server
    before = requests.get(f"{url}/info/", timeout=10).json()["train_stats"].get("medclipsam_weak", {})
    r = requests.post(f"{url}/train/medclipsam_weak", json={**TRAIN, "epochs": 2, "cycles": 2}, timeout=30)
    # the task may start at once
    assert r.status_code == 200 and r.json()["status"] in ("SUBMITTED", "RUNNING"), r.text
    status = {}
    for _ in range(200):
        time.sleep(2)
        status = requests.get(f"{url}/train/", timeout=10).json()
        if status.get("status") in ("DONE", "ERROR"):
            break
    assert status.get("status") == "DONE", status
    details = "\n".join(status.get("details", []))
    assert "DEMO MODEL" not in details and "open_clip" not in details     # the subprocess loaded no CLIP/SAM
    after = requests.get(f"{url}/info/", timeout=10).json()["train_stats"]["medclipsam_weak"]
    assert after["finished"] != before.get("finished") and after["members"] == 2
    r = requests.post(f"{url}/infer/medclipsam_weak?image=study{SEEDS[3]}&output=json", data={"params": "{}"},
                      timeout=300)
    assert r.status_code == 200 and r.json()["members"] == 2, r.text
