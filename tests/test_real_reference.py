"""Reference segmentations of the real DICOM corpus on our series grid (benchmarks/_reference.py), and
the box-prompted SAM benchmark on them (benchmarks/real_ct_boxes.py).

The alignment checks are physical, so a wrong mapping fails them: bone labels must lie on bone,
organs on soft tissue, the liver on the patient's right; each flipped version of the mapping (rows,
columns, slices, and their combinations) must do clearly worse. The corpus lives outside the project
(../shared/corpora/dicom); tests that need it skip with the reason when it is absent.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
import sys
from contextlib import redirect_stdout

import numpy as np
import pytest

from project import project_module

ref = project_module("benchmarks", "_reference")
MISSING = ref.corpus_missing_reason()
needs_corpus = pytest.mark.skipif(MISSING is not None, reason=str(MISSING))

FLIPS = [f for f in itertools.product((False, True), repeat=3) if any(f)]     # (slices, rows, columns)


def flipped(mask: np.ndarray, flip: tuple[bool, bool, bool]) -> np.ndarray:
    return mask[tuple(slice(None, None, -1) if f else slice(None) for f in flip)]


def read_volume(case) -> tuple[np.ndarray, object]:
    from medclipsam.volume.inputs import close_volume

    src = case.open()
    try:
        return np.stack([src.read_slice(k) for k in range(len(src))]), src.geometry
    finally:
        close_volume(src)


# ------------------------------------------------------------------------ the mapping, no corpus needed


def test_nifti_labels_land_on_the_series_voxels_for_a_transposed_flipped_affine():
    """A NIfTI whose i axis runs up the series' rows, j along its columns and k against its slices:
    every series voxel gets exactly its own label, and the correspondence names those axes."""
    from medclipsam.geometry import Geometry

    n, rows, cols = 3, 4, 5
    sx, sy, sz = 0.7, 0.9, 2.5
    ox, oy, oz = -10.0, 20.0, 100.0
    geometry = Geometry((n, rows, cols), (sx, sy, sz), (ox, oy, oz))
    ids = np.arange(n * rows * cols, dtype=np.int32).reshape(n, rows, cols) + 1
    # series voxel (k, r, c) is NIfTI voxel (i, j, kk) = (rows-1-r, c, n-1-k)
    nifti = np.transpose(ids[::-1, ::-1, :], (1, 2, 0))          # [i, j, kk]
    # RAS of series voxel (k, r, c): (-(ox + c sx), -(oy + r sy), oz + k sz), written in (i, j, kk)
    affine = np.array([[0.0, -sx, 0.0, -ox],
                       [sy, 0.0, 0.0, -oy - (rows - 1) * sy],
                       [0.0, 0.0, -sz, oz + (n - 1) * sz],
                       [0.0, 0.0, 0.0, 1.0]])
    on_series, stats = ref.nifti_labels_on_series(geometry, nifti, affine)
    np.testing.assert_array_equal(on_series, ids)
    assert stats == {"outside": 0, "max_off_grid_voxels": pytest.approx(0.0, abs=1e-9)}
    corr = ref.index_correspondence(geometry, affine)
    np.testing.assert_allclose(corr, [[0, -1, 0], [1, 0, 0], [0, 0, -1]], atol=1e-9)
    assert ref.describe_correspondence(corr) == "columns → +j, rows → −i, slices → −k"


def test_voxels_outside_the_nifti_get_background():
    from medclipsam.geometry import Geometry

    geometry = Geometry((1, 2, 4), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    nifti = np.full((2, 2, 1), 7, dtype=np.uint8)                 # covers only x (LPS) 0 and 1
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])                      # LPS = identity index
    on_series, stats = ref.nifti_labels_on_series(geometry, nifti, affine)
    np.testing.assert_array_equal(on_series[0], [[7, 7, 0, 0], [7, 7, 0, 0]])
    assert stats["outside"] == 4


def test_benchmark_without_the_corpus_says_why_and_exits_cleanly(monkeypatch, tmp_path):
    bench = project_module("benchmarks", "real_ct_boxes")
    monkeypatch.setattr(ref, "CORPUS", tmp_path / "no-corpus")
    monkeypatch.setattr(sys, "argv", ["real_ct_boxes.py"])
    out = io.StringIO()
    with redirect_stdout(out):
        bench.main()
    last = out.getvalue().strip().splitlines()[-1]
    assert last.startswith("skipped: real DICOM corpus not found at ") and "no-corpus" in last


# ------------------------------------------------------------------------------ Siemens CT (NIfTI)


def _bone_names() -> list[str]:
    table = json.loads((ref.CORPUS / ref.SIEMENS_CT / "reference_seg" / "labels.json").read_text())["labels"]
    return [v for v in table.values() if v.startswith(("vertebrae_", "rib_", "humerus_"))]


@pytest.fixture(scope="module")
def siemens():
    if MISSING:
        pytest.skip(MISSING)
    case, = ref.load_cases({ref.SIEMENS_CT: ["liver", "spleen", "aorta", "stomach", *_bone_names()]})
    hu, geometry = read_volume(case)
    return case, hu, geometry


@needs_corpus
def test_siemens_default_structures_and_what_the_reference_is():
    cases = {c.name: c for c in ref.load_cases()}
    case = cases[ref.SIEMENS_CT]
    assert sorted(case.structures) == ["aorta", "liver", "spleen", "stomach"]      # no kidney in these 20 slices
    assert any("kidney_left" in n and "absent" in n for n in case.notes)
    assert "TotalSegmentator" in case.truth and "model" in case.truth
    for mask in case.structures.values():
        assert mask.dtype == bool and mask.shape == (20, 512, 512)
    assert case.series.is_dir() and case.series.name == "image"
    with pytest.raises(KeyError, match="not_an_organ"):
        ref.load_cases({ref.SIEMENS_CT: ["not_an_organ"]})


@needs_corpus
def test_siemens_affine_gives_the_flips_the_manifest_describes(siemens):
    """MANIFEST: the NIfTI j axis runs opposite to DICOM rows; NIfTI k=0 is the most inferior slice
    (z = -804.5). The mapping found this from the affines."""
    case, _hu, geometry = siemens
    assert any("columns → +i, rows → −j, slices → +k" in n for n in case.notes)
    z = [geometry.slice_position(k)[2] for k in range(geometry.shape[0])]
    assert z[0] == pytest.approx(-804.5) and z == sorted(z)       # our slice 0 is NIfTI k=0, the most inferior


@needs_corpus
def test_siemens_bone_labels_lie_on_bone_and_no_flipped_mapping_does(siemens):
    """Vertebrae, ribs and humeri: 74% of their voxels are > 150 HU as mapped; flipping slices only
    gives 45%, any in-plane flip 24% or less (measured)."""
    case, hu, _ = siemens
    bone = np.zeros(hu.shape, bool)
    for name, mask in case.structures.items():
        if name.startswith(("vertebrae_", "rib_", "humerus_")):
            bone |= mask
    assert bone.sum() > 50_000

    def on_bone(mask):
        return float(np.mean(hu[mask] > 150))

    assert on_bone(bone) > 0.65
    for flip in FLIPS:
        assert on_bone(flipped(bone, flip)) < on_bone(bone) - 0.2, f"flip (slices, rows, cols) = {flip}"


@needs_corpus
def test_siemens_organs_have_their_hounsfield_units(siemens):
    """Contrast-enhanced CT (the aorta's median is 151 HU): liver 93, spleen 80, stomach 52 HU medians as
    mapped; liver + spleen are 98% in [40, 160] HU, an in-plane flip 69% or less (measured)."""
    case, hu, _ = siemens
    s = case.structures
    assert 60 <= np.median(hu[s["liver"]]) <= 140            # enhanced parenchyma (brief's unenhanced 30–90 + contrast)
    assert 50 <= np.median(hu[s["spleen"]]) <= 140
    assert 110 <= np.median(hu[s["aorta"]]) <= 350           # contrast-enhanced blood
    assert -50 <= np.median(hu[s["stomach"]]) <= 120        # wall and contents, no air
    soft = s["liver"] | s["spleen"]

    def in_soft(mask):
        v = hu[mask]
        return float(np.mean((v > 40) & (v < 160)))

    assert in_soft(soft) > 0.9
    for flip in FLIPS:
        if flip[1] or flip[2]:
            assert in_soft(flipped(soft, flip)) < 0.8, f"flip (slices, rows, cols) = {flip}"


def _mean_lps_x(mask: np.ndarray, geometry) -> float:
    xs = [ref.slice_lps(geometry, k)[..., 0][mask[k]] for k in range(mask.shape[0]) if mask[k].any()]
    return float(np.concatenate(xs).mean())


def _check_sides(liver: np.ndarray, spleen: np.ndarray | None, hu: np.ndarray, geometry) -> None:
    """Liver on the patient's right (LPS x below the body's centre; the left half of the displayed
    image), spleen on the left."""
    from medclipsam.volume.display import display_orientation

    body_x = _mean_lps_x(hu > -300, geometry)
    assert _mean_lps_x(liver, geometry) < body_x - 30
    orient = display_orientation(geometry)
    cols = geometry.shape[2]
    shown = np.stack([orient.apply(m) for m in liver])
    assert np.nonzero(shown)[2].mean() < cols / 2 - 30
    if spleen is not None:
        assert _mean_lps_x(spleen, geometry) > body_x + 30
        shown = np.stack([orient.apply(m) for m in spleen])
        assert np.nonzero(shown)[2].mean() > cols / 2 + 30


@needs_corpus
def test_siemens_liver_on_the_patients_right_spleen_on_the_left(siemens):
    case, hu, geometry = siemens
    _check_sides(case.structures["liver"], case.structures["spleen"], hu, geometry)


# ------------------------------------------------------------------------------ GE CT (DICOM SEG)


@pytest.fixture(scope="module")
def ge():
    if MISSING:
        pytest.skip(MISSING)
    case, = ref.load_cases({ref.GE_CT: ["liver"]})
    hu, geometry = read_volume(case)
    return case, hu, geometry


@needs_corpus
def test_ge_seg_liver_matches_its_source_nrrd(ge):
    """The SEG's liver, placed by ImagePositionPatient, against label_nrrd/liver_seg.nrrd (the label map
    dcmqi made it from) resampled by SimpleITK onto the series grid: Dice > 0.99 (measured: 1.0)."""
    import SimpleITK as sitk

    case, _hu, g = ge
    label = sitk.ReadImage(str(ref.CORPUS / ref.GE_CT / "label_nrrd" / "liver_seg.nrrd"))
    grid = sitk.Image(g.shape[2], g.shape[1], g.shape[0], sitk.sitkUInt8)
    grid.SetSpacing(g.spacing)
    grid.SetOrigin(g.origin)
    grid.SetDirection(g.direction)
    on_series = sitk.GetArrayFromImage(sitk.Resample(label, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0)) > 0
    liver = case.structures["liver"]
    assert liver.shape == on_series.shape == (3, 512, 512)
    dice = 2 * np.logical_and(liver, on_series).sum() / (liver.sum() + on_series.sum())
    assert dice > 0.99
    assert "SEG" in case.truth


@needs_corpus
def test_ge_liver_is_soft_tissue_on_the_patients_right(ge):
    """Unenhanced liver: median 45 HU as mapped (row flip 23, column flip 12, both -59: measured)."""
    case, hu, geometry = ge
    liver = case.structures["liver"]
    assert 30 <= np.median(hu[liver]) <= 90
    for flip in FLIPS:
        if flip[1] or flip[2]:
            assert not 30 <= np.median(hu[flipped(liver, flip)]) <= 90, f"flip (slices, rows, cols) = {flip}"
    _check_sides(liver, None, hu, geometry)


@needs_corpus
def test_ge_seg_frames_off_the_series_positions_are_refused(ge):
    case, _hu, geometry = ge
    seg = ref.CORPUS / ref.GE_CT / "seg" / "liver_seg.dcm"
    shifted = dataclasses.replace(geometry, origin=(geometry.origin[0], geometry.origin[1], geometry.origin[2] + 0.5))
    with pytest.raises(ref.ReferenceAlignmentError, match="mm from the nearest series slice"):
        ref.seg_on_series(seg, shifted, "Liver")
    with pytest.raises(KeyError, match="Spleen"):
        ref.seg_on_series(seg, geometry, "Spleen")
    with pytest.raises(ref.ReferenceAlignmentError, match="FrameOfReferenceUID"):
        ref.seg_on_series(seg, geometry, "Liver", frame_of_reference_uid="1.2.3")


# ------------------------------------------------------------------------------ the SAM benchmark


@needs_corpus
def test_litemedsam_boxes_on_real_liver_beat_a_random_litemedsam():
    """Siemens liver, slices 5 and 15, reference boxes: LiteMedSAM gave Dice 0.971 / 0.978 (slices 5 /
    15; 0.972 on slice 10), the random-initialised LiteMedSAM 0.13 (CPU, measured)."""
    from medclipsam.models import load_sam

    try:
        load_sam("litemedsam")
    except Exception as e:  # not installed / not yet supported: say why
        pytest.skip(f"load_sam('litemedsam') failed: {type(e).__name__}: {e}")
    bench = project_module("benchmarks", "real_ct_boxes")
    cases = ref.load_cases({ref.SIEMENS_CT: ["liver"]})
    slices = bench.prepare_slices(cases, only_slices={ref.SIEMENS_CT: [5, 15]})
    assert [s.k for s in slices] == [5, 15] and all(s.rgb.shape == (512, 512, 3) for s in slices)
    real = bench.evaluate("litemedsam", slices)
    random = bench.evaluate("litemedsam:random", slices)
    assert len(real.instances) == len(random.instances) == 2
    assert not real.random_weights and random.random_weights
    assert real.mean_dice > 0.90                      # observed 0.974
    assert real.mean_dice > random.mean_dice + 0.5    # observed 0.974 vs 0.13
