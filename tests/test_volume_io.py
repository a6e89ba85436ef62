"""NIfTI / NRRD volume input and label output (medclipsam.volume.itk_io)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from medclipsam.errors import InputError, MedClipSamError
from medclipsam.geometry import Geometry
from medclipsam.volume.itk_io import LabelShapeError, label_suffix, read_volume, write_label


def _rotation(axis, degrees: float) -> np.ndarray:
    a = np.asarray(axis, dtype=np.float64)
    a /= np.linalg.norm(a)
    t = np.radians(degrees)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * (k @ k)


def _oblique_geometry(flip_k: bool = False, shape=(7, 11, 13)) -> Geometry:
    d = _rotation((0.3, -0.5, 0.8), 37.0)
    if flip_k:   # a left-handed index frame (slices stacked against the normal)
        d[:, 2] *= -1
    return Geometry(shape=shape, spacing=(0.7, 1.3, 2.9), origin=(-100.5, 20.25, 333.0),
                    direction=tuple(float(v) for v in d.reshape(-1)))


def _labels(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 6, shape).astype(np.uint8)


def _all_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*"))


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".seg.nrrd"])
@pytest.mark.parametrize("flip_k", [False, True])
def test_label_round_trip_keeps_voxels_and_geometry(tmp_path, suffix, flip_k):
    g = _oblique_geometry(flip_k)
    labels = _labels(g.shape)
    out = write_label(tmp_path / f"mask{suffix}", labels, g)
    assert out == tmp_path / f"mask{suffix}"
    assert _all_files(tmp_path) == [f"mask{suffix}"]          # no temporary file left
    vol = read_volume(out)
    assert vol.array.shape == g.shape and not vol.is_rgb
    assert np.array_equal(vol.array.astype(np.uint8), labels)
    np.testing.assert_allclose(vol.geometry.spacing, g.spacing, atol=1e-4)
    np.testing.assert_allclose(vol.geometry.origin, g.origin, atol=1e-4)
    np.testing.assert_allclose(vol.geometry.direction, g.direction, atol=1e-4)
    assert vol.modality == "OT"
    assert sitk.ReadImage(str(out)).GetPixelID() == sitk.sitkUInt8


def _nifti_sform(path: Path) -> tuple[int, np.ndarray]:
    """sform_code and the 3×4 sform of a NIfTI-1 file, read from the header by hand."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as f:
        header = f.read(348)
    assert struct.unpack("<i", header[:4])[0] == 348, "not a little-endian NIfTI-1 header"
    sform_code = struct.unpack("<h", header[254:256])[0]
    srow = np.array(struct.unpack("<12f", header[280:328]), dtype=np.float64).reshape(3, 4)
    return sform_code, srow


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
@pytest.mark.parametrize("flip_k", [False, True])
def test_nifti_header_holds_the_ras_affine(tmp_path, suffix, flip_k):
    g = _oblique_geometry(flip_k)
    out = write_label(tmp_path / f"mask{suffix}", _labels(g.shape), g)
    code, srow = _nifti_sform(out)
    assert code > 0
    np.testing.assert_allclose(srow, g.affine_ras()[:3], atol=1e-4)


def test_nrrd_label_names_are_stored_as_slicer_segments(tmp_path):
    g = _oblique_geometry()
    out = write_label(tmp_path / "mask.seg.nrrd", _labels(g.shape), g,
                      label_names={2: "left lung", 1: "liver"})
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(out))
    reader.ReadImageInformation()
    meta = {k: reader.GetMetaData(k) for k in reader.GetMetaDataKeys()}
    assert meta["Segment0_Name"] == "liver" and meta["Segment0_LabelValue"] == "1"
    assert meta["Segment1_Name"] == "left lung" and meta["Segment1_LabelValue"] == "2"
    assert meta["Segment1_Extent"] == "0 12 0 10 0 6"
    assert meta.get("NRRD_encoding", "gzip") == "gzip"


def test_irregular_geometry_is_refused(tmp_path):
    positions = ((0.0, 0.0, 0.0), (0.0, 0.0, 2.0), (0.0, 0.0, 7.0))
    g = Geometry(shape=(3, 4, 5), spacing=(1.0, 1.0, 2.0), slice_positions=positions,
                 irregular_reason="missing slices: gaps between slices range 2–5 mm")
    for suffix in (".nii.gz", ".nrrd"):
        with pytest.raises(InputError, match=r"DICOM SEG \(\.dcm\)") as info:
            write_label(tmp_path / f"mask{suffix}", np.zeros(g.shape, np.uint8), g)
        assert "one position per slice" in str(info.value)
    assert _all_files(tmp_path) == []


def test_shape_mismatch_and_bad_values_raise_value_error(tmp_path):
    g = _oblique_geometry()
    with pytest.raises(ValueError, match="does not match"):
        write_label(tmp_path / "m.nii.gz", np.zeros((7, 11, 12), np.uint8), g)
    with pytest.raises(LabelShapeError):
        write_label(tmp_path / "m.nii.gz", np.zeros((11, 13), np.uint8), g)
    with pytest.raises(ValueError, match="0..255"):
        write_label(tmp_path / "m.nii.gz", np.full(g.shape, 300, np.int32), g)
    assert _all_files(tmp_path) == []
    # bool and wider integer types with valid values are fine
    out = write_label(tmp_path / "m.nii.gz", np.ones(g.shape, np.int64) * 3, g)
    assert int(read_volume(out).array.max()) == 3


