"""Submitted labels are checked before they are stored (medclipsam.serving.label_check): format,
integrity, grid, values and vocabulary; DICOM SEG of the image's series; atomic storage."""

from __future__ import annotations

import gzip
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from medclipsam.errors import InputError
from medclipsam.geometry import Geometry
from medclipsam.serving.label_check import (
    CheckedLabel,
    LabelLimits,
    allowed_values,
    check_label_upload,
    write_label_atomically,
)
from medclipsam.serving.vocabulary import load_vocabulary
from medclipsam.volume.itk_io import write_label

ROOT = Path(__file__).resolve().parents[1]
PHANTOMS = ROOT / "sample-data" / "phantoms"
CT, CT_TRUTH = PHANTOMS / "ct_chest", PHANTOMS / "ct_chest_labels.nii.gz"
MR, MR_TRUTH = PHANTOMS / "mr_brain", PHANTOMS / "mr_brain_labels.nii.gz"

VOCAB = load_vocabulary()
LIMITS = LabelLimits()
TUMOR, LEFT_LUNG = VOCAB.find("tumor").value, VOCAB.find("left lung").value


def _rotation(axis, degrees: float) -> np.ndarray:
    a = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    t = np.radians(degrees)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k


GRID = Geometry(shape=(6, 20, 24), spacing=(0.8, 0.9, 2.5), origin=(-100.5, 20.25, 33.0),
                direction=tuple(_rotation((1, 2, 3), 25).reshape(-1)))


def _labels() -> np.ndarray:
    a = np.zeros(GRID.shape, np.uint8)
    a[1:4, 3:10, 4:12] = LEFT_LUNG
    a[2:5, 12:16, 15:20] = TUMOR
    return a


def _itk(array: np.ndarray, grid: Geometry = GRID, *, vector: bool = False) -> sitk.Image:
    image = sitk.GetImageFromArray(array, isVector=vector)
    image.SetSpacing(grid.spacing)
    image.SetOrigin(grid.origin)
    image.SetDirection(grid.direction)
    return image


def _write(path: Path, array: np.ndarray, grid: Geometry = GRID, **kw) -> Path:
    sitk.WriteImage(_itk(array, grid, **kw), str(path), useCompression=path.name.endswith((".gz", ".nrrd")))
    return path


@pytest.fixture
def image(tmp_path) -> Path:
    """The image the labels belong to (int16 CT-like values on GRID)."""
    rng = np.random.default_rng(0)
    return _write(tmp_path / "image.nii.gz", rng.integers(-1000, 400, GRID.shape).astype(np.int16))


def _upload(tmp_path: Path, source: Path | bytes) -> Path:
    """What MONAI Label hands over: a temporary file whose name says nothing about its format."""
    dest = tmp_path / "upload-tmp8f3k2"
    if isinstance(source, bytes):
        dest.write_bytes(source)
    else:
        shutil.copyfile(source, dest)
    return dest


def _check(upload: Path, filename: str, image, *, vocabulary=VOCAB, allow_seg=False, dicom_dir=None,
           limits=LIMITS) -> CheckedLabel:
    return check_label_upload(upload, filename, image, vocabulary, allow_seg=allow_seg, dicom_dir=dicom_dir,
                              limits=limits)


def _refused(upload: Path, filename: str, image, *words: str, **kw) -> str:
    with pytest.raises(InputError) as e:
        _check(upload, filename, image, **kw)
    message = str(e.value)
    assert "/tmp" not in message and str(ROOT) not in message, message     # no server paths in a 400
    for word in words:
        assert word.lower() in message.lower(), message
    return message


# ------------------------------------------------------------------------------------------ accepted


