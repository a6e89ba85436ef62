"""The synthetic phantom world: determinism, anatomy, HU values, captions, DICOM round trip, the mix."""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache

import numpy as np
import pytest
from scipy import ndimage

from medclipsam.phantoms import (
    CT_HU,
    KINDS,
    STRUCTURES,
    TUMOUR_WORDS,
    PhantomSeries,
    PhantomSlice,
    ct_chest_series,
    mentions_tumour,
    mr_brain_series,
    training_slices,
    us_breast_image,
    xray_chest_image,
)

CT_SEEDS = range(6)        # seed % 6: 0, 1, 3, 4 axial; 2 oblique; 5 feet first
MR_SEEDS = range(6)        # 2 oblique axial, 5 coronal
IN_PLANE = np.zeros((1, 3, 3), dtype=bool)
IN_PLANE[0, 1, :] = IN_PLANE[0, :, 1] = True


@lru_cache(maxsize=None)
def ct(seed: int) -> PhantomSeries:
    return ct_chest_series(seed)


@lru_cache(maxsize=None)
def mr(seed: int) -> PhantomSeries:
    return mr_brain_series(seed)


def per_slice(mask: np.ndarray) -> np.ndarray:
    return mask.reshape(mask.shape[0], -1).any(axis=1)


def lps_centroid(series: PhantomSeries, mask: np.ndarray) -> np.ndarray:
    k, j, i = np.nonzero(mask)
    ijk1 = np.stack([i, j, k, np.ones_like(i)]).astype(np.float64)
    return (series.geometry.affine_lps() @ ijk1)[:3].mean(axis=1)


def eroded(mask: np.ndarray, iterations: int) -> np.ndarray:
    return ndimage.binary_erosion(mask, IN_PLANE, iterations=iterations)


# ----------------------------------------------------------------------------------------- determinism

def test_same_seed_same_phantom_and_different_seed_different():
    a, b, c = ct_chest_series(3), ct_chest_series(3), ct_chest_series(4)
    assert np.array_equal(a.values, b.values) and a.captions == b.captions and a.geometry == b.geometry
    assert all(np.array_equal(a.labels[n], b.labels[n]) for n in a.labels)
    assert a.values.shape == c.values.shape and not np.array_equal(a.values, c.values)
    assert not np.array_equal(a.labels["tumor"], c.labels["tumor"])
    m1, m2, m3 = mr_brain_series(7), mr_brain_series(7), mr_brain_series(8)
    assert np.array_equal(m1.values, m2.values) and m1.captions == m2.captions
    assert not np.array_equal(m1.values, m3.values)
    for make in (us_breast_image, xray_chest_image):
        x, y, z = make(5), make(5), make(6)
        assert np.array_equal(x.rgb, y.rgb) and x.caption == y.caption
        assert all(np.array_equal(x.masks[n], y.masks[n]) for n in x.masks)
        assert not np.array_equal(x.rgb, z.rgb)


def test_dicom_bytes_are_deterministic(tmp_path):
    s = ct_chest_series(2, slices=4, size=32)
    first = [f.read_bytes() for f in s.write_dicom(tmp_path / "a")]
    second = [f.read_bytes() for f in ct_chest_series(2, slices=4, size=32).write_dicom(tmp_path / "b")]
    assert first == second and len(first) == 4


# ----------------------------------------------------------------------------------------- CT anatomy

@pytest.mark.parametrize("seed", CT_SEEDS)
def test_ct_labels_exist_and_the_tumour_is_on_some_slices_only(seed):
    s = ct(seed)
    assert set(s.labels) == {"body", "left lung", "right lung", "liver", "spine", "tumor"}
    assert set(s.labels) <= set(STRUCTURES)
    n = len(s)
    for name, m in s.labels.items():
        assert m.dtype == bool and m.shape == s.values.shape and m.any(), name
    tumour = per_slice(s.labels["tumor"])
    assert 0 < tumour.sum() < n // 2, "the tumour must be absent on most slices"
    assert per_slice(s.labels["spine"]).all() and per_slice(s.labels["body"]).all()
    # lungs superior, liver inferior, overlapping a little in z; slices beyond the lungs on both sides
    lungs = per_slice(s.label("lungs"))
    liver = per_slice(s.labels["liver"])
    assert lps_centroid(s, s.label("lungs"))[2] > lps_centroid(s, s.labels["liver"])[2]
    assert (lungs & liver).any() and (liver & ~lungs).any() and (lungs & ~liver).any()
    lung_idx = np.flatnonzero(lungs)
    assert lung_idx.min() > 0 and lung_idx.max() < n - 1
    no_lung_no_liver = ~lungs & ~liver
    assert no_lung_no_liver.any(), "slices above the lungs (thoracic inlet)"