def test_label_suffix():
    assert label_suffix("a/b/mask.nii.gz") == "nifti"
    assert label_suffix("MASK.NII") == "nifti"
    assert label_suffix("mask.nrrd") == "nrrd"
    assert label_suffix("mask.seg.nrrd") == "nrrd"
    assert label_suffix("seg.dcm") == "dicom-seg"
    for bad in ("mask.png", "mask", "mask.nii.zip", ".nii.gz"):
        with pytest.raises(InputError, match="cannot tell the label format"):
            label_suffix(bad)


def test_write_label_refuses_dicom_and_unknown_suffixes(tmp_path):
    g = _oblique_geometry()
    with pytest.raises(InputError, match="write_dicom_seg"):
        write_label(tmp_path / "seg.dcm", _labels(g.shape), g)
    with pytest.raises(InputError, match="label format"):
        write_label(tmp_path / "mask.png", _labels(g.shape), g)
    assert _all_files(tmp_path) == []


def test_read_2d_image_gives_one_slice(tmp_path):
    arr = np.arange(6 * 9, dtype=np.int16).reshape(6, 9)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.5, 0.8))
    img.SetOrigin((10.0, -4.0))
    path = tmp_path / "plane.nrrd"
    sitk.WriteImage(img, str(path))
    vol = read_volume(path, modality="DX")
    assert vol.array.shape == (1, 6, 9) and vol.array.dtype == np.float32
    assert np.array_equal(vol.array[0], arr.astype(np.float32))
    assert vol.geometry.spacing == (0.5, 0.8, 1.0)
    assert vol.geometry.origin == (10.0, -4.0, 0.0)
    assert vol.geometry.direction == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    assert vol.modality == "DX" and len(vol) == 1
    assert vol.read_slice(0).shape == (6, 9)


def test_read_scalar_volume_is_float32_in_physical_values(tmp_path):
    arr = (np.arange(3 * 4 * 5, dtype=np.int16).reshape(3, 4, 5) - 1000)
    img = sitk.GetImageFromArray(arr)
    path = tmp_path / "ct.mha"
    sitk.WriteImage(img, str(path))
    vol = read_volume(path, modality="CT")
    assert vol.array.dtype == np.float32 and vol.array.shape == (3, 4, 5)
    assert float(vol.array.min()) == -1000.0 and vol.modality == "CT"
    assert vol.description == "ct.mha"


def test_read_rgb_volume(tmp_path):
    arr = np.random.default_rng(1).integers(0, 256, (2, 5, 7, 3)).astype(np.uint8)
    img = sitk.GetImageFromArray(arr, isVector=True)
    path = tmp_path / "rgb.nrrd"
    sitk.WriteImage(img, str(path))
    vol = read_volume(path)
    assert vol.is_rgb and vol.array.shape == (2, 5, 7, 3) and vol.array.dtype == np.uint8
    assert np.array_equal(vol.array, arr)


def test_read_refuses_4d_and_other_vectors(tmp_path):
    four = sitk.Image([3, 4, 5, 2], sitk.sitkFloat32)
    p4 = tmp_path / "fmri.nii.gz"
    sitk.WriteImage(four, str(p4))
    with pytest.raises(InputError, match="4D"):
        read_volume(p4)
    two = sitk.GetImageFromArray(np.zeros((3, 4, 5, 2), np.float32), isVector=True)
    p2 = tmp_path / "field.nrrd"
    sitk.WriteImage(two, str(p2))
    with pytest.raises(InputError, match="2 components"):
        read_volume(p2)


def test_corrupt_and_missing_files(tmp_path):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00 not really gzip, certainly not NIfTI")
    with pytest.raises(InputError, match="broken.nii.gz"):
        read_volume(bad)
    g = _oblique_geometry()
    good = write_label(tmp_path / "good.nrrd", _labels(g.shape), g)
    truncated = tmp_path / "truncated.nrrd"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(InputError, match="truncated.nrrd"):
        read_volume(truncated)
    with pytest.raises(InputError, match="not found"):
        read_volume(tmp_path / "absent.nii")
    with pytest.raises(InputError, match="not a volume"):
        read_volume(tmp_path / "photo.png")


def test_unwritable_output_leaves_nothing(tmp_path):
    g = _oblique_geometry()
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("I am a file")
    with pytest.raises(InputError, match="cannot write") as info:
        write_label(blocker / "mask.nii.gz", _labels(g.shape), g)
    assert isinstance(info.value, MedClipSamError)
    assert _all_files(tmp_path) == ["not_a_folder"]


@pytest.mark.parametrize("name", ["mask.nii.gz", "mask.nrrd"])
def test_failed_write_removes_temporary_files(tmp_path, monkeypatch, name):
    import errno

    from medclipsam.volume import label_writers

    g = _oblique_geometry()

    def failing_write(f, labels):
        f.write(labels[0].tobytes())                     # half a file ...
        raise OSError(errno.ENOSPC, "No space left on device (simulated)")

    monkeypatch.setattr(label_writers, "_write_slices", failing_write)
    with pytest.raises(InputError, match="No space left"):
        write_label(tmp_path / name, _labels(g.shape), g)
    assert _all_files(tmp_path) == []


def test_existing_output_is_replaced_atomically(tmp_path):
    g = _oblique_geometry()
    out = tmp_path / "mask.nii.gz"
    write_label(out, np.zeros(g.shape, np.uint8), g)
    write_label(out, np.ones(g.shape, np.uint8), g)
    assert _all_files(tmp_path) == ["mask.nii.gz"]
    assert float(read_volume(out).array.min()) == 1.0
