"""The weakly supervised stage's engine (issue 6): cyclic schedule, label mapping, augmentation,
uncertainty, and a short ensemble training on the phantom's labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medclipsam.errors import ConfigError
from medclipsam.serving.vocabulary import load_vocabulary
from medclipsam.weak.schedule import CyclicSchedule


def test_cycles_restart_and_really_decay():
    s = CyclicSchedule(epochs=600, cycles=3, lr_max=1e-2, lr_min=1e-4, keep_per_cycle=10)
    assert s.cycle_length == 200 and s.ensemble_size == 30
    for start in (0, 200, 400):
        assert s.lr(start) == pytest.approx(1e-2)                   # restarts
        assert s.lr(start + 199, 1.0) == pytest.approx(1e-4)        # decays to the minimum in its own cycle
        assert s.lr(start + 100) == pytest.approx(0.5 * (1e-2 + 1e-4))
    # the reference code's rate stays above 0.0076 for E=600, C=3 (docs/algorithms.md §Weak-schedule); ours spans 100x
    kept = [e for e in range(600) if s.keeps(e)]
    assert kept == list(range(190, 200)) + list(range(390, 400)) + list(range(590, 600))


@pytest.mark.parametrize("kw,match", [({"epochs": 10, "cycles": 3}, "equal cycles"),
                                      ({"epochs": 6, "cycles": 3, "keep_per_cycle": 3}, "keep_per_cycle"),
                                      ({"epochs": 6, "cycles": 3, "lr_min": 1, "lr_max": 0.1}, "lr_min")])
def test_schedule_errors(kw, match):
    with pytest.raises(ConfigError, match=match):
        CyclicSchedule(**kw)


def test_submitted_labels_map_to_vocabulary_values():
    from medclipsam.weak.data import remap_label

    v = load_vocabulary()
    lab = np.array([[0, 1, 2, 3]])
    info = [{"name": "tumour", "idx": 1}, {"name": "Left lung", "idx": 2}, {"name": "my thing", "idx": 3}]
    assert remap_label(lab, info, v).tolist() == [[0, 4, 2, v.prompted_value]]
    assert remap_label(lab, None, v).tolist() == [[0, 1, 2, 3]]           # no names: already vocabulary values
    assert remap_label(np.array([[0, 200]]), None, v).tolist() == [[0, v.prompted_value]]


def test_augmentation_keeps_labels_on_the_image_and_never_mirrors():
    from medclipsam.weak.data import augment

    img = torch.full((64, 1, 32, 32), -1.0)
    lab = torch.zeros(64, 32, 32, dtype=torch.long)
    img[:, :, 8:20, 4:12] = 1.0                 # a bright block on the left, labelled 2
    lab[:, 8:20, 4:12] = 2
    x, y = augment(img, lab, torch.Generator().manual_seed(0))
    assert set(y.unique().tolist()) <= {0, 2}
    inside = x[:, 0][y == 2]
    assert inside.mean() > 0.5 and x[:, 0][y == 0].mean() < -0.3
    assert (y[:, :, :16] == 2).sum() > 10 * (y[:, :, 16:] == 2).sum()    # stays on the left


def test_entropy_mutual_information_and_study_uncertainty():
    from medclipsam.weak.uncertainty import entropy_map, mutual_information, study_uncertainty

    sure = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])              # (C=3, 2 voxels)
    assert torch.allclose(entropy_map(sure), torch.zeros(2), atol=1e-6)
    assert torch.allclose(entropy_map(torch.full((3, 2), 1 / 3)), torch.ones(2))
    blur = torch.tensor([[0.5, 0.5], [0.5, 0.5], [0.0, 0.0]])
    # members that blur alike: entropy, no disagreement; members that contradict: disagreement
    assert torch.allclose(mutual_information(torch.stack([blur, blur])), torch.zeros(2), atol=1e-6)
    a, b = torch.tensor([[1.0], [0.0], [0.0]]), torch.tensor([[0.0], [1.0], [0.0]])
    mi = mutual_information(torch.stack([a, b]))
    assert mi.item() == pytest.approx(np.log(2) / np.log(3), abs=1e-5)
    assert study_uncertainty(3.0, 6) == 0.5 and study_uncertainty(0.2, 0) == 0.2


def test_short_ensemble_training_publish_and_predict(tmp_path):
    """On the phantom's own (vocabulary-mapped) labels, 3 short cycles: the lungs are learnt, the
    ensemble has one member per cycle end, and it predicts on the volume's own grid."""
    from medclipsam.dicom import read_series
    from medclipsam.volume.itk_io import read_volume
    from medclipsam.weak.data import normalise_volume, slice_set
    from medclipsam.weak.ensemble import EnsemblePredictor
    from medclipsam.weak.train import TrainConfig, publish, train_ensemble

    root = __import__("pathlib").Path(__file__).resolve().parents[1] / "sample-data" / "phantoms"
    with read_series(root / "ct_chest") as s:
        vol = np.stack([s.read_slice(k) for k in range(len(s))])
    truth = read_volume(root / "ct_chest_labels.nii.gz").array.astype(np.uint8)
    lab = np.array([0, 4, 2, 3, 5, 6], np.uint8)[truth]       # phantom values → default vocabulary values
    v = load_vocabulary()
    data = slice_set([(normalise_volume(vol), lab)], 64)
    cfg = TrainConfig(schedule=CyclicSchedule(epochs=3, cycles=3, lr_max=3e-3, lr_min=3e-5, keep_per_cycle=1),
                      size=64, batch_size=8, iterations_per_epoch=30)
    manifest = train_ensemble(data, v.prompted_value + 1, tmp_path / "run", cfg, classes=v.labels(), log=lambda _: None)
    assert manifest["members"] == ["member_0000.pt", "member_0001.pt", "member_0002.pt"]
    assert [e["lr_start"] for e in manifest["epochs"]] == [pytest.approx(3e-3)] * 3     # every cycle restarts
    with pytest.raises(ConfigError, match="not empty"):
        train_ensemble(data, v.prompted_value + 1, tmp_path / "run", cfg)
    target = publish(tmp_path / "run", tmp_path / "published")
    predictor = EnsemblePredictor(target)
    result, _ = predictor(vol)
    assert result.labels.shape == vol.shape and result.members == 3
    lungs_pred, lungs_true = np.isin(result.labels, [2, 3]), np.isin(lab, [2, 3])
    dice = 2 * (lungs_pred & lungs_true).sum() / (lungs_pred.sum() + lungs_true.sum())
    assert dice > 0.8, dice
    assert result.uncertainty > 0.0 and 0.0 < result.mean_entropy < 1.0 and 0.0 <= result.member_agreement <= 1.0
    assert predictor.loads == 1
    predictor(vol)
    assert predictor.loads == 1                 # unchanged ensemble: not reloaded