@pytest.mark.parametrize("seed", CT_SEEDS)
def test_ct_masks_lie_inside_the_body_and_organs_do_not_overlap(seed):
    s = ct(seed)
    body = s.labels["body"]
    for name, m in s.labels.items():
        assert not (m & ~body).any(), name
    organs = ["left lung", "right lung", "liver", "spine"]
    for i, a in enumerate(organs):
        for b in organs[i + 1:]:
            assert not (s.labels[a] & s.labels[b]).any(), (a, b)
    host = s.description.split(" in the ")[-1]
    assert host in ("left lung", "right lung", "liver")
    assert not (s.labels["tumor"] & ~s.labels[host]).any(), "the tumour lies inside its host organ"
    assert not (s.labels["tumor"] & s.labels["spine"]).any()


@pytest.mark.parametrize("seed", [0, 1, 2, 5, 9, 16])
def test_ct_hu_values_match_the_design(seed):
    s = ct(seed)
    tumour = s.labels["tumor"]
    # portal venous phase: the liver enhances (105) and a hepatic lesion differs from it by 35–60 HU
    assert s.design["liver"] == CT_HU["liver"] == 105 and CT_HU["lung"] == -800 and CT_HU["fat"] == -100
    assert 450 <= s.design["spine"] <= 700 and 30 <= s.design["tumor"] <= 165
    if s.hosts["tumor"] == "liver":
        assert 35 <= abs(s.design["tumor"] - s.design["liver"]) <= 60
    for name in ("left lung", "right lung", "liver", "spine", "tumor"):
        m = s.labels[name] if name == "tumor" else s.labels[name] & ~ndimage.binary_dilation(tumour, IN_PLANE, 2)
        core = eroded(m, 2)
        if core.sum() < 5:
            core = eroded(m, 1)
        assert core.sum() >= 5, name
        assert abs(float(s.values[core].mean()) - s.design[name]) <= 40, name
    outside = ~ndimage.binary_dilation(s.labels["body"], IN_PLANE, 3)
    assert abs(float(s.values[outside].mean()) - (-1000)) <= 40
    # fat ring: just inside the skin, darker than soft tissue
    body = s.labels["body"]
    ring = body & ~eroded(body, 2) & eroded(body, 1)
    assert -160 <= float(np.median(s.values[ring])) <= -20
    # noise and texture: neither flat nor wild
    liver_core = eroded(s.labels["liver"] & ~tumour, 3)
    assert 8 <= float(s.values[liver_core].std()) <= 30
    lung_core = eroded(s.label("lungs") & ~tumour, 3)
    assert float(s.values[lung_core].std()) > float(s.values[liver_core].std())
    # whole HU, 12-bit storable
    assert s.values.dtype == np.float32 and np.array_equal(s.values, np.round(s.values))
    assert s.values.min() >= -1024 and s.values.max() <= 3071


@pytest.mark.parametrize("seed", [0, 1, 3, 4])
def test_left_lung_is_at_larger_columns_for_the_identity_orientation(seed):
    s = ct(seed)
    assert np.allclose(s.geometry.direction_matrix(), np.eye(3))
    cols = {name: np.nonzero(s.labels[name])[2].mean() for name in ("left lung", "right lung", "liver")}
    assert cols["left lung"] > s.values.shape[2] / 2 > cols["right lung"]
    assert cols["liver"] < s.values.shape[2] / 2            # the liver is on the patient's right
    rows = np.nonzero(s.labels["spine"])[1].mean()
    assert rows > s.values.shape[1] / 2                      # the spine is posterior: lower half of the image


