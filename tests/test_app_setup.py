"""The app's set-up from ``--conf`` and the MONAI Label traps it handles (issue 5), without a server."""

from __future__ import annotations

import os

import pytest

from medclipsam.errors import ConfigError
from medclipsam.serving.app_setup import AppSetup, datastore_kind, handle_environment_traps


def test_conf_selects_models_vocabulary_and_preset_without_loading(tmp_path, monkeypatch):
    voc = tmp_path / "v.json"
    voc.write_text('{"labels": [{"name": "kidney"}]}')
    (tmp_path / "a.nii.gz").write_bytes(b"")
    s = AppSetup.from_conf(tmp_path, str(tmp_path), {"clip": "local-dir:/models/biomedclip",
                                                     "sam": "vit_h:/models/sam_vit_h_4b8939.pth",
                                                     "vocabulary": str(voc), "preset": "v1"})
    assert s.segmenter.models.clip_spec == "local-dir:/models/biomedclip"
    assert s.segmenter.models.sam_spec == "vit_h:/models/sam_vit_h_4b8939.pth"
    assert s.segmenter.models.loads == 0                 # lazily: a training subprocess loads nothing
    assert s.vocabulary.labels() == {"kidney": 1, "prompted": 2} and s.preset == "v1"
    assert s.datastore_kind == "nifti"
    with pytest.raises(ConfigError, match="preset"):
        AppSetup.from_conf(tmp_path, str(tmp_path), {"preset": "v3"})
    assert AppSetup.from_conf(tmp_path, str(tmp_path), {"device": "cpu"}).device == "cpu"
    import torch

    if not torch.cuda.is_available():
        from medclipsam.errors import InputError

        with pytest.raises(InputError, match="CUDA is not available"):
            AppSetup.from_conf(tmp_path, str(tmp_path), {"device": "cuda"})


def test_datastore_kind(tmp_path):
    assert datastore_kind("http://pacs:8042/dicom-web") == "dicomweb"
    assert datastore_kind(str(tmp_path)) == "dicom"
    (tmp_path / "x.nrrd").write_bytes(b"")
    assert datastore_kind(str(tmp_path)) == "nifti"
    assert datastore_kind(str(tmp_path), "dicom") == "dicom"
    with pytest.raises(ConfigError):
        datastore_kind(str(tmp_path), "xnat")


def test_environment_traps(tmp_path, monkeypatch):
    import sys
    from pathlib import Path

    monkeypatch.setenv("PATH", "/usr/bin")
    monkeypatch.delenv("PYTHONPATH", raising=False)
    monkeypatch.delenv("MONAI_LABEL_TRACKING_ENABLED", raising=False)
    changed = handle_environment_traps(tmp_path)
    assert os.environ["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    assert os.environ["PYTHONPATH"] == str(tmp_path.resolve())
    assert os.environ["MONAI_LABEL_TRACKING_ENABLED"] == "false" and len(changed) == 3
    import shutil

    assert shutil.which("itkimage2segimage"), "dcmqi's converter is not beside this Python"
    assert handle_environment_traps(tmp_path) == []        # idempotent


class _Store:
    """A datastore with final labels saved at the given times (what after_label_saved reads)."""

    def __init__(self, ts):
        self.ts = ts

    def get_labeled_images(self):
        return list(self.ts)

    def get_label_by_image_id(self, image_id, tag):
        return image_id

    def get_label_info(self, label_id, tag):
        return {"ts": self.ts[label_id]}


def test_auto_training_starts_after_n_new_final_labels(tmp_path):
    import time

    s = AppSetup.from_conf(tmp_path, str(tmp_path), {"auto_train_after": "2"})
    started = []

    def start(model, params, enqueue):
        started.append((model, enqueue))
        return {"id": "task-1", "status": "SUBMITTED"}

    now = time.time()
    assert "1 of 2" in s.after_label_saved(_Store({"a": now}), start)["medclipsam_weak"] and not started
    answer = s.after_label_saved(_Store({"a": now, "b": now}), start)
    assert started == [("medclipsam_weak", True)] and "retraining started" in answer["medclipsam_weak"]
    # labels older than the published ensemble do not count
    ens = s.weak_predictor.folder
    ens.mkdir(parents=True)
    (ens / "ensemble.json").write_text("{}")
    assert "0 of 2" in s.after_label_saved(_Store({"a": now - 100, "b": now - 100}), start)["medclipsam_weak"]
    never = AppSetup.from_conf(tmp_path, str(tmp_path), {"auto_train_after": "0"})
    assert never.after_label_saved(_Store({"a": now, "b": now, "c": now}), start) == {}
    with pytest.raises(ConfigError, match="whole number"):
        AppSetup.from_conf(tmp_path, str(tmp_path), {"auto_train_after": "five"})
