"""Siemens mosaics (issue 23, item 1): an MR image holding NumberOfImagesInMosaic slices as tiles is
unpacked into those slices with the geometry nibabel gives them, never segmented as one picture of
tiles; a mosaic that cannot be unpacked is refused with conversion advice; a DICOM SEG is refused up
front (it cannot reference tiles). The mosaics are made here with pydicom, with the count in the
private MR header only (no CSA header) or in a CSA2 header this test writes."""

from __future__ import annotations

import math
import struct
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medclipsam.dicom import DicomInputError, read_series, scan_series
from medclipsam.dicom.mosaic import parse_csa
from medclipsam.dicom.seg import SegNotWritableError, check_seg_sources
from medclipsam.volume.outputs import slice_frames

MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
TILE, COUNT = 8, 5                      # 5 slices of 8×8: a 3×3 grid, a 24×24 mosaic
ROW_DIR = np.array([1.0, 0.0, 0.0])
COL_DIR = np.array([0.0, math.cos(0.3), -math.sin(0.3)])     # oblique: tilted about x
SPACING = (1.5, 2.0)                    # PixelSpacing: between rows, between columns
GAP = 3.0                               # SpacingBetweenSlices
CORNER0 = np.array([-10.0, -20.0, 30.0])


CSA_VR = {"NumberOfImagesInMosaic": "US", "SliceNormalVector": "FD", "AcquisitionMatrixText": "SH"}


def csa2(fields: dict[str, list[str]]) -> bytes:
    """A Siemens CSA2 header holding ``fields`` (the layout mosaic.parse_csa documents)."""
    out = [b"SV10", b"\x04\x03\x02\x01", struct.pack("<II", len(fields), 77)]
    for name, items in fields.items():
        out.append(name.encode().ljust(64, b"\x00"))
        vr = CSA_VR.get(name, "ST").encode().ljust(4, b"\x00")
        out.append(struct.pack("<i4sii i", len(items) or 1, vr, 6, len(items), 77))
        for item in items:
            data = item.encode() + b"\x00"
            out.append(struct.pack("<4i", len(data), len(data), 77, len(data)))
            out.append(data.ljust((len(data) + 3) // 4 * 4, b"\x00"))
    return b"".join(out)


def tiles() -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.integers(0, 4000, size=(COUNT, TILE, TILE)).astype(np.uint16)


def write_mosaic(path: Path, *, csa_normal: np.ndarray | None = None, private_count: bool = True,
                 csa_count: bool = False, drop: tuple[str, ...] = ()) -> Path:
    grid = math.ceil(math.sqrt(COUNT))
    size = grid * TILE
    image = np.zeros((size, size), np.uint16)
    for k, t in enumerate(tiles()):
        image[(k // grid) * TILE:(k // grid + 1) * TILE, (k % grid) * TILE:(k % grid + 1) * TILE] = t
    # Siemens' ImagePositionPatient: the corner of a mosaic-sized image centred on the first slice
    ipp = CORNER0 - ROW_DIR * SPACING[1] * (size - TILE) / 2 - COL_DIR * SPACING[0] * (size - TILE) / 2
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = MR_IMAGE
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = MR_IMAGE, ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = generate_uid(), generate_uid(), generate_uid()
    ds.Modality, ds.PatientID, ds.PatientName = "MR", "MOSAIC01", "Mosaic^Test"
    ds.SeriesDescription, ds.SeriesNumber, ds.InstanceNumber = "ep2d_bold", 3, 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND", "MOSAIC"]
    ds.ImagePositionPatient = [f"{v:.6f}" for v in ipp]
    ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*ROW_DIR, *COL_DIR)]
    ds.PixelSpacing = [f"{SPACING[0]:g}", f"{SPACING[1]:g}"]
    ds.SliceThickness, ds.SpacingBetweenSlices = "2.5", f"{GAP:g}"
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = image.tobytes()
    if private_count:
        ds.private_block(0x0019, "SIEMENS MR HEADER", create=True).add_new(0x0A, "US", COUNT)
    fields: dict[str, list[str]] = {}
    if csa_count:
        fields["NumberOfImagesInMosaic"] = [str(COUNT)]
        fields["AcquisitionMatrixText"] = [f"{TILE}*{TILE}"]
    if csa_normal is not None:
        fields["SliceNormalVector"] = [f"{v:.8f}" for v in csa_normal]
    if fields:
        ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True).add_new(0x10, "OB", csa2(fields))
    for keyword in drop:
        delattr(ds, keyword)
    ds.is_little_endian, ds.is_implicit_VR = True, False
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, write_like_original=False)
    return path


def normal() -> np.ndarray:
    return np.cross(ROW_DIR, COL_DIR)


def test_csa_parser_reads_what_the_writer_wrote():
    fields = parse_csa(csa2({"NumberOfImagesInMosaic": ["35"], "SliceNormalVector": ["0", "0.5", "-0.25"]}))
    assert fields == {"NumberOfImagesInMosaic": ["35"], "SliceNormalVector": ["0", "0.5", "-0.25"]}
    assert parse_csa(b"\x00" * 16) == {}           # CSA1 or garbage: nothing


