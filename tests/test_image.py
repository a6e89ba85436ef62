"""Tests for medclipsam.image: rendering to 8-bit RGB, reading files, DICOM, pad-to-square alignment.

Everything is synthetic (written under pytest's tmp_path) except pydicom's bundled test files and,
when present, the shared real-DICOM corpus (read in place, never copied).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image

from medclipsam.errors import InputError, MedClipSamError
from medclipsam.image import SquarePad, clip_input, is_supported_image, read_image, to_rgb8

ROOT = Path(__file__).resolve().parents[1]
CORPUS_CANDIDATES = (ROOT.parent / "shared" / "corpora" / "dicom", ROOT / "shared" / "corpora" / "dicom")

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------


def stretch(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Independent reference rendering: linear lo..hi -> 0..255, clipped, rounded half up."""
    v = np.asarray(values, dtype=np.float64)
    return (np.clip((v - lo) / (hi - lo), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def percentile_render(values: np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    return stretch(v, np.percentile(v, 0.5), np.percentile(v, 99.5))


def assert_gray_rgb(out: np.ndarray, gray: np.ndarray) -> None:
    assert out.dtype == np.uint8
    assert out.shape == gray.shape + (3,)
    for ch in range(3):
        np.testing.assert_array_equal(out[..., ch], gray)


def pydicom_test_file(*names: str) -> Path:
    """The first of ``names`` that pydicom ships locally (no download)."""
    from pydicom.data import get_testdata_file

    folder = Path(pydicom.__file__).parent / "data" / "test_files"
    for name in names:
        if (folder / name).is_file():
            return folder / name
        try:  # may try external data sources; never required
            p = get_testdata_file(name, download=False)
        except Exception:
            p = None
        if p and Path(p).is_file():
            return Path(p)
    pytest.skip(f"none of the pydicom test files {names} is available locally")


def dicom_values(ds: pydicom.Dataset) -> np.ndarray:
    """Stored values × RescaleSlope + RescaleIntercept, computed apart from the reader."""
    return ds.pixel_array.astype(np.float64) * float(ds.get("RescaleSlope", 1) or 1) + float(
        ds.get("RescaleIntercept", 0) or 0)


def one_slice_series_rendering(path: Path, prompts: list[str]) -> np.ndarray:
    """What segment-series renders for this file as a one-slice series."""
    from medclipsam.dicom import read_series
    from medclipsam.volume.render import choose_window, render_slice

    series = read_series(path)
    try:
        return render_slice(series.read_slice(0), choose_window(series, prompts))
    finally:
        series.close()


def blob(size: int, cy: float, cx: float, sigma: float = 2.0) -> np.ndarray:
    y, x = np.mgrid[:size, :size].astype(np.float64)
    return np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * sigma**2)).astype(np.float32)


# ---------------------------------------------------------------------------------------
# to_rgb8
# ---------------------------------------------------------------------------------------


def test_to_rgb8_uint8_gray_is_replicated_unchanged():
    gray = np.random.default_rng(0).integers(0, 256, (37, 91), dtype=np.uint8)
    gray[0, 0], gray[0, 1] = 3, 250  # not a full-range image: must not be stretched
    out = to_rgb8(gray)
    assert_gray_rgb(out, gray)
    assert out.flags["C_CONTIGUOUS"]


def test_to_rgb8_single_channel_3d_is_gray():
    gray = np.arange(60, dtype=np.uint8).reshape(6, 10, 1)
    assert_gray_rgb(to_rgb8(gray), gray[..., 0])


def test_to_rgb8_uint16_ramp_uses_percentile_stretch():
    ramp = np.linspace(0, 60000, 100 * 120).astype(np.uint16).reshape(100, 120)
    out = to_rgb8(ramp)
    assert out.dtype == np.uint8 and out.shape == (100, 120, 3)
    flat = out[..., 0].ravel()
    assert flat[0] == 0
    assert flat[-1] == 255
    assert np.all(np.diff(flat.astype(int)) >= 0), "rendering of a ramp must be monotonic"
    assert np.all(out[..., 0] == out[..., 1]) and np.all(out[..., 0] == out[..., 2])
    # The bottom/top 0.5 % saturate; the rest is the linear stretch between the percentiles.
    lo, hi = np.percentile(ramp.astype(float), 0.5), np.percentile(ramp.astype(float), 99.5)
    np.testing.assert_array_equal(out[..., 0], stretch(ramp, lo, hi))
    assert np.all(flat[: int(0.004 * flat.size)] == 0)
    assert np.all(flat[-int(0.004 * flat.size):] == 255)
    assert 120 <= out[50, 60, 0] <= 135  # middle of the ramp is mid grey


def test_to_rgb8_uint16_ignores_a_single_hot_pixel():
    # 1000..2000 with one pixel at 65535: a min/max stretch would squash the image into ~0..4.
    img = np.linspace(1000, 2000, 200 * 200).astype(np.uint16).reshape(200, 200)
    img[0, 0] = 65535
    out = to_rgb8(img)[..., 0]
    assert out[0, 0] == 255
    assert out[199, 199] == 255
    assert 100 <= out[100, 100] <= 155


def test_to_rgb8_float_input():
    img = np.linspace(-1.0, 1.0, 50 * 40, dtype=np.float32).reshape(50, 40)
    out = to_rgb8(img)
    assert out.dtype == np.uint8 and out.shape == (50, 40, 3)
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255
    assert np.all(np.diff(out[..., 0].ravel().astype(int)) >= 0)
    np.testing.assert_array_equal(out[..., 0], percentile_render(img))


def test_to_rgb8_rgba_drops_alpha():
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 256, (20, 30, 4), dtype=np.uint8)
    rgba[..., 3] = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    out = to_rgb8(rgba)
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, rgba[..., :3])


