"""Stored values and decoders (issue 23, items 2 and 5): pixel values honour BitsStored / HighBit
with sign extension, files sharing a SOPInstanceUID are one image only when their pixel data are,
and the retired progressive JPEG transfer syntaxes (1.2.840.10008.1.2.4.53 / .55) decode — or,
where no decoder handles a syntax, the message says so instead of advising an install that is done.
Every file is made here with pydicom (and Pillow for the JPEG streams)."""

from __future__ import annotations

import io
import shutil
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate

from medclipsam.dicom import DicomInputError, read_series
from medclipsam.dicom.pixels import decoder_available, missing_decoder_fix, stored_values
from medclipsam.phantoms.synthetic_ct import write_synthetic_ct

SIZE = 16


def edit(path: Path, change) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)
        change(ds)
        ds.save_as(path)


# ------------------------------------------------------------------------------ BitsStored / HighBit


def test_stored_values_masks_and_sign_extends():
    words = np.array([0x0FFF, 0xF800, 0x1800, 0x07FF, 0x0000], dtype=np.uint16)
    # 12-bit signed in 16-bit words, junk above bit 11
    assert stored_values(words.view(np.int16), 16, 12, 11, 1).tolist() == [-1, -2048, -2048, 2047, 0]
    # unsigned: the junk is dropped
    assert stored_values(words, 16, 12, 11, 0).tolist() == [4095, 2048, 2048, 2047, 0]
    # HighBit not at BitsStored - 1: the stored bits are shifted down first
    shifted = np.array([0x0FFF << 2, 0x0800 << 2 | 0x3], dtype=np.uint16)
    assert stored_values(shifted, 16, 12, 13, 1).tolist() == [-1, -2048]
    # words already full and float data are untouched (the same object comes back)
    full = np.array([-5, 7], dtype=np.int16)
    assert stored_values(full, 16, 16, 15, 1) is full
    floats = np.array([1.5], dtype=np.float32)
    assert stored_values(floats, 32, 32, 31, 1) is floats


def test_twelve_bit_signed_series_reads_minus_2048_to_2047(tmp_path):
    series = write_synthetic_ct(tmp_path / "s", slices=2, size=SIZE)
    wanted = np.round(np.linspace(-2048, 2047, SIZE * SIZE)).astype(np.int32).reshape(SIZE, SIZE)

    def signed12(ds):
        ds.PixelRepresentation = 1
        ds.BitsStored, ds.HighBit = 12, 11
        ds.RescaleSlope, ds.RescaleIntercept = 1, 0
        words = (wanted.astype(np.int16).view(np.uint16) & 0x0FFF) | 0xA000     # junk above bit 11
        ds.PixelData = words.astype(np.uint16).tobytes()

    for f in series.files:
        edit(f, signed12)
    with read_series(series.folder) as s:
        got = s.read_slice(0)
    assert got.min() == -2048 and got.max() == 2047
    assert np.array_equal(got, wanted.astype(np.float32))


# ------------------------------------------------------------------------------ duplicate SOPInstanceUIDs


def test_byte_identical_copies_are_read_once(tmp_path):
    series = write_synthetic_ct(tmp_path / "s", slices=3, size=SIZE)
    shutil.copy(series.files[1], series.folder / "copy_of_1.dcm")
    with read_series(series.folder) as s:
        assert len(s) == 3
        assert any("copies of one image, same pixel data" in n for n in s.notes)


def test_same_image_in_another_transfer_syntax_is_a_copy(tmp_path):
    series = write_synthetic_ct(tmp_path / "s", slices=3, size=SIZE)
    twin = series.folder / "twin.dcm"
    shutil.copy(series.files[1], twin)

    def rle(ds):
        ds.compress(pydicom.uid.RLELossless)

    edit(twin, rle)
    assert pydicom.dcmread(twin).file_meta.TransferSyntaxUID == pydicom.uid.RLELossless
    with read_series(series.folder) as s:
        assert len(s) == 3
        assert any("copies of one image" in n for n in s.notes)