def test_mosaic_without_csa_unpacked_with_standard_normal(tmp_path):
    write_mosaic(tmp_path / "m" / "mosaic.dcm")
    assert scan_series(tmp_path / "m")[0].num_images == COUNT
    with read_series(tmp_path / "m") as s:
        assert s.geometry.shape == (COUNT, TILE, TILE)
        assert s.geometry.spacing == pytest.approx((SPACING[1], SPACING[0], GAP))
        for k in range(COUNT):
            assert np.allclose(s.geometry.slice_position(k),
                               CORNER0 + k * GAP * normal(), atol=1e-4)
            assert np.array_equal(s.read_slice(k), tiles()[k].astype(np.float32))
        note = next(n for n in s.notes if "mosaic" in n)
        assert f"{COUNT} tiles of {TILE}×{TILE}" in note and "cross product" in note and "NIfTI" in note


def test_csa_normal_decides_the_slice_direction(tmp_path):
    write_mosaic(tmp_path / "m" / "mosaic.dcm", csa_normal=-normal(), private_count=False, csa_count=True)
    with read_series(tmp_path / "m") as s:
        assert s.geometry.shape == (COUNT, TILE, TILE)
        # tile k lies k gaps *against* the row×column normal: sorted along that normal, tile 4 comes first
        for k in range(COUNT):
            assert np.allclose(s.geometry.slice_position(k), CORNER0 - (COUNT - 1 - k) * GAP * normal(), atol=1e-4)
            assert np.array_equal(s.read_slice(k), tiles()[COUNT - 1 - k].astype(np.float32))
        assert any("SliceNormalVector" in n for n in s.notes)


def test_unpacking_agrees_with_nibabel(tmp_path):
    nibabel = pytest.importorskip("nibabel", reason="nibabel (a test dependency) is not installed")
    from nibabel.nicom import dicomwrappers

    path = write_mosaic(tmp_path / "m" / "mosaic.dcm", csa_normal=normal(), csa_count=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wrapper = dicomwrappers.wrapper_from_data(pydicom.dcmread(path))
        theirs = wrapper.get_data()                 # rows × columns × slices
        position = np.asarray(wrapper.image_position, dtype=np.float64)
    assert type(wrapper).__name__ == "MosaicWrapper", nibabel.__version__
    with read_series(path.parent) as s:
        ours = np.stack([s.read_slice(k) for k in range(len(s))])
        assert np.allclose(s.geometry.slice_position(0), position, atol=1e-4)
        assert np.allclose(np.asarray(s.geometry.slice_position(1)) - s.geometry.slice_position(0),
                           GAP * np.asarray(wrapper.slice_normal), atol=1e-4)
    assert np.array_equal(ours, np.transpose(theirs, (2, 0, 1)).astype(np.float32))


@pytest.mark.parametrize("case, words", [
    ("no_count", "NumberOfImagesInMosaic"),
    ("no_position", "ImagePositionPatient"),
])
def test_mosaic_that_cannot_be_unpacked_is_refused(tmp_path, case, words):
    kwargs = {"private_count": False} if case == "no_count" else {"drop": ("ImagePositionPatient",)}
    write_mosaic(tmp_path / "m" / "mosaic.dcm", **kwargs)
    with pytest.raises(DicomInputError) as err:
        read_series(tmp_path / "m")
    msg = str(err.value)
    assert "Siemens mosaic" in msg and words in msg and "dcm2niix" in msg


def test_seg_of_a_mosaic_is_refused_up_front(tmp_path):
    write_mosaic(tmp_path / "m" / "mosaic.dcm")
    with read_series(tmp_path / "m") as s:
        datasets, frames = slice_frames(s)
        with pytest.raises(SegNotWritableError) as err:
            check_seg_sources(datasets, frames)
    assert "mosaic" in str(err.value) and ".nii.gz" in str(err.value)


def test_segment_series_on_a_mosaic(tmp_path, capsys):
    """End to end: NIfTI of the unpacked slices, in their geometry; a SEG refused before any model loads."""
    nib = pytest.importorskip("nibabel", reason="nibabel (a test dependency) is not installed")
    from medclipsam.cli import main

    tiny = ["--clip", "random:tiny", "--sam", "tiny:random", "--set", "m2ib.layer=2", "--set", "m2ib.steps=3",
            "--set", "m2ib.samples=2", "--no-gate", "--quiet"]
    write_mosaic(tmp_path / "m" / "mosaic.dcm")
    out = tmp_path / "label.nii.gz"
    assert main(["segment-series", str(tmp_path / "m"), "--prompt", "brain", "--out", str(out), *tiny]) == 0
    captured = capsys.readouterr()
    assert "unpacked 1 Siemens mosaic image(s)" in captured.out + captured.err
    img = nib.load(str(out))
    assert img.shape == (TILE, TILE, COUNT)
    # the NIfTI voxel (0, 0, k) is tile k's first pixel: LPS corner + k gaps along the normal, in RAS
    corner = img.affine @ np.array([0, 0, COUNT - 1, 1.0])
    assert np.allclose(corner[:3] * [-1, -1, 1], CORNER0 + (COUNT - 1) * GAP * normal(), atol=1e-3)

    seg = tmp_path / "label.dcm"
    assert main(["segment-series", str(tmp_path / "m"), "--prompt", "brain", "--out", str(seg), *tiny]) == 2
    err = capsys.readouterr().err
    assert "Siemens mosaics" in err and ".nii.gz" in err and not seg.exists()