def test_to_rgb8_rgb_uint8_unchanged():
    rgb = np.random.default_rng(2).integers(0, 256, (11, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(to_rgb8(rgb), rgb)


def test_to_rgb8_explicit_window_clips():
    values = np.array([[-1000.0, -160.0, 40.0, 240.0, 3000.0]])
    out = to_rgb8(values, window=(-160.0, 240.0))[..., 0]
    np.testing.assert_array_equal(out, [[0, 0, 128, 255, 255]])


def test_to_rgb8_window_applies_to_uint8_too():
    gray = np.array([[0, 50, 100, 150, 200, 250]], dtype=np.uint8)
    out = to_rgb8(gray, window=(100, 200))[..., 0]
    np.testing.assert_array_equal(out, [[0, 0, 0, 128, 255, 255]])


@pytest.mark.parametrize("dtype", [np.uint16, np.float32, np.int32])
def test_to_rgb8_constant_image_is_black(dtype):
    out = to_rgb8(np.full((9, 13), 1234, dtype=dtype))
    assert out.shape == (9, 13, 3) and out.dtype == np.uint8
    assert not out.any()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_to_rgb8_non_finite_raises(bad):
    img = np.linspace(0, 1, 100, dtype=np.float32).reshape(10, 10)
    img[3, 4] = bad
    with pytest.raises(InputError, match="NaN or infinite"):
        to_rgb8(img)


@pytest.mark.parametrize("shape", [(2, 8, 8, 3), (8, 8, 2), (8,), (8, 8, 5)])
def test_to_rgb8_bad_shapes_raise(shape):
    with pytest.raises(InputError, match="shape"):
        to_rgb8(np.zeros(shape, dtype=np.uint8))


def test_to_rgb8_empty_raises():
    with pytest.raises(InputError):
        to_rgb8(np.zeros((0, 5), dtype=np.uint16))


# ---------------------------------------------------------------------------------------
# read_image on ordinary image files
# ---------------------------------------------------------------------------------------


def test_read_8bit_png_non_square(tmp_path):
    gray = np.random.default_rng(3).integers(0, 256, (37, 91), dtype=np.uint8)
    p = tmp_path / "gray.png"
    Image.fromarray(gray).save(p)
    assert_gray_rgb(read_image(p), gray)
    assert_gray_rgb(read_image(str(p)), gray)  # str paths work too


def test_read_16bit_png(tmp_path):
    arr = (np.arange(37 * 91).reshape(37, 91) * 17).astype(np.uint16)
    im = Image.fromarray(arr)
    assert im.mode == "I;16"
    p = tmp_path / "deep.png"
    im.save(p)
    out = read_image(p)
    assert out.shape == (37, 91, 3) and out.dtype == np.uint8
    assert_gray_rgb(out, percentile_render(arr))
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255


def test_read_rgb_jpeg(tmp_path):
    y, x = np.mgrid[:48, :80]
    rgb = np.stack([x * 3, y * 5, np.full_like(x, 128)], axis=-1).astype(np.uint8)
    p = tmp_path / "colour.jpg"
    Image.fromarray(rgb).save(p, quality=95)
    out = read_image(p)
    assert out.shape == (48, 80, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - rgb.astype(int)).mean() < 4  # lossy but the same picture
    # channels keep their order (R varies along x, G along y)
    assert out[24, 75, 0] > out[24, 5, 0] + 150
    assert out[45, 40, 1] > out[2, 40, 1] + 150


def test_read_tiff_8bit_and_16bit(tmp_path):
    gray8 = np.random.default_rng(4).integers(0, 256, (60, 33), dtype=np.uint8)
    Image.fromarray(gray8).save(tmp_path / "g8.tif")
    assert_gray_rgb(read_image(tmp_path / "g8.tif"), gray8)

    gray16 = np.random.default_rng(5).integers(100, 4000, (60, 33)).astype(np.uint16)
    Image.fromarray(gray16).save(tmp_path / "g16.tiff")
    out = read_image(tmp_path / "g16.tiff")
    assert out.shape == (60, 33, 3)
    assert_gray_rgb(out, percentile_render(gray16))


def test_read_palette_png(tmp_path):
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [250, 250, 10]], dtype=np.uint8)
    idx = (np.arange(30)[:, None] // 8 + np.arange(50)[None, :] // 20) % 4
    rgb = colours[idx]
    im = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    assert im.mode == "P"
    p = tmp_path / "pal.png"
    im.save(p)
    out = read_image(p)
    assert out.shape == (30, 50, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, rgb)


def test_read_bilevel_and_la_png(tmp_path):
    bits = (np.arange(24 * 40).reshape(24, 40) % 3 == 0)
    Image.fromarray(bits).convert("1").save(tmp_path / "bits.png")
    assert_gray_rgb(read_image(tmp_path / "bits.png"), np.where(bits, 255, 0).astype(np.uint8))

    gray = np.random.default_rng(6).integers(0, 256, (24, 40), dtype=np.uint8)
    la = np.stack([gray, np.full_like(gray, 77)], axis=-1)
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    assert_gray_rgb(read_image(tmp_path / "la.png"), gray)


def test_read_corrupt_png_names_the_file(tmp_path):
    p = tmp_path / "broken_scan.png"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 3)
    with pytest.raises(InputError) as exc:
        read_image(p)
    assert "broken_scan.png" in str(exc.value)