@pytest.mark.parametrize("client_name", ["label.nii.gz", "label.nii", "label.nrrd", "Label.NII.GZ"])
def test_a_label_on_the_image_grid_is_accepted(tmp_path, image, client_name):
    suffix = next(s for s in (".nii.gz", ".nii", ".nrrd") if client_name.lower().endswith(s))
    source = _write(tmp_path / f"made{suffix}", _labels())
    checked = _check(_upload(tmp_path, source), client_name, image)
    assert checked.array.dtype == np.uint8 and checked.array.shape == GRID.shape
    np.testing.assert_array_equal(checked.array, _labels())
    assert checked.values == (LEFT_LUNG, TUMOR)
    assert checked.geometry.same_grid(GRID, atol=1e-4)
    assert checked.source_format == ("nrrd" if suffix == ".nrrd" else "nifti")


def test_a_slicer_seg_nrrd_with_one_layer_is_accepted(tmp_path, image):
    source = write_label(tmp_path / "made.seg.nrrd", _labels(), GRID,
                         label_names={LEFT_LUNG: "left lung", TUMOR: "tumor"})
    assert b"Segment0_Name" in source.read_bytes()[:4096]
    checked = _check(_upload(tmp_path, source), "Segmentation.seg.nrrd", image)
    np.testing.assert_array_equal(checked.array, _labels())


def test_float_label_with_whole_values_is_accepted_as_uint8(tmp_path, image):
    source = _write(tmp_path / "f.nii.gz", _labels().astype(np.float32))
    checked = _check(_upload(tmp_path, source), "label.nii.gz", image)
    assert checked.array.dtype == np.uint8
    np.testing.assert_array_equal(checked.array, _labels())


def test_a_grid_within_tolerance_is_accepted_and_stored_on_the_image_grid(tmp_path, image):
    near = Geometry(GRID.shape, GRID.spacing, tuple(np.add(GRID.origin, (0.004, -0.003, 0.0))), GRID.direction)
    checked = _check(_upload(tmp_path, _write(tmp_path / "n.nii.gz", _labels(), near)), "label.nii.gz", image)
    assert checked.geometry.same_grid(GRID, atol=1e-4)
    assert not checked.geometry.same_grid(near, atol=1e-4)


def test_4d_label_with_one_time_point_is_squeezed(tmp_path, image):
    four = sitk.JoinSeries([_itk(_labels())])           # (24, 20, 6, 1), the 3D grid in its first 3 axes
    assert four.GetDimension() == 4 and np.allclose(np.asarray(four.GetDirection()).reshape(4, 4)[:3, :3],
                                                    GRID.direction_matrix())
    sitk.WriteImage(four, str(tmp_path / "four.nrrd"))    # (NIfTI's reader drops the axis itself)
    checked = _check(_upload(tmp_path, tmp_path / "four.nrrd"), "label.nrrd", image)
    np.testing.assert_array_equal(checked.array, _labels())
    assert any("4D" in n for n in checked.notes)


def test_free_text_values_after_prompted_are_known():
    known = allowed_values(VOCAB)
    first = VOCAB.prompted_value
    assert set(range(first, first + 8)) <= set(known) and first + 8 not in known
    assert {e.value for e in VOCAB.entries} <= set(known) and 0 not in known


def test_free_text_value_accepted_and_one_beyond_refused(tmp_path, image):
    first = VOCAB.prompted_value
    a = _labels()
    a[0, 0, 0] = first + 7
    _check(_upload(tmp_path, _write(tmp_path / "ok.nii.gz", a)), "label.nii.gz", image)
    a[0, 0, 1] = first + 8
    _refused(_upload(tmp_path, _write(tmp_path / "no.nii.gz", a)), "label.nii.gz", image, str(first + 8),
             "vocabulary", "tumor")


# ------------------------------------------------------------------------------------------ refused: file


def test_over_the_size_limit_is_refused_before_reading(tmp_path, image):
    source = _write(tmp_path / "l.nii.gz", _labels())
    _refused(_upload(tmp_path, source), "label.nii.gz", image, "limit", limits=LabelLimits(max_bytes=100))