@pytest.mark.parametrize("seed", CT_SEEDS)
def test_anatomy_is_right_in_patient_space_whatever_the_orientation(seed):
    s = ct(seed)
    d = s.geometry.direction_matrix()
    assert np.allclose(d.T @ d, np.eye(3), atol=1e-9) and np.isclose(np.linalg.det(d), 1.0)
    assert np.allclose(np.cross(d[:, 0], d[:, 1]), d[:, 2], atol=1e-9)   # slice axis = row × column
    assert 0.6 <= s.geometry.spacing[0] == s.geometry.spacing[1] <= 0.9 and 2 <= s.geometry.spacing[2] <= 5
    left, right = lps_centroid(s, s.labels["left lung"]), lps_centroid(s, s.labels["right lung"])
    liver, spine = lps_centroid(s, s.labels["liver"]), lps_centroid(s, s.labels["spine"])
    assert left[0] > spine[0] > right[0] and liver[0] < spine[0]      # LPS +x is the patient's left
    assert spine[1] > liver[1]                                         # +y posterior
    if seed % 6 == 2:
        assert not np.allclose(d, np.eye(3), atol=0.05) and s.plane == "oblique axial"
    if seed % 6 == 5:
        assert d[2, 2] < 0 and s.patient_position == "FFS"            # slices run superior → inferior
        assert np.nonzero(s.labels["left lung"])[2].mean() < np.nonzero(s.labels["right lung"])[2].mean()


# ----------------------------------------------------------------------------------------- MR

@pytest.mark.parametrize("seed", MR_SEEDS)
def test_mr_brain_labels_values_and_tumour(seed):
    s = mr(seed)
    assert s.modality == "MR" and s.kind == "mr-brain" and set(s.labels) == {"body", "brain", "tumor"}
    for name, m in s.labels.items():
        assert m.any() and not (m & ~s.labels["body"]).any(), name
    assert not (s.labels["tumor"] & ~s.labels["brain"]).any()
    t = per_slice(s.labels["tumor"])
    assert 0 < t.sum() < len(s) // 2
    assert s.values.min() >= 0 and s.values.max() <= 65535 and np.array_equal(s.values, np.round(s.values))
    core = eroded(s.labels["tumor"], 1)
    brain = eroded(s.labels["brain"] & ~ndimage.binary_dilation(s.labels["tumor"], IN_PLANE, 4), 2)
    outside = ~ndimage.binary_dilation(s.labels["body"], IN_PLANE, 3)
    assert float(s.values[outside].mean()) < 0.1 * float(s.values[brain].mean())
    if "T2" in s.description:
        assert float(s.values[core].mean()) > float(s.values[brain].mean()) + 150   # bright tumour
    else:
        rim = s.labels["tumor"] & ~eroded(s.labels["tumor"], 1)
        assert float(np.percentile(s.values[rim | core], 90)) > float(np.percentile(s.values[brain], 90))
    if seed % 6 == 5:
        assert s.plane == "coronal" and abs(s.geometry.direction_matrix()[1, 2]) > 0.99


# ----------------------------------------------------------------------------------------- captions

TUMOUR_RE = re.compile(r"\b(tumou?r|mass|lesion)\b")


@pytest.mark.parametrize("seed", CT_SEEDS)
def test_ct_captions_name_what_is_visible(seed):
    s = ct(seed)
    assert len(s.captions) == len(s)
    tumour = per_slice(s.labels["tumor"])
    left, right = per_slice(s.labels["left lung"]), per_slice(s.labels["right lung"])
    liver = per_slice(s.labels["liver"])
    for k, caption in enumerate(s.captions):
        assert ("CT" in caption or "computed tomography" in caption) and s.plane in caption, caption
        assert mentions_tumour(caption) == bool(tumour[k]) == bool(TUMOUR_RE.search(caption)), (k, caption)
        assert ("lung" in caption) == bool(left[k] or right[k]), (k, caption)
        assert ("liver" in caption.replace("liver lesion", "").replace("liver tumor", "").replace(
            "liver tumour", "").replace("liver mass", "")) == bool(liver[k]), (k, caption)
        if left[k] != right[k]:
            assert ("left lung" if left[k] else "right lung") in caption


@pytest.mark.parametrize("seed", MR_SEEDS)
def test_mr_captions_mention_the_tumour_iff_present(seed):
    s = mr(seed)
    tumour = per_slice(s.labels["tumor"])
    for k, caption in enumerate(s.captions):
        assert ("MR" in caption or "magnetic resonance" in caption) and s.plane in caption, caption
        assert mentions_tumour(caption) == bool(tumour[k]), (k, caption)