def test_read_truncated_png_names_the_file(tmp_path):
    src = tmp_path / "whole.png"
    Image.fromarray(np.random.default_rng(7).integers(0, 256, (64, 64), dtype=np.uint8)).save(src)
    data = src.read_bytes()
    p = tmp_path / "half_written.png"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as exc:
        read_image(p)
    assert "half_written.png" in str(exc.value)


def test_read_missing_file_names_the_file(tmp_path):
    p = tmp_path / "not_there_123.png"
    with pytest.raises(InputError) as exc:
        read_image(p)
    assert "not_there_123.png" in str(exc.value)


def test_input_errors_are_medclipsam_errors(tmp_path):
    with pytest.raises(MedClipSamError):
        read_image(tmp_path / "missing.png")


def test_is_supported_image(tmp_path):
    for name in ("a.png", "b.JPG", "c.jpeg", "d.tif", "e.TIFF", "f.bmp", "g.dcm", "h.IMA"):
        assert is_supported_image(tmp_path / name), name
    for name in ("notes.txt", "summary.json", "volume.nii.gz"):
        assert not is_supported_image(tmp_path / name), name
    # extension-less files: DICOM recognised by its preamble, anything else not
    plain = tmp_path / "README"
    plain.write_text("hello" * 100)
    assert not is_supported_image(plain)
    dcm = tmp_path / "I10"
    shutil.copyfile(pydicom_test_file("CT_small.dcm"), dcm)
    assert is_supported_image(dcm)


# ---------------------------------------------------------------------------------------
# DICOM
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ct_small_path() -> Path:
    return pydicom_test_file("CT_small.dcm")


# A 2D DICOM is rendered as the one-slice series it is (the volume engine's window policy,
# medclipsam.volume.render.choose_window): CT by a preset chosen from the prompts, MR by the image's
# percentiles, other modalities by their stored window; MONOCHROME1 inverted.