def test_scoring_without_a_trained_model_is_nothing_to_score(tmp_path):
    """MONAI Label runs every scoring method at each start: before the first training that is a
    logged "nothing to score yet", not an error (issue 21)."""
    from medclipsam.weak import service
    from medclipsam.weak.ensemble import EnsemblePredictor

    class NoImages:
        def get_unlabeled_images(self):
            raise AssertionError("nothing is read without a model")

    said = []
    assert service.score_unlabeled(NoImages(), EnsemblePredictor(tmp_path / "none"), log=said.append) == {}
    assert said == [service.NOTHING_TO_SCORE] and "train" in said[0]


# ---------------------------------------------------------------- train requests checked on arrival (issue 21)
PLENTY = (64 * 2 ** 30, "test memory")


@pytest.mark.parametrize("option, value, words", [
    ("epochs", -1, ["'epochs'", "≥ 1", "e.g. 12"]),
    ("epochs", 2.5, ["'epochs'", "whole number"]),
    ("epochs", "twelve", ["'epochs'", "whole number"]),
    ("cycles", 0, ["'cycles'", "1..12"]),
    ("cycles", 5, ["multiple of cycles"]),
    ("keep_per_cycle", 5, ["'keep_per_cycle'", "1..4", "epochs / cycles"]),
    ("keep_per_cycle", 0, ["'keep_per_cycle'", "1..4"]),
    ("batch_size", 0, ["'batch_size'", "≥ 1"]),
    ("iterations_per_epoch", -3, ["'iterations_per_epoch'", "≥ 1"]),
    ("size", 100, ["'size'", "multiple of 16", "96 or 112"]),
    ("size", 0, ["'size'", "≥ 16"]),
    ("lr_max", -1, ["'lr_max'", "(0, 1]"]),
    ("lr_max", "nan", ["'lr_max'", "(0, 1]"]),
    ("lr_min", 0, ["'lr_min'", "(0, 1]"]),
    ("lr_min", 0.5, ["'lr_min'", "lr_min ≤ lr_max"]),
    ("optimizer", "nope", ["'optimizer'", "adam, sgd"]),
    ("seed", -1, ["'seed'", "≥ 0"]),
    ("max_studies", -2, ["'max_studies'", "≥ 0"]),
    ("learning_rate", 0.1, ["unknown train option", "'learning_rate'", "lr_max", "batch_size"]),
])
def test_bad_train_options_are_refused_naming_option_and_range(option, value, words):
    from medclipsam.weak.service import check_train_request

    with pytest.raises(ConfigError) as e:
        check_train_request({"model": "medclipsam_weak", option: value}, "cpu", 10, available=PLENTY)
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_a_good_train_request_with_monai_label_keys_gives_its_config():
    from medclipsam.weak.service import check_train_request, train_defaults

    # what MONAI Label adds (model, gpus, local_rank; POST /train/ also the model's own block),
    # Slicer's strings, OHIF's unedited lists and the device option all pass
    req = {**train_defaults(), "model": "medclipsam_weak", "gpus": "all", "local_rank": 0, "device": ["cpu"],
           "medclipsam_weak": {"epochs": 6}, "epochs": "6", "cycles": 3, "keep_per_cycle": 2, "lr_max": "0.01",
           "lr_min": 1e-4, "size": 64, "batch_size": 4.0, "optimizer": ["sgd", "adam"], "seed": 7}
    cfg = check_train_request(req, "cpu", 10)                     # the machine's own memory: plenty for 4 × 64²
    assert (cfg.schedule.epochs, cfg.schedule.cycles, cfg.schedule.keep_per_cycle) == (6, 3, 2)
    assert (cfg.schedule.lr_max, cfg.schedule.lr_min) == (0.01, 1e-4)
    assert (cfg.size, cfg.batch_size, cfg.optimizer, cfg.seed, cfg.device) == (64, 4, "sgd", 7, "cpu")
    assert check_train_request({}, "cpu", 10).size == train_defaults()["size"]      # nothing sent: the defaults