def test_default_limit_takes_a_250_mib_label_but_not_1_gb():
    assert 512 * 512 * 1000 + 352 < LIMITS.max_bytes < 10 ** 9


@pytest.mark.parametrize("client_name", ["label.exe", "label.png", "label", "label.nii.gz.exe", "label.dcm"])
def test_names_outside_the_allow_list_are_refused(tmp_path, image, client_name):
    source = _write(tmp_path / "l.nii.gz", _labels())
    _refused(_upload(tmp_path, source), client_name, image, "not a label format", ".nii.gz")


PNG = (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(">IIBBBBB", 4, 4, 8, 0, 0, 0, 0)
       + b"\0" * 64)


@pytest.mark.parametrize("client_name, content, words", [
    ("label.nii.gz", b"just some text\n" * 40, ["not a NIfTI", "gzip"]),
    ("label.nii.gz", PNG, ["not a NIfTI"]),
    ("label.nii.gz", gzip.compress(b"just some text\n" * 40), ["not a NIfTI"]),
    ("label.nii", b"just some text\n" * 40, ["not a NIfTI"]),
    ("label.nrrd", PNG, ["not a NRRD"]),
    ("label.seg.nrrd", b"just some text\n" * 40, ["not a NRRD"]),
])
def test_content_that_is_not_the_named_format_is_refused(tmp_path, image, client_name, content, words):
    _refused(_upload(tmp_path, content), client_name, image, *words)


@pytest.mark.parametrize("name, fraction", [("label.nii.gz", 0.5), ("label.nii.gz", 0.9), ("label.nii", 0.5),
                                            ("label.nii", 0.98), ("label.nrrd", 0.6), ("label.nii.gz", 0.02)])
def test_truncated_files_are_refused(tmp_path, image, name, fraction):
    rng = np.random.default_rng(1)
    noisy = rng.choice([0, LEFT_LUNG, TUMOR], GRID.shape).astype(np.uint8)   # compresses little: cut data
    whole = _write(tmp_path / ("made" + name[5:]), noisy).read_bytes()
    message = _refused(_upload(tmp_path, whole[:int(len(whole) * fraction)]), name, image)
    assert "truncated" in message or "damaged" in message, message


def test_two_file_nifti_header_is_refused(tmp_path, image):
    data = bytearray(_write(tmp_path / "l.nii", _labels()).read_bytes())
    data[344:348] = b"ni1\0"
    _refused(_upload(tmp_path, bytes(data)), "label.nii", image, ".hdr/.img")


def test_detached_nrrd_is_refused(tmp_path, image):
    header = (b"NRRD0004\ntype: unsigned char\ndimension: 3\nsizes: 24 20 6\nencoding: raw\n"
              b"data file: /etc/passwd\n\n")
    _refused(_upload(tmp_path, header), "label.nrrd", image, "detached", "another file")


def test_a_header_announcing_more_voxels_than_the_image_is_refused_before_decompression(tmp_path, image):
    data = bytearray(_write(tmp_path / "l.nii", _labels()).read_bytes())
    data[40:56] = struct.pack("<8h", 3, 2000, 2000, 2000, 1, 1, 1, 1)
    bomb = gzip.compress(bytes(data))          # 8 GB announced, 3 kB inside: read, it would be "truncated"
    _refused(_upload(tmp_path, bomb), "label.nii.gz", image, "2000×2000×2000", "24×20×6", "grid")
    _refused(_upload(tmp_path, bomb), "label.nii.gz", image, "announces", "limit",
             limits=LabelLimits(max_voxels=10 ** 6))


def test_a_multi_layer_segmentation_is_refused_with_how_to_export_a_labelmap(tmp_path, image):
    layers = np.stack([_labels() == LEFT_LUNG, _labels() == TUMOR], axis=-1).astype(np.uint8)
    source = _write(tmp_path / "m.seg.nrrd", layers, vector=True)
    _refused(_upload(tmp_path, source), "Segmentation.seg.nrrd", image, "2 values per voxel", "labelmap")


