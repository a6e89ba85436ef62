"""Radiological display orientation (volume/display.py) and its use by the slice engine and the phantoms."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from medclipsam.volume import ArrayVolume, Geometry
from medclipsam.volume.display import AS_STORED, DisplayOrientation, display_orientation


def _geometry(row_dir, col_dir, shape=(3, 5, 7)) -> Geometry:
    r, c = np.asarray(row_dir, float), np.asarray(col_dir, float)
    d = np.stack([r, c, np.cross(r, c)], axis=1)
    return Geometry(shape, direction=tuple(d.reshape(-1)))


def _screen(geometry: Geometry, orientation: DisplayOrientation) -> tuple[np.ndarray, np.ndarray]:
    """LPS directions of the displayed image's → (column index) and ↓ (row index)."""
    _n, rows, cols = geometry.shape
    d = geometry.direction_matrix()
    jj, ii = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    lps = np.einsum("ab,bhw->ahw", d[:, :2], np.stack([ii, jj]).astype(float))     # stored pixel → LPS (mm)
    shown = np.stack([orientation.apply(lps[a]) for a in range(3)])
    return shown[:, 0, 1] - shown[:, 0, 0], shown[:, 1, 0] - shown[:, 0, 0]


# (row direction, column direction) → (plane, screen → , screen ↓) in LPS
CASES = [
    ((1, 0, 0), (0, 1, 0), "axial", (1, 0, 0), (0, 1, 0)),          # head first supine: as stored
    ((-1, 0, 0), (0, 1, 0), "axial", (1, 0, 0), (0, 1, 0)),         # feet first: left on the image's left
    ((0, 1, 0), (1, 0, 0), "axial", (1, 0, 0), (0, 1, 0)),          # rows and columns swapped
    ((-1, 0, 0), (0, -1, 0), "axial", (1, 0, 0), (0, 1, 0)),        # prone
    ((1, 0, 0), (0, 0, -1), "coronal", (1, 0, 0), (0, 0, -1)),
    ((-1, 0, 0), (0, 0, 1), "coronal", (1, 0, 0), (0, 0, -1)),
    ((0, 1, 0), (0, 0, -1), "sagittal", (0, 1, 0), (0, 0, -1)),
    ((0, 0, 1), (0, -1, 0), "sagittal", (0, 1, 0), (0, 0, -1)),
]


@pytest.mark.parametrize("row_dir,col_dir,plane,right,down", CASES)
def test_slices_are_shown_in_radiological_convention(row_dir, col_dir, plane, right, down):
    g = _geometry(row_dir, col_dir)
    o = display_orientation(g)
    assert o.plane == plane
    across, along = _screen(g, o)
    assert np.allclose(across, right) and np.allclose(along, down), o


def test_oblique_slices_get_the_nearest_flip():
    a = np.deg2rad(20)
    g = _geometry((-np.cos(a), -np.sin(a), 0), (-np.sin(a), np.cos(a), 0))     # feet first, spun 20°
    o = display_orientation(g)
    across, along = _screen(g, o)
    assert o.plane == "axial" and across[0] > 0.9 and along[1] > 0.9


@pytest.mark.parametrize("flags", list(itertools.product([False, True], repeat=3)))
def test_invert_undoes_apply_for_images_and_masks(flags):
    o = DisplayOrientation(*flags)
    img = np.arange(5 * 7 * 3).reshape(5, 7, 3)
    shown = o.apply(img)
    assert shown.shape == ((7, 5, 3) if flags[0] else (5, 7, 3)) and shown.flags["C_CONTIGUOUS"]
    assert np.array_equal(o.invert(shown), img)
    mask = np.zeros((5, 7), bool)
    mask[1, 2] = True
    assert np.array_equal(o.invert(o.apply(mask)), mask)
    assert o.identity == (not any(flags))


def test_images_without_patient_geometry_stay_as_stored():
    g = Geometry((1, 4, 6), direction=(-1.0, 0, 0, 0, 1, 0, 0, 0, -1), has_patient_geometry=False)
    assert display_orientation(g) is AS_STORED and AS_STORED.identity
    assert "as stored" in AS_STORED.describe()


