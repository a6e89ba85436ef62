"""The committed phantom sample set is exactly what its generator writes (no stale or edited data)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

from medclipsam.volume.inputs import open_volume
from medclipsam.volume.itk_io import read_volume

ROOT = Path(__file__).resolve().parents[1] / "sample-data"


def _generator(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_phantom_samples_match_their_generator(tmp_path):
    _generator("make_sample_phantoms").make(tmp_path)
    shipped = ROOT / "phantoms"
    for series in ("ct_chest", "mr_brain"):
        files = sorted((shipped / series).glob("*.dcm"))
        assert len(files) >= 20
        for f in files:
            assert f.read_bytes() == (tmp_path / series / f.name).read_bytes(), f.name
        a, b = read_volume(shipped / f"{series}_labels.nii.gz"), read_volume(tmp_path / f"{series}_labels.nii.gz")
        assert np.array_equal(a.array, b.array) and a.geometry.same_grid(b.geometry)
        assert (shipped / f"{series}_labels.json").read_text() == (tmp_path / f"{series}_labels.json").read_text()
    for png in ("us_breast.png", "us_breast_lesion.png", "xray_chest.png", "xray_chest_lungs.png"):
        assert np.array_equal(np.asarray(Image.open(shipped / png)), np.asarray(Image.open(tmp_path / png))), png


def test_phantom_ct_labels_lie_on_the_series_grid():
    src = open_volume(ROOT / "phantoms" / "ct_chest")
    labels = read_volume(ROOT / "phantoms" / "ct_chest_labels.nii.gz")
    assert src.geometry.same_grid(labels.geometry)
    tumour_slices = np.flatnonzero((labels.array == 1).reshape(len(src), -1).any(axis=1))
    assert 0 < len(tumour_slices) < len(src) // 2          # the target is absent from most slices
    k = int(np.flatnonzero((labels.array == 2).reshape(len(src), -1).any(axis=1))[0])
    hu = src.read_slice(k)
    assert hu[labels.array[k] == 2].mean() < -600            # the left lung label sits on lung HU


def test_demo_finds_the_committed_phantom_series():
    """``medclipsam demo`` in a clone segments the committed series, not a generated one (the path is
    computed from the module's place in the package, which moved once already)."""
    from pathlib import Path

    from medclipsam.cli.demo import REPO_SAMPLE

    root = Path(__file__).resolve().parents[1]
    assert REPO_SAMPLE == root / "sample-data" / "phantoms" / "ct_chest" and REPO_SAMPLE.is_dir()