# ------------------------------------------------------------------------------------------ refused: grid


def test_another_shape_is_refused(tmp_path, image):
    other = Geometry((7, 20, 24), GRID.spacing, GRID.origin, GRID.direction)
    source = _write(tmp_path / "s.nii.gz", np.zeros(other.shape, np.uint8), other)
    _refused(_upload(tmp_path, source), "label.nii.gz", image, "24×20×7", "24×20×6", "grid")


def test_a_label_shifted_10_mm_is_refused_with_the_offset(tmp_path, image):
    shift = GRID.direction_matrix() @ np.array([10.0, 0, 0])
    moved = Geometry(GRID.shape, GRID.spacing, tuple(np.add(GRID.origin, shift)), GRID.direction)
    _refused(_upload(tmp_path, _write(tmp_path / "m.nii.gz", _labels(), moved)), "label.nii.gz", image,
             "shifted 10.000 mm")


def test_a_rotated_label_is_refused(tmp_path, image):
    turned = Geometry(GRID.shape, GRID.spacing, GRID.origin,
                      tuple((_rotation((0, 0, 1), 2) @ GRID.direction_matrix()).reshape(-1)))
    _refused(_upload(tmp_path, _write(tmp_path / "r.nii.gz", _labels(), turned)), "label.nii.gz", image,
             "rotated", "direction")


def test_another_spacing_is_refused(tmp_path, image):
    wider = Geometry(GRID.shape, (0.8, 0.9, 2.52), GRID.origin, GRID.direction)
    _refused(_upload(tmp_path, _write(tmp_path / "w.nii.gz", _labels(), wider)), "label.nii.gz", image,
             "spacing", "0.100 mm")


def test_image_given_as_geometry_or_path_is_the_same(tmp_path, image):
    source = _write(tmp_path / "l.nii.gz", _labels())
    a = _check(_upload(tmp_path, source), "label.nii.gz", image)
    b = _check(_upload(tmp_path, source), "label.nii.gz", GRID)
    np.testing.assert_array_equal(a.array, b.array)


# ------------------------------------------------------------------------------------------ refused: values


@pytest.mark.parametrize("dtype, value, name, words", [
    (np.float32, 1.5, "label.nii.gz", ["non-integer", "1.5"]),
    (np.float64, np.nan, "label.nrrd", ["non-integer", "nan"]),       # (ITK's NIfTI I/O turns NaN into 0)
    (np.int16, -1, "label.nii.gz", ["negative", "-1"]),
    (np.int16, 300, "label.nii.gz", ["above 255", "300"]),
    (np.uint8, 40, "label.nii.gz", ["40", "vocabulary", "4=tumor", "default.json"]),
])
def test_bad_values_are_refused(tmp_path, image, dtype, value, name, words):
    a = _labels().astype(dtype)
    a[3, 10, 10] = value
    _refused(_upload(tmp_path, _write(tmp_path / ("v" + name[5:]), a)), name, image, *words)


def test_without_a_vocabulary_any_value_up_to_255_is_accepted(tmp_path, image):
    a = _labels()
    a[0, 0, 0] = 255
    checked = _check(_upload(tmp_path, _write(tmp_path / "v.nii.gz", a)), "label.nii.gz", image, vocabulary=None)
    assert checked.values[-1] == 255


# ------------------------------------------------------------------------------------------ DICOM SEG