def test_dicom_ct_small_uses_the_ct_preset_of_the_prompts(ct_small_path):
    ds = pydicom.dcmread(str(ct_small_path))
    assert float(ds.RescaleIntercept) != 0  # the rescale must matter for this test
    assert ds.Modality == "CT"
    values = dicom_values(ds)
    out = read_image(ct_small_path)
    assert out.dtype == np.uint8
    assert out.shape == (int(ds.Rows), int(ds.Columns), 3)
    assert np.all(out[..., 0] == out[..., 1]) and np.all(out[..., 0] == out[..., 2])
    np.testing.assert_array_equal(out[..., 0], stretch(values, 40 - 200, 40 + 200))      # ct-soft-tissue
    lung = read_image(ct_small_path, prompts=["left lung"])
    np.testing.assert_array_equal(lung[..., 0], stretch(values, -600 - 750, -600 + 750))  # ct-lung
    bone = read_image(ct_small_path, window="ct-bone")
    np.testing.assert_array_equal(bone[..., 0], stretch(values, 400 - 900, 400 + 900))


def test_dicom_is_rendered_as_a_one_slice_series(ct_small_path):
    mr = pydicom_test_file("MR_small.dcm")
    for path, prompts in ((ct_small_path, ["liver"]), (ct_small_path, ["brain"]), (mr, ["tumour"])):
        np.testing.assert_array_equal(read_image(path, prompts=prompts), one_slice_series_rendering(path, prompts))


def test_dicom_mr_uses_percentiles_not_its_stored_window():
    path = pydicom_test_file("MR_small.dcm")
    ds = pydicom.dcmread(str(path))
    assert ds.Modality == "MR" and "WindowCenter" in ds
    values = dicom_values(ds)
    lo, hi = np.percentile(values[::4, ::4].astype(np.float32), [0.5, 99.5])   # the series' pixel sample
    out = read_image(path)[..., 0]
    assert np.abs(out.astype(int) - stretch(values, lo, hi).astype(int)).max() <= 1


def test_dicom_without_extension_is_read(tmp_path, ct_small_path):
    p = tmp_path / "IM0001"
    shutil.copyfile(ct_small_path, p)
    np.testing.assert_array_equal(read_image(p), read_image(ct_small_path))


def test_dicom_window_is_used_where_no_preset_applies(tmp_path, ct_small_path):
    ds = pydicom.dcmread(str(ct_small_path))
    ds.Modality = "CR"       # CT and MR have presets; an X-ray's stored window is its rendering
    values = dicom_values(ds)
    wc = float(np.median(values))
    ww = float(np.percentile(values, 75) - np.percentile(values, 25))
    ds.WindowCenter = f"{wc:.1f}"
    ds.WindowWidth = f"{ww:.1f}"
    p = tmp_path / "windowed.dcm"
    ds.save_as(str(p))
    out = read_image(p)[..., 0]
    ref = stretch(values, float(f"{wc:.1f}") - float(f"{ww:.1f}") / 2, float(f"{wc:.1f}") + float(f"{ww:.1f}") / 2)
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1
    # a narrow window saturates a good part of the image on both ends
    assert (out == 0).mean() > 0.1 and (out == 255).mean() > 0.1


def test_dicom_monochrome1_is_inverted(tmp_path, ct_small_path):
    ds = pydicom.dcmread(str(ct_small_path))
    ds.PhotometricInterpretation = "MONOCHROME1"
    p = tmp_path / "inverted.dcm"
    ds.save_as(str(p))
    normal = read_image(ct_small_path)
    inverted = read_image(p)
    assert inverted.shape == normal.shape and inverted.dtype == np.uint8
    np.testing.assert_array_equal(inverted, 255 - normal)


def test_dicom_stored_values_are_masked_to_bits_stored(tmp_path, ct_small_path):
    ds = pydicom.dcmread(str(ct_small_path))
    ds.Modality = "CR"
    stored = ds.pixel_array.astype(np.uint16)
    assert stored.max() < 4096
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, 0
    ds.PixelData = (stored | 0xF000).tobytes()     # garbage above the stored bits (an old overlay)
    p = tmp_path / "overlay_bits.dcm"
    ds.save_as(str(p))
    clean = tmp_path / "clean.dcm"
    ds.PixelData = stored.tobytes()
    ds.save_as(str(clean))
    np.testing.assert_array_equal(read_image(p), read_image(clean))


def test_dicom_multiframe_is_refused():
    path = pydicom_test_file("emri_small.dcm", "rtdose.dcm", "SC_rgb_rle_2frame.dcm")
    ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    assert int(ds.NumberOfFrames) > 1
    with pytest.raises(InputError) as exc:
        read_image(path)
    assert "single-frame" in str(exc.value) and "segment-series" in str(exc.value)
    assert path.name in str(exc.value)