def test_captions_vary_their_wording():
    captions = [c for seed in CT_SEEDS for c, t in zip(ct(seed).captions, per_slice(ct(seed).labels["tumor"])) if t]
    words = {w for c in captions for w in TUMOUR_WORDS if re.search(rf"\b{w}\b", c)}
    assert len(words) >= 3, words
    assert len({c.split(" ")[0] for c in ct(0).captions + ct(1).captions}) >= 3


# ----------------------------------------------------------------------------------------- DICOM

@pytest.mark.parametrize("make,seed", [(ct_chest_series, 0), (ct_chest_series, 2), (ct_chest_series, 5),
                                       (mr_brain_series, 2), (mr_brain_series, 5)],
                         ids=["ct-axial", "ct-oblique", "ct-feet-first", "mr-oblique", "mr-coronal"])
def test_write_dicom_reads_back_to_the_same_geometry_and_values(tmp_path, make, seed):
    from medclipsam.dicom import dciodvfy_available, read_series, validate_with_dciodvfy

    s = make(seed, 10, 48)
    files = s.write_dicom(tmp_path / "series")
    assert len(files) == 10 and all(f.is_file() for f in files)
    r = read_series(tmp_path / "series")
    try:
        g, h = s.geometry, r.geometry
        assert tuple(h.shape) == tuple(g.shape) and h.regular
        for a, b in ((g.spacing, h.spacing), (g.origin, h.origin), (g.direction, h.direction)):
            assert np.allclose(a, b, atol=1e-4, rtol=0), (a, b)
        back = np.stack([r.read_slice(k) for k in range(len(r))])
        assert np.abs(back - s.values).max() <= 1.0
        assert r.modality == s.modality and not r.notes
        if seed % 6 == 2:
            assert not np.allclose(h.direction, np.eye(3).ravel(), atol=0.05)
    finally:
        r.close()
    import pydicom

    ds = pydicom.dcmread(files[0])
    if s.modality == "CT":
        assert (ds.BitsStored, float(ds.RescaleIntercept), float(ds.RescaleSlope)) == (12, -1024.0, 1.0)
    else:
        assert (ds.BitsStored, ds.PixelRepresentation) == (16, 0)
    if dciodvfy_available():
        report = validate_with_dciodvfy(files[0])
        assert not report.errors, report.raw


# ----------------------------------------------------------------------------------------- rendering

def test_series_slices_are_rendered_with_the_engine_window():
    s = ct(0)
    k = int(np.flatnonzero(per_slice(s.labels["tumor"]))[0])
    lung = s.slice(k, "left lung")
    soft = s.slice(k, "tumor")
    assert (lung.window, soft.window, s.slice(k).window) == ("ct-lung", "ct-soft-tissue", "ct-soft-tissue")
    for sl in (lung, soft):
        assert isinstance(sl, PhantomSlice) and sl.rgb.dtype == np.uint8 and sl.rgb.shape == (128, 128, 3)
        assert sl.modality == "CT" and sl.kind == "ct-chest" and sl.caption == s.captions[k]
        assert set(sl.masks) == set(s.labels) and all(m.shape == (128, 128) for m in sl.masks.values())
        assert np.array_equal(sl.masks["tumor"], s.labels["tumor"][k])
    lungs = eroded(s.label("lungs")[k:k + 1] & ~s.labels["tumor"][k:k + 1], 2)[0]
    # lung window [−1350, 150]: −800 HU → ≈ 94; soft-tissue window [−160, 240]: lungs black
    assert abs(float(lung.rgb[lungs, 0].mean()) - 93.5) < 12
    assert float(soft.rgb[lungs, 0].mean()) < 3
    m = mr(0).slice(3, "tumor")
    assert m.window == "mr-percentile" and m.rgb.dtype == np.uint8 and m.rgb.shape == (128, 128, 3)


def test_label_volume_and_aliases():
    s = ct(1)
    lv = s.label_volume(["body", "lungs", "liver", "tumor"])
    assert lv.dtype == np.uint8 and lv.shape == s.values.shape
    assert np.array_equal(lv == 4, s.labels["tumor"])
    assert np.array_equal(lv == 2, s.label("lungs") & ~s.labels["tumor"])
    assert np.array_equal(lv > 0, s.labels["body"])
    assert np.array_equal(s.label("tumour"), s.labels["tumor"]) and not s.label("brain").any()
    with pytest.raises(KeyError):
        s.label_volume(["kidney"])
    sl = s.slice(int(s.present_slices("lungs")[0]))
    assert np.array_equal(sl.mask("lungs"), sl.masks["left lung"] | sl.masks["right lung"])