@pytest.mark.parametrize("what", ["pixels", "representation"])
def test_different_images_under_one_uid_are_refused(tmp_path, what):
    series = write_synthetic_ct(tmp_path / "s", slices=3, size=SIZE)

    def high_value(ds):                        # a stored value with bit 11 set: reads differently if signed
        px = ds.pixel_array.copy()
        px[0, 0] = 3000
        ds.PixelData = px.tobytes()

    edit(series.files[1], high_value)
    impostor = series.folder / "impostor.dcm"
    shutil.copy(series.files[1], impostor)

    def change(ds):
        if what == "pixels":
            px = ds.pixel_array.copy()
            px[0, 0] += 1
            ds.PixelData = px.tobytes()
        else:                                  # same bytes, read as signed: other values
            ds.PixelRepresentation = 1

    edit(impostor, change)
    with pytest.raises(DicomInputError) as err:
        read_series(series.folder)
    msg = str(err.value)
    assert "share the SOPInstanceUID" in msg and "different images" in msg
    assert "impostor.dcm" in msg and series.files[1].name in msg
    assert "remove the others" in msg


# ------------------------------------------------------------------------------ retired JPEG syntaxes


def _progressive_jpeg(series_files, uid: str) -> np.ndarray:
    """Store each slice as a progressive 8-bit JPEG (Pillow) under transfer syntax ``uid``; returns
    the pixels of the first slice as Pillow's own decoder reads its stream."""
    from PIL import Image

    first = None
    for f in series_files:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(f)
        px8 = (ds.pixel_array.astype(np.int64) * 255 // max(1, int(ds.pixel_array.max()))).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(px8).save(buf, "JPEG", progressive=True, quality=90)
        stream = buf.getvalue()
        assert b"\xff\xc2" in stream          # SOF2: a progressive DCT frame
        if first is None:
            first = np.asarray(Image.open(io.BytesIO(stream)))
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.RescaleSlope, ds.RescaleIntercept = 1, 0
        ds.PixelData = encapsulate([stream])
        ds["PixelData"].is_undefined_length = True
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = uid
        ds.is_implicit_VR, ds.is_little_endian = False, True
        ds.save_as(f, write_like_original=False)
    return first


@pytest.mark.parametrize("uid", ["1.2.840.10008.1.2.4.53", "1.2.840.10008.1.2.4.55"])
def test_retired_progressive_jpeg_decodes(tmp_path, uid):
    pytest.importorskip("libjpeg", reason="pylibjpeg-libjpeg (a dependency of medclipsam) is not installed")
    series = write_synthetic_ct(tmp_path / "s", slices=2, size=SIZE)
    expected = _progressive_jpeg(series.files, uid)
    assert decoder_available(uid)
    with read_series(series.folder) as s:
        got = s.read_slice(0)
    assert got.shape == (SIZE, SIZE)
    # two IJG-derived decoders of one stream: equal up to IDCT rounding
    assert np.abs(got - expected.astype(np.float32)).max() <= 2


def test_syntax_no_decoder_handles_is_named_without_install_advice(tmp_path):
    uid = "1.2.840.10008.1.2.4.54"      # retired hierarchical JPEG: no installed decoder claims it
    assert not decoder_available(uid)
    fix = missing_decoder_fix(uid)
    assert "no installed pixel data decoder handles" in fix and "pip install" not in fix
    series = write_synthetic_ct(tmp_path / "s", slices=2, size=SIZE)
    _progressive_jpeg(series.files, uid)
    with pytest.raises(DicomInputError) as err:
        read_series(series.folder)
    msg = str(err.value)
    assert uid in msg and "no installed pixel data decoder handles" in msg and "gdcmconv --raw" in msg
    assert "pip install" not in msg


def test_missing_plugin_still_gets_install_advice(monkeypatch):
    from medclipsam.dicom import pixels

    monkeypatch.setattr(pixels, "_libjpeg_available", lambda: False)
    monkeypatch.setitem(pixels.EXTRA_DECODERS, "1.2.840.10008.1.2.4.55",
                        pixels.FrameDecoder("pylibjpeg-libjpeg", lambda: False, pixels._libjpeg_frame,
                                            "pip install pylibjpeg-libjpeg"))
    assert not pixels.decoder_available("1.2.840.10008.1.2.4.55")
    assert "pip install pylibjpeg-libjpeg" in pixels.missing_decoder_fix("1.2.840.10008.1.2.4.55")
    # a syntax a pylibjpeg plugin would decode keeps the install command
    assert "pip install pylibjpeg" in pixels.missing_decoder_fix("1.2.840.10008.1.2.4.80")
