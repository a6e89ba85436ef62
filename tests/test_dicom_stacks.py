"""Enhanced multi-frame files holding several stacks at the same positions (issue 23, item 5): one
file cannot be split by passing "the files of one echo", so the reader lists the stacks (diffusion
b-values and directions, magnitude / phase, echoes, time points), refuses to merge them, and reads
the one ``stack=N`` (``--stack N``) names. The files are made here with pydicom."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medclipsam.dicom import DicomInputError, read_series, scan_series
from medclipsam.errors import InputError
from medclipsam.volume.inputs import open_volume

ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"
SIZE, POSITIONS = 8, 4


def item(**values) -> Dataset:
    ds = Dataset()
    for k, v in values.items():
        setattr(ds, k, v)
    return ds


def stack_fields(kind: str, stack: int) -> dict:
    """Per-frame functional groups that tell stack ``stack`` (0-based) apart."""
    if kind == "diffusion":
        b = [0, 1000, 1000][stack]
        direction = [(0.0, 0.0, 0.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0)][stack]
        diffusion = item(DiffusionBValue=b, DiffusionDirectionality="NONE" if b == 0 else "DIRECTIONAL")
        if b:
            diffusion.DiffusionGradientDirectionSequence = DicomSequence(
                [item(DiffusionGradientOrientation=list(direction))])
        return {"MRDiffusionSequence": DicomSequence([diffusion])}
    if kind == "magnitude_phase":
        return {"MRImageFrameTypeSequence": DicomSequence([item(
            FrameType=["ORIGINAL", "PRIMARY", "M_FFE" if stack == 0 else "P_FFE", "NONE"],
            ComplexImageComponent=["MAGNITUDE", "PHASE"][stack])])}
    if kind == "indistinct":      # nothing tells the stacks apart
        return {}
    raise ValueError(kind)


def write_enhanced(path: Path, kind: str, stacks: int) -> Path:
    """An enhanced MR file of ``stacks`` × POSITIONS frames; frame values = 100·stack + position."""
    frames, pixels = [], []
    for st in range(stacks):
        for z in range(POSITIONS):
            fg = item(PlanePositionSequence=DicomSequence([item(ImagePositionPatient=[0.0, 0.0, 5.0 * z])]),
                      FrameContentSequence=DicomSequence([item(InStackPositionNumber=z + 1,
                                                               **({"StackID": "1"} if kind != "indistinct" else {}))]))
            for k, v in stack_fields(kind, st).items():
                setattr(fg, k, v)
            frames.append(fg)
            pixels.append(np.full((SIZE, SIZE), 100 * st + z, np.uint16))
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ENHANCED_MR
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = ENHANCED_MR, ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = generate_uid(), generate_uid(), generate_uid()
    ds.Modality, ds.PatientID, ds.SeriesDescription, ds.SeriesNumber = "MR", "STACKS01", f"{kind} test", 7
    ds.ImageType = ["ORIGINAL", "PRIMARY", "DIFFUSION" if kind == "diffusion" else "OTHER", "NONE"]
    ds.SharedFunctionalGroupsSequence = DicomSequence([item(
        PixelMeasuresSequence=DicomSequence([item(PixelSpacing=[1.0, 1.0], SliceThickness=5.0)]),
        PlaneOrientationSequence=DicomSequence([item(ImageOrientationPatient=[1.0, 0, 0, 0, 1.0, 0])]))])
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(frames)
    ds.NumberOfFrames = len(frames)
    ds.Rows = ds.Columns = SIZE
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = np.stack(pixels).tobytes()
    ds.is_little_endian, ds.is_implicit_VR = True, False
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(path, write_like_original=False)
    return path


def test_diffusion_stacks_are_listed_and_refused_without_a_choice(tmp_path):
    path = write_enhanced(tmp_path / "dwi" / "dwi.dcm", "diffusion", 3)
    summary = scan_series(path.parent)[0]
    assert summary.num_images == 3 * POSITIONS
    assert summary.stacks == (f"b 0, gradient -: {POSITIONS} frames",
                              f"b 1000, gradient (1, 0, 0): {POSITIONS} frames",
                              f"b 1000, gradient (0, 1, 0): {POSITIONS} frames")
    with pytest.raises(DicomInputError) as err:
        read_series(path.parent)
    msg = str(err.value)
    assert "3 stacks of frames at the same positions" in msg and "--stack N" in msg
    assert "stack 2: b 1000, gradient (1, 0, 0)" in msg


@pytest.mark.parametrize("kind, stacks, pick", [("diffusion", 3, 2), ("magnitude_phase", 2, 2),
                                                 ("magnitude_phase", 2, 1)])
def test_one_stack_is_read(tmp_path, kind, stacks, pick):
    path = write_enhanced(tmp_path / kind / "f.dcm", kind, stacks)
    with read_series(path, stack=pick) as s:
        assert s.geometry.shape == (POSITIONS, SIZE, SIZE)
        assert s.geometry.spacing[2] == pytest.approx(5.0)
        values = [float(s.read_slice(k)[0, 0]) for k in range(len(s))]
        assert values == [100.0 * (pick - 1) + z for z in range(POSITIONS)]
        assert any(f"read stack {pick} of {stacks}" in n for n in s.notes)
    if kind == "magnitude_phase":
        assert scan_series(path)[0].stacks[pick - 1].startswith("component " + ["MAGNITUDE", "PHASE"][pick - 1])


def test_stack_numbers_are_checked(tmp_path):
    path = write_enhanced(tmp_path / "dwi" / "dwi.dcm", "diffusion", 3)
    with pytest.raises(DicomInputError, match="(?s)holds 3 stacks.*from 1 to 3"):
        read_series(path, stack=4)
    for bad in (0, -1, True, "2"):
        with pytest.raises(DicomInputError, match="stack must be a stack number from 1"):
            read_series(path, stack=bad)
    single = write_enhanced(tmp_path / "one" / "one.dcm", "diffusion", 1)
    assert scan_series(single)[0].stacks == ()
    with read_series(single, stack=1) as s:
        assert len(s) == POSITIONS
    with pytest.raises(DicomInputError, match="single stack"):
        read_series(single, stack=2)


def test_stacks_the_headers_cannot_tell_apart_get_conversion_advice(tmp_path):
    path = write_enhanced(tmp_path / "x" / "x.dcm", "indistinct", 2)
    with pytest.raises(DicomInputError) as err:
        read_series(path)
    msg = str(err.value)
    assert "several images at one position" in msg and "dcm2niix" in msg and "one multi-frame file" in msg


def test_list_series_prints_the_stacks(tmp_path, capsys):
    from medclipsam.cli.series import list_series

    write_enhanced(tmp_path / "dwi" / "dwi.dcm", "diffusion", 3)
    assert list_series(tmp_path / "dwi") == 0
    out = capsys.readouterr().out.splitlines()
    assert "3 stacks (read one with --stack N):" in out[0]
    assert out[1:] == [f"    stack 1: b 0, gradient -: {POSITIONS} frames",
                       f"    stack 2: b 1000, gradient (1, 0, 0): {POSITIONS} frames",
                       f"    stack 3: b 1000, gradient (0, 1, 0): {POSITIONS} frames"]


def test_stack_setting_is_refused_for_non_dicom_input(tmp_path):
    nifti = tmp_path / "v.nii.gz"
    nifti.write_bytes(b"")
    with pytest.raises(InputError, match="stack setting applies to DICOM input only"):
        open_volume(nifti, stack=1)