def test_a_train_step_too_big_for_the_memory_is_refused_with_the_figures():
    from medclipsam.weak.service import check_train_request, train_step_memory

    with pytest.raises(ConfigError) as e:                           # the reported 1.28 TB request, real memory
        check_train_request({"size": 100000}, "cpu", 10)
    msg = str(e.value)
    assert "'size' = 100000" in msg and "TiB" in msg and "available system memory" in msg and "lower" in msg
    need = train_step_memory(16, 512, 10)
    one_gib = (2 ** 30, "test memory")
    advice = r"needs about .* GiB but the test memory is 1\.00 GiB; lower batch_size to"
    with pytest.raises(ConfigError, match=advice) as e:
        check_train_request({"size": 512}, "cpu", 10, available=one_gib)
    fit = int(str(e.value).split("lower batch_size to ")[1].split()[0])     # the advice is right
    assert 1 <= fit < 16 and check_train_request({"size": 512, "batch_size": fit}, "cpu", 10, available=one_gib)
    with pytest.raises(ConfigError):
        check_train_request({"size": 512, "batch_size": fit + 1}, "cpu", 10, available=one_gib)
    assert check_train_request({"size": 512}, "cpu", 10, available=(need.total_bytes, "test memory")).size == 512


def test_memory_estimate_follows_the_networks_widths():
    """Per pixel: the U-Net's saved activations (counted with autograd's saved-tensor hooks) are
    what the formula's widths say; memory grows with batch × size² and the optimiser's state."""
    from medclipsam.weak.service import LOSS_FLOATS_PER_CLASS, activation_floats_per_pixel, train_step_memory
    from medclipsam.weak.train import NetworkConfig, build_network

    widths = NetworkConfig().features
    net = build_network(10)
    weights = {p.untyped_storage().data_ptr() for p in net.parameters()}
    saved: dict[int, int] = {}

    def pack(t):
        if t.untyped_storage().data_ptr() not in weights:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    b, s = 2, 64
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        net(torch.randn(b, 1, s, s))
    counted = sum(saved.values()) / (4 * b * s * s)
    transient = 2 * (widths[0] + widths[1]) + 2 * 10
    formula = activation_floats_per_pixel(widths, 10) - LOSS_FLOATS_PER_CLASS * 10 - transient
    assert counted == pytest.approx(formula, rel=0.01)
    small, big = train_step_memory(4, 64, 10), train_step_memory(16, 128, 10)
    assert big.parameter_bytes == small.parameter_bytes
    assert big.activation_bytes - small.activation_bytes == pytest.approx(
        15 * (small.activation_bytes - train_step_memory(0, 64, 10).activation_bytes), rel=1e-6)
    assert train_step_memory(4, 64, 10, optimizer="sgd").parameter_bytes < small.parameter_bytes


def test_every_key_monai_labels_train_task_puts_in_a_request_is_accepted(tmp_path):
    """BasicTrainTask's default config is merged under every request by the trainer (its config()):
    none of its keys is refused as unknown."""
    from monailabel.tasks.train.basic_train import BasicTrainTask

    from medclipsam.weak.service import check_train_request, train_defaults

    class Bare(BasicTrainTask):
        network = optimizer = loss_function = train_pre_transforms = train_post_transforms = val_inferer = (
            lambda self, context: None)

    req = {**Bare(str(tmp_path), config=train_defaults()).config(), "model": "medclipsam_weak", "local_rank": 0}
    assert check_train_request(req, "cpu", 10, available=PLENTY).size == train_defaults()["size"]