def test_dicom_without_pixel_data(tmp_path, ct_small_path):
    ds = pydicom.dcmread(str(ct_small_path))
    del ds.PixelData
    p = tmp_path / "no_pixels.dcm"
    ds.save_as(str(p))
    with pytest.raises(InputError) as exc:
        read_image(p)
    msg = str(exc.value)
    assert "pixel data" in msg.lower()
    assert "no_pixels.dcm" in msg


def test_dicom_corrupt_file_is_input_error(tmp_path, ct_small_path):
    data = ct_small_path.read_bytes()
    p = tmp_path / "cut.dcm"
    p.write_bytes(data[: len(data) // 2])  # header intact, pixel data cut
    with pytest.raises(InputError) as exc:
        read_image(p)
    assert "cut.dcm" in str(exc.value)


def _corpus_dir() -> Path | None:
    for c in CORPUS_CANDIDATES:
        if c.is_dir() and (c / "MANIFEST.md").is_file():
            return c
    return None


# single-frame image cases of the corpus (folder, file)
CORPUS_SINGLE_FRAME = [
    ("xray_dx_monochrome1", "dx_image.dcm"),
    ("ct_localizer_philips_surview", "I10.dcm"),
    ("us_rgb_single_frame", "US1_UNCR.dcm"),
]


@pytest.mark.parametrize("case, name", CORPUS_SINGLE_FRAME)
def test_real_dicom_corpus_single_frame(case, name):
    corpus = _corpus_dir()
    if corpus is None:
        pytest.skip("shared DICOM corpus not present (../shared/corpora/dicom)")
    manifest = (corpus / "MANIFEST.md").read_text(encoding="utf-8")
    path = corpus / case / name
    if f"`{case}/`" not in manifest or not path.is_file():
        pytest.skip(f"{case}/{name} is not in this corpus")
    ds = pydicom.dcmread(str(path))  # read in place
    assert int(ds.get("NumberOfFrames", 1) or 1) == 1
    out = read_image(path)
    assert out.dtype == np.uint8
    assert out.shape == (int(ds.Rows), int(ds.Columns), 3)
    assert out.std() > 1  # a picture, not a blank
    if ds.get("SamplesPerPixel", 1) == 1:
        np.testing.assert_array_equal(out, one_slice_series_rendering(path, []))
    else:
        assert ds.PhotometricInterpretation == "RGB"
        np.testing.assert_array_equal(out, ds.pixel_array)


# ---------------------------------------------------------------------------------------
# pad to square and back
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("h, w, top, left", [(60, 150, 45, 0), (150, 60, 0, 45), (61, 150, 44, 0),
                                             (150, 151, 0, 0), (80, 80, 0, 0)])
def test_square_pad_is_centred(h, w, top, left):
    pad = SquarePad.for_shape(h, w)
    assert pad.side == max(h, w)
    assert (pad.top, pad.left) == (top, left)
    bottom = pad.side - h - pad.top
    right = pad.side - w - pad.left
    assert bottom - pad.top in (0, 1) and right - pad.left in (0, 1)


@pytest.mark.parametrize("h, w", [(60, 150), (150, 60), (37, 91), (91, 37), (64, 64)])
def test_square_pad_roundtrip_same_size(h, w):
    x = np.random.default_rng(h * 1000 + w).integers(1, 256, (h, w, 3), dtype=np.uint8)
    pad = SquarePad.for_shape(h, w)
    padded = pad.pad(x)
    assert padded.shape == (pad.side, pad.side, 3) and padded.dtype == np.uint8
    np.testing.assert_array_equal(padded[pad.top:pad.top + h, pad.left:pad.left + w], x)
    assert int(padded.astype(int).sum()) == int(x.astype(int).sum())  # padding is black
    back = pad.to_image(padded[..., 0].astype(np.float32))
    assert back.shape == (h, w)
    np.testing.assert_array_equal(back, x[..., 0].astype(np.float32))
    back_t = pad.to_image(torch.from_numpy(padded[..., 1].astype(np.float32)))
    np.testing.assert_array_equal(back_t, x[..., 1].astype(np.float32))


def _square_coord(pad: SquarePad, r: float, c: float, size: int) -> tuple[float, float]:
    """Image pixel (r, c) -> its centre on a size×size resizing of the padded square."""
    s = size / pad.side
    return (r + pad.top + 0.5) * s - 0.5, (c + pad.left + 0.5) * s - 0.5


@pytest.mark.parametrize("h, w", [(60, 150), (150, 60), (97, 301), (301, 97)])
@pytest.mark.parametrize("frac", [(0.1, 0.1), (0.5, 0.5), (0.85, 0.2), (0.2, 0.9)])
def test_square_pad_alignment_through_224(h, w, frac):
    pad = SquarePad.for_shape(h, w)
    r, c = int(frac[0] * (h - 1)), int(frac[1] * (w - 1))
    cy, cx = _square_coord(pad, r, c, 224)
    map224 = blob(224, cy, cx, sigma=2.0)
    back = pad.to_image(map224)
    assert back.shape == (h, w)
    ar, ac = np.unravel_index(int(np.argmax(back)), back.shape)
    assert abs(ar - r) <= 2 and abs(ac - c) <= 2, f"feature at {(r, c)} came back at {(ar, ac)}"


@pytest.mark.parametrize("h, w", [(60, 150), (150, 60)])
def test_clip_input_and_to_image_align(h, w):
    """A bright spot in the image, through clip_input's pad+resize and back, lands where it was."""
    for r, c in [(10, 20), (h // 2, w // 2), (h - 12, w - 15)]:
        img = np.zeros((h, w, 3), np.uint8)
        img[r - 1:r + 2, c - 1:c + 2] = 255
        x, pad = clip_input(img, 224, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
        assert pad == SquarePad.for_shape(h, w)
        back = pad.to_image(x[0, 0])
        ar, ac = np.unravel_index(int(np.argmax(back)), back.shape)
        assert abs(ar - r) <= 2 and abs(ac - c) <= 2, f"spot at {(r, c)} came back at {(ar, ac)}"


def test_to_image_rejects_non_square_map():
    pad = SquarePad.for_shape(60, 150)
    with pytest.raises(ValueError):
        pad.to_image(np.zeros((60, 150), np.float32))


# ---------------------------------------------------------------------------------------
# clip_input
# ---------------------------------------------------------------------------------------


def test_clip_input_shape_and_normalisation():
    h, w, size = 60, 150, 224
    img = np.full((h, w, 3), (200, 100, 50), np.uint8)
    x, pad = clip_input(img, size, MEAN, STD)
    assert isinstance(x, torch.Tensor)
    assert tuple(x.shape) == (1, 3, size, size) and x.dtype == torch.float32
    assert (pad.top, pad.left, pad.height, pad.width) == (45, 0, h, w)
    mean, std = torch.tensor(MEAN), torch.tensor(STD)
    # top padding band (rows 0..~66 of 224) is pure black
    torch.testing.assert_close(x[0, :, 0, size // 2], (0 - mean) / std, rtol=0, atol=1e-5)
    torch.testing.assert_close(x[0, :, 10, 3], (0 - mean) / std, rtol=0, atol=1e-5)
    torch.testing.assert_close(x[0, :, size - 1, size - 1], (0 - mean) / std, rtol=0, atol=1e-5)
    # the centre is the image colour
    expected = (torch.tensor([200, 100, 50]) / 255.0 - mean) / std
    torch.testing.assert_close(x[0, :, size // 2, size // 2], expected, rtol=0, atol=2e-2)


def test_clip_input_portrait_pads_left_and_right():
    img = np.full((150, 60, 3), 255, np.uint8)
    x, pad = clip_input(img, 224, MEAN, STD)
    assert (pad.top, pad.left) == (0, 45)
    black = (0 - torch.tensor(MEAN)) / torch.tensor(STD)
    white = (1 - torch.tensor(MEAN)) / torch.tensor(STD)
    torch.testing.assert_close(x[0, :, 112, 2], black, rtol=0, atol=1e-5)
    torch.testing.assert_close(x[0, :, 112, 221], black, rtol=0, atol=1e-5)
    torch.testing.assert_close(x[0, :, 112, 112], white, rtol=0, atol=2e-2)


def test_clip_input_same_size_square_is_not_resized():
    img = np.random.default_rng(8).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    x, _ = clip_input(img, 32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    expected = (torch.from_numpy(img.astype(np.float32) / 255.0).permute(2, 0, 1) - 0.5) / 0.5
    torch.testing.assert_close(x[0], expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("bad", [
    np.zeros((20, 30, 3), np.float32),
    np.zeros((20, 30, 3), np.uint16),
    np.zeros((20, 30), np.uint8),
    np.zeros((20, 30, 4), np.uint8),
])
def test_clip_input_rejects_bad_input(bad):
    with pytest.raises(InputError):
        clip_input(bad, 224, MEAN, STD)