def _phantom_seg(series_dir: Path, truth: Path, out: Path) -> np.ndarray:
    """A DICOM SEG of the phantom series made by the project's writer; returns the label it holds
    in vocabulary values (its segments are numbered 1..N, so names must map them)."""
    from medclipsam.dicom import read_series
    from medclipsam.dicom.seg import SegmentSpec, write_dicom_seg
    from medclipsam.volume.itk_io import read_volume
    from medclipsam.volume.outputs import slice_frames

    names = {int(k): v for k, v in json.loads(truth.with_suffix("").with_suffix(".json").read_text()).items()}
    raw = read_volume(truth).array.astype(np.uint8)
    lut = np.zeros(256, np.uint8)
    for v, name in names.items():
        lut[v] = VOCAB.find(name).value
    labels = lut[raw]
    series = read_series(series_dir)
    try:
        datasets, frames = slice_frames(series)
        write_dicom_seg(out, datasets, labels, [SegmentSpec(int(lut[v]), n) for v, n in names.items()],
                        frames=frames, series_description="test", algorithm_version="0")
    finally:
        series.close()
    return labels


def test_a_dicom_seg_of_the_image_series_is_accepted_as_its_label(tmp_path):
    expected = _phantom_seg(CT, CT_TRUTH, tmp_path / "seg.dcm")
    assert len(np.unique(expected)) > 2 and set(np.unique(expected)) != set(range(len(np.unique(expected))))
    checked = _check(_upload(tmp_path, tmp_path / "seg.dcm"), "seg.dcm", CT, allow_seg=True, dicom_dir=CT)
    assert checked.source_format == "dicom-seg"
    np.testing.assert_array_equal(checked.array, expected)
    assert checked.values == tuple(int(v) for v in np.unique(expected) if v)
    whole = (tmp_path / "seg.dcm").read_bytes()
    message = _refused(_upload(tmp_path, whole[:int(len(whole) * 0.8)]), "seg.dcm", CT, "seg.dcm",
                       allow_seg=True, dicom_dir=CT)
    assert "truncated" in message or "damaged" in message or "cannot" in message, message


def test_a_dicom_seg_of_another_series_is_refused(tmp_path):
    _phantom_seg(MR, MR_TRUTH, tmp_path / "seg.dcm")
    _refused(_upload(tmp_path, tmp_path / "seg.dcm"), "seg.dcm", CT, "not this image's series",
             allow_seg=True, dicom_dir=CT)


def test_a_dicom_seg_needs_the_series_and_dicom_content(tmp_path, image):
    source = _write(tmp_path / "l.nii.gz", _labels())
    _refused(_upload(tmp_path, source), "seg.dcm", CT, "not a DICOM file", allow_seg=True, dicom_dir=CT)
    _refused(_upload(tmp_path, source), "seg.dcm", image, "DICOM series", allow_seg=True, dicom_dir=None)


# ------------------------------------------------------------------------------------------ storing


def test_write_label_atomically_stores_nifti_on_the_image_grid(tmp_path, image):
    checked = _check(_upload(tmp_path, _write(tmp_path / "l.nrrd", _labels())), "label.nrrd", image)
    out = write_label_atomically(checked, tmp_path / "labels" / "final" / "image.nii.gz")
    back = sitk.ReadImage(str(out))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), _labels())
    assert np.allclose(back.GetOrigin(), GRID.origin) and np.allclose(back.GetDirection(), GRID.direction)
    with pytest.raises(ValueError, match="nii.gz"):
        write_label_atomically(checked, tmp_path / "image.nrrd")


def test_a_failed_write_leaves_the_previous_label_intact(tmp_path, image, monkeypatch):
    import medclipsam.volume.itk_io as itk_io

    folder = tmp_path / "labels" / "final"
    checked = _check(_upload(tmp_path, _write(tmp_path / "l.nii.gz", _labels())), "label.nii.gz", image)
    dest = write_label_atomically(checked, folder / "image.nii.gz")
    before = dest.read_bytes()

    def half_write(tmp, *args, **kwargs):
        Path(tmp).write_bytes(b"half a label")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(itk_io, "write_nifti", half_write)
    other = CheckedLabel(np.zeros(GRID.shape, np.uint8), GRID, (), "nifti")
    with pytest.raises(InputError, match="No space left"):
        write_label_atomically(other, dest)
    assert dest.read_bytes() == before
    assert [p.name for p in folder.iterdir()] == ["image.nii.gz"]