# ----------------------------------------------------------------------------------------- US and X-ray

@pytest.mark.parametrize("seed", range(4))
def test_ultrasound_lesion_is_dark_with_a_posterior_feature(seed):
    ex = us_breast_image(seed)
    assert ex.rgb.dtype == np.uint8 and ex.rgb.shape == (160, 200, 3) and (ex.modality, ex.kind) == ("US", "us-breast")
    lesion = ex.masks["lesion"]
    assert set(ex.masks) == {"lesion"} and 0.005 < lesion.mean() < 0.2
    g = ex.rgb[..., 0].astype(float)
    ring = ndimage.binary_dilation(lesion, iterations=8) & ~ndimage.binary_dilation(lesion, iterations=3)
    assert g[lesion].mean() < g[ring].mean() - 25
    assert mentions_tumour(ex.caption) and "ultrasound" in ex.caption or "sonogram" in ex.caption
    # the band below the lesion against the same depths beside it
    rows, cols = np.nonzero(lesion)
    bottom, c0, c1 = rows.max(), cols.min(), cols.max()
    width = c1 - c0 + 1
    below = g[bottom + 3:bottom + 20, c0 + width // 4:c1 - width // 4 + 1].mean()
    beside = np.concatenate([g[bottom + 3:bottom + 20, max(0, c0 - width):max(0, c0 - 6)].ravel(),
                             g[bottom + 3:bottom + 20, c1 + 6:c1 + width].ravel()]).mean()
    if "shadow" in ex.caption:
        assert below < beside - 10
    else:
        assert "enhancement" in ex.caption and below > beside + 5


@pytest.mark.parametrize("seed", range(4))
def test_chest_xray_lungs_are_dark_and_on_the_right_sides(seed):
    ex = xray_chest_image(seed)
    assert ex.rgb.dtype == np.uint8 and ex.rgb.shape == (192, 192, 3) and (ex.modality, ex.kind) == ("DX", "xray-chest")
    assert set(ex.masks) == {"body", "left lung", "right lung"}
    left, right, body = ex.masks["left lung"], ex.masks["right lung"], ex.masks["body"]
    assert left.any() and right.any() and not ((left | right) & ~body).any() and not (left & right).any()
    assert np.nonzero(left)[1].mean() > 96 > np.nonzero(right)[1].mean()      # PA film: patient left = image right
    g = ex.rgb[..., 0].astype(float)
    mediastinum = np.zeros_like(body)
    mediastinum[60:120, 90:102] = True
    assert g[left | right].mean() < g[mediastinum].mean() - 60
    assert g[~body].mean() < g[left | right].mean()
    assert g[body & ~(left | right)].mean() > g[left | right].mean() + 30
    assert "lung" in ex.caption and mentions_tumour(ex.caption) is False


# ----------------------------------------------------------------------------------------- the mix

def test_training_slices_are_a_balanced_deterministic_mix():
    ex = training_slices(0, 64, size=96)
    assert len(ex) == 64
    assert Counter(e.kind for e in ex) == {k: 16 for k in KINDS}
    assert [e.kind for e in ex[:4]] == list(KINDS)
    assert {e.modality for e in ex} == {"CT", "MR", "US", "DX"}
    for e in ex:
        assert e.rgb.dtype == np.uint8 and e.rgb.ndim == 3 and e.rgb.shape[2] == 3
        assert e.rgb.shape[0] <= 96 and e.rgb.shape[1] <= 96
        assert all(m.shape == e.rgb.shape[:2] and m.dtype == bool for m in e.masks.values())
        assert isinstance(e.caption, str) and e.caption
        tumour = e.mask("tumor") | e.mask("lesion")
        assert mentions_tumour(e.caption) == bool(tumour.any()), e.caption
        if e.visible_caption:
            assert mentions_tumour(e.visible_caption) == bool(tumour.any() and "tumor" not in e.hidden)
    ct_slices = [e for e in ex if e.kind == "ct-chest"]
    assert any(e.present("tumor") for e in ct_slices) and any(not e.present("tumor") for e in ct_slices)
    assert any(not e.present("lungs") for e in ct_slices)                     # above/below the lungs
    mr_slices = [e for e in ex if e.kind == "mr-brain"]
    assert any(e.present("tumor") for e in mr_slices) and any(not e.present("tumor") for e in mr_slices)
    again = training_slices(0, 64, size=96)
    assert all(np.array_equal(a.rgb, b.rgb) and a.caption == b.caption for a, b in zip(ex, again))
    other = training_slices(1, 8, size=96)
    assert any(not np.array_equal(a.rgb, b.rgb) for a, b in zip(ex[:8], other))


def _hepatic_tumour_hidden_in_the_bone_window() -> PhantomSeries:
    # a hypodense lesion within 42 HU of the enhanced liver shows < 6 grey levels in the 1800 HU bone window
    for seed in range(80):
        s = ct(seed)
        if s.hosts.get("tumor") == "liver" and abs(s.design["tumor"] - s.design["liver"]) < 42:
            return s
    raise AssertionError("no low-contrast hepatic tumour among the first 80 CT seeds")


def test_a_low_contrast_hepatic_tumour_is_hidden_in_the_bone_window_and_shown_in_soft_tissue():
    s = _hepatic_tumour_hidden_in_the_bone_window()
    k = int(np.flatnonzero(per_slice(s.labels["tumor"]))[len(s.present_slices("tumor")) // 2])
    soft, lung, bone = s.slice(k, "tumor"), s.slice(k, "lungs"), s.slice(k, "spine")
    assert (soft.window, lung.window, bone.window) == ("ct-soft-tissue", "ct-lung", "ct-bone")
    assert soft.hidden == () and soft.visible_caption == "" and mentions_tumour(soft.caption)
    assert lung.hidden == ()                       # the enhanced liver and its lesion show in the lung window
    assert bone.hidden == ("tumor",), bone.hidden
    # the truth masks and the series' caption stay; the visible caption names only what shows
    assert bone.masks["tumor"].any() and bone.caption == s.captions[k] and mentions_tumour(bone.caption)
    assert not mentions_tumour(bone.visible_caption), bone.visible_caption
    # what the rule measures is what the image shows: grey levels inside vs around the tumour
    m = soft.masks["tumor"]
    ring = ndimage.binary_dilation(m, iterations=3) & ~m & soft.masks["liver"]
    for sl, visible in ((soft, True), (bone, False)):
        g = sl.rgb[..., 0].astype(float)
        assert (abs(g[m].mean() - g[ring].mean()) >= 6.0) == visible, sl.window


def test_a_lung_tumour_is_never_hidden():
    for seed in range(40):
        s = ct(seed)
        if s.hosts.get("tumor") in ("left lung", "right lung"):
            k = int(s.present_slices("tumor")[0])
            for target in ("tumor", "lungs", "spine", "liver"):
                assert "tumor" not in s.slice(k, target).hidden
            return
    raise AssertionError("no lung tumour among the first 40 CT seeds")


def test_rendered_contrast():
    from medclipsam.phantoms.base import rendered_contrast
    from medclipsam.volume.render import Window

    w = Window("x", -160.0, 240.0, False, "")
    assert rendered_contrast(30.0, 60.0, w) == pytest.approx(30 * 255 / 400)
    assert rendered_contrast(-900.0, -1000.0, w) == 0.0                      # both below the window
    assert rendered_contrast(10.0, 20.0, Window("as-stored", None, None, False, "")) == pytest.approx(10.0)


def test_training_slices_can_favour_ct_and_tumour_slices():
    ex = training_slices(0, 40, size=64, shares=(2, 1, 1, 1), tumour_slices=5)
    assert Counter(e.kind for e in ex) == {"ct-chest": 16, "mr-brain": 8, "us-breast": 8, "xray-chest": 8}
    assert [e.kind for e in ex[:5]] == ["ct-chest", "mr-brain", "us-breast", "xray-chest", "ct-chest"]
    ct_tumour = sum(e.present("tumor") for e in ex if e.kind == "ct-chest")
    base = training_slices(0, 40, size=64)
    assert ct_tumour > sum(e.present("tumor") for e in base if e.kind == "ct-chest")
    with pytest.raises(ValueError, match="shares"):
        training_slices(0, 4, shares=(0, 0, 0, 0))
    with pytest.raises(ValueError, match="tumour_slices"):
        training_slices(0, 4, tumour_slices=9)