def test_phantom_slices_are_shown_as_the_engine_shows_them():
    from medclipsam.phantoms import ct_chest_series

    s = ct_chest_series(5, 12, 64)                    # seed % 6 == 5: feet first, stored mirrored
    o = display_orientation(s.geometry)
    assert o.flip_cols and not o.transpose
    k = int(s.present_slices("lungs")[len(s.present_slices("lungs")) // 2])
    shown = s.slice(k, "lungs")
    left = np.argwhere(shown.masks["left lung"])[:, 1].mean()
    right = np.argwhere(shown.masks["right lung"])[:, 1].mean()
    assert left > right                               # the patient's left on the image's right
    assert np.array_equal(shown.masks["left lung"], s.labels["left lung"][k][:, ::-1])


# ---------------------------------------------------------------- the engine
def _mirrored_twins(n=6, size=40):
    """One phantom stored head first and feet first (columns reversed, row direction −x): the same
    patient, so the models must see the same slices and the labels must be the same in patient space."""
    a = np.full((n, size, size), -1000.0, np.float32)
    a[:, 6:34, 4:36] = 0.0
    a[1:5, 12:22, 8:18] = 80.0                        # a lesion on one side only
    hfs = ArrayVolume(a, Geometry((n, size, size), (0.7, 0.7, 3.0)), modality="CT")
    d = np.diag([-1.0, 1.0, -1.0])                    # i → −x, j → +y, k → −z (as the FFS phantoms)
    ffs = ArrayVolume(np.ascontiguousarray(a[:, :, ::-1]), Geometry((n, size, size), (0.7, 0.7, 3.0),
                                                                     direction=tuple(d.reshape(-1))), modality="CT")
    return hfs, ffs


def test_engine_shows_the_models_the_display_and_writes_labels_on_the_stored_grid(tiny_pipeline, monkeypatch):
    import medclipsam.pipeline as engine_module  # the per-slice chain the engine calls
    from medclipsam.volume.consistency import ConsistencyConfig
    from medclipsam.volume.engine import VolumeConfig, VolumePipeline
    from medclipsam.volume.presence import PresenceConfig

    seen: list[np.ndarray] = []
    real = engine_module.make_coarse_mask

    def spy(saliency_map, rgb, cfg):
        seen.append(rgb.copy())
        return real(saliency_map, rgb, cfg)

    monkeypatch.setattr(engine_module, "make_coarse_mask", spy)
    cfg = VolumeConfig(presence=PresenceConfig(enabled=False), consistency=ConsistencyConfig(enabled=False))
    hfs, ffs = _mirrored_twins()
    r_hfs = VolumePipeline(tiny_pipeline, cfg).run(hfs, ["lesion"])
    seen_hfs, seen[:] = list(seen), []
    r_ffs = VolumePipeline(tiny_pipeline, cfg).run(ffs, ["lesion"])
    assert len(seen) == len(seen_hfs) == 6
    assert all(np.array_equal(a, b) for a, b in zip(seen, seen_hfs))        # the same picture of the patient
    assert r_hfs.labels.any()
    assert np.array_equal(r_ffs.labels, r_hfs.labels[:, :, ::-1])             # each on its own stored grid
    assert any("radiological orientation" in note and "flipped left-right" in note for note in r_ffs.notes)
    assert not any("radiological orientation" in note for note in r_hfs.notes)

    seen[:] = []
    stored = VolumePipeline(tiny_pipeline, VolumeConfig(presence=PresenceConfig(enabled=False),
                                                        consistency=ConsistencyConfig(enabled=False),
                                                        reorient=False)).run(ffs, ["lesion"])
    assert all(np.array_equal(a, b[:, ::-1]) for a, b in zip(seen, seen_hfs))  # reorient=False: as stored
    assert stored.labels.shape == r_ffs.labels.shape


def test_series_cli_passes_reorient_to_the_volume_engine():
    from medclipsam.config import apply_overrides
    from medclipsam.settings import split_settings
    from medclipsam.volume.config import VolumeConfig

    pipeline, volume = split_settings({"reorient": "false", "m2ib.beta": "2", "presence.enabled": "false",
                                       "propagation.max_slices": "1"})
    assert pipeline == {"m2ib.beta": "2"}
    assert volume == {"reorient": "false", "presence.enabled": "false", "propagation.max_slices": "1"}
    assert VolumeConfig().reorient is True
    assert apply_overrides(VolumeConfig(), {"reorient": "false"}).reorient is False
