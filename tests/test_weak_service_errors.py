"""The weak-supervision service says when it cannot read a datastore's label info (issue 24, point 10):
an unreadable label never counts as new (it could start training), a datastore that keeps no label
info is told apart from one that fails, and every failure is logged with the study it concerns."""

from __future__ import annotations

import logging
import re

import pytest

import medclipsam.weak.service as service

LOGGER = "medclipsam.weak.service"


class Store:
    """A datastore whose final labels have the given info; an exception as info is raised when read."""

    def __init__(self, infos: dict, label_ids: dict | None = None):
        self.infos = infos
        self.label_ids = label_ids if label_ids is not None else {i: f"label-{i}" for i in infos}

    def get_labeled_images(self):
        return list(self.infos)

    def datalist(self):
        return [{"image": f"/studies/{i}.nii.gz", "label": f"/studies/labels/final/{i}.nii.gz"} for i in self.infos]

    def get_label_by_image_id(self, image_id, tag):
        assert tag == "final"
        found = self.label_ids[image_id]
        if isinstance(found, BaseException):
            raise found
        return found

    def get_label_info(self, label_id, tag):
        assert tag == "final"
        info = self.infos[label_id.removeprefix("label-")]
        if isinstance(info, BaseException):
            raise info
        return info


@pytest.fixture
def trained_at_100s(monkeypatch):
    monkeypatch.setattr(service, "model_stamp", lambda predictor: int(100e9))


def test_an_unreadable_label_is_not_counted_as_new_and_is_logged(trained_at_100s, caplog):
    store = Store({"new": {"ts": 200.0}, "old": {"ts": 50.0},
                   "broken": OSError("labels/final/broken.nii.gz: permission denied")})
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert service.labels_since_training(store, object()) == 1          # "new" only, not "broken"
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1
    assert "broken" in warned[0].getMessage() and "permission denied" in warned[0].getMessage()
    assert "not counted" in warned[0].getMessage()


def test_a_label_with_an_unreadable_save_time_is_not_counted(trained_at_100s, caplog):
    store = Store({"odd": {"ts": "yesterday"}})
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert service.labels_since_training(store, object()) == 0
    assert any("odd" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_unreadable_labels_cannot_start_training_on_their_own(trained_at_100s, caplog):
    store = Store({f"s{i}": RuntimeError("PACS answered 500") for i in range(5)})
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert not service.auto_train_due(store, object(), every=5)
    studies = sorted(re.search(r"study (\S+)", r.getMessage()).group(1) for r in caplog.records)
    assert studies == [f"s{i}" for i in range(5)]


def test_a_datastore_without_label_info_is_not_an_error(trained_at_100s, caplog):
    """XNAT-like: get_label_by_image_id raises NotImplementedError; DSA-like: get_label_info gives {}."""
    xnat = Store({"a": {}}, label_ids={"a": NotImplementedError()})
    dsa = Store({"b": {}})
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        assert service.labels_since_training(xnat, object()) == 0
        assert service.labels_since_training(dsa, object()) == 0
        items = service.training_items(xnat) + service.training_items(dsa)
    assert [(it["id"], it["label_info"]) for it in items] == [("a", None), ("b", None)]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_label_info_that_cannot_be_read_is_logged_and_the_study_left_out_of_training(caplog):
    names = [{"name": "left lung", "idx": 1}]
    store = Store({"good": {"label_info": names}, "bad": KeyError("label_info.json")})
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        items = service.training_items(store)
    assert [(it["id"], it["label_info"]) for it in items] == [("good", names)]
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "bad" in warned[0] and "KeyError" in warned[0] and "left out" in warned[0]


def test_a_study_without_a_final_label_id_gets_no_label_info():
    store = Store({"x": AssertionError("label info must not be read without a label id")}, label_ids={"x": ""})
    assert service.training_items(store) == [{"image": "/studies/x.nii.gz", "label": "/studies/labels/final/x.nii.gz",
                                              "label_info": None, "id": "x"}]
