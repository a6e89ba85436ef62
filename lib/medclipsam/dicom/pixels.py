"""Pixel data of DICOM files: decoder checks, truncation checks and decoding.

Nothing here keeps pixel data around: :func:`inspect_pixel_element` looks only at the element
header (and, for encapsulated data, at the 8-byte item headers of its fragments), and
:func:`decode_file` reads one file and returns its frames.

Decoding goes through pydicom's pixel data handlers (``pydicom.config.pixel_data_handlers``):
numpy (uncompressed), RLE (built in), pylibjpeg (+ libjpeg / openjpeg plugins), Pillow, GDCM.
:func:`check_decoders` asks them, before anything is decoded, whether some handler can decode
each transfer syntax of a series, so that a missing decoder is reported once, up front, with
the command that installs one.

Two things pydicom 2.4 leaves undone are done here:

* **retired JPEG processes** (:data:`RETIRED_JPEG`: spectral selection ``1.2.840.10008.1.2.4.53``
  and full progression ``…4.55``, i.e. progressive JPEG) are claimed by no pydicom handler,
  although libjpeg (the pylibjpeg-libjpeg plugin) decodes such streams: each frame's JPEG stream
  is handed to it directly (:data:`EXTRA_DECODERS`);
* **stored values** are masked to BitsStored at HighBit and, for PixelRepresentation 1,
  sign-extended (:func:`stored_values`): pydicom's numpy handler returns the whole BitsAllocated
  word, so bits above HighBit (old overlays, garbage) would leak into the image.
"""

from __future__ import annotations

import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np

from ..errors import InputError

INSTALL_DECODERS = "pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg"
CONVERT_ADVICE = ("convert the series to an uncompressed transfer syntax first, e.g. with dcmtk's "
                  "`dcmdjpeg IN OUT` or `gdcmconv --raw IN OUT`")

UNCOMPRESSED = {
    "1.2.840.10008.1.2",        # Implicit VR Little Endian
    "1.2.840.10008.1.2.1",      # Explicit VR Little Endian
    "1.2.840.10008.1.2.2",      # Explicit VR Big Endian
    "1.2.840.10008.1.2.1.99",   # Deflated Explicit VR Little Endian
}
DEFLATED = "1.2.840.10008.1.2.1.99"

_PIXEL_DATA_LE = b"\xe0\x7f\x10\x00"
_PIXEL_DATA_BE = b"\x7f\xe0\x00\x10"
_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN", b"SQ", b"UT", b"UC", b"UR"}


class DicomInputError(InputError):
    """A DICOM input (folder, zip, file list, series) cannot be read: the message names the file
    or series, the problem and the fix."""


def transfer_syntax_label(uid: str) -> str:
    """``'JPEG 2000 Image Compression (Lossless Only) (1.2.840.10008.1.2.4.90)'``."""
    from pydicom.uid import UID

    name = UID(uid).name if uid else ""
    name = RETIRED_JPEG.get(uid, name)
    return f"{name} ({uid})" if name and name != uid else f"unknown transfer syntax ({uid or 'none given'})"


# --------------------------------------------------------------------------------------------- decoders

def _libjpeg_frame(frame: bytes) -> np.ndarray:
    from libjpeg import decode

    # colour_transform=0: YCbCr stays as stored, like pydicom's JPEG handlers (decode_file converts it)
    return decode(frame, colour_transform=0)


def _libjpeg_available() -> bool:
    try:
        import libjpeg  # noqa: F401
    except Exception:
        return False
    return True


@dataclass(frozen=True)
class FrameDecoder:
    """A decoder for transfer syntaxes no pydicom handler claims: one encapsulated frame → array."""

    name: str
    available: Callable[[], bool]
    decode_frame: Callable[[bytes], np.ndarray]
    install: str


# retired JPEG processes whose streams libjpeg decodes (progressive DCT, 8 and 12 bit); no pydicom 2.4
# handler claims them
RETIRED_JPEG = {
    "1.2.840.10008.1.2.4.53": "JPEG Spectral Selection, Non-Hierarchical (Process 6 & 8) (retired)",
    "1.2.840.10008.1.2.4.55": "JPEG Full Progression, Non-Hierarchical (Process 10 & 12) (retired)",
}
_LIBJPEG = FrameDecoder("pylibjpeg-libjpeg", _libjpeg_available, _libjpeg_frame, "pip install pylibjpeg-libjpeg")
EXTRA_DECODERS: dict[str, FrameDecoder] = {uid: _LIBJPEG for uid in RETIRED_JPEG}

def _handler_can_decode(handler, uid) -> bool:
    try:
        if not handler.is_available() or not handler.supports_transfer_syntax(uid):
            return False
    except Exception:   # a broken third-party handler counts as unavailable
        return False
    name = str(getattr(handler, "HANDLER_NAME", ""))
    if name == "pylibjpeg":
        # supports_transfer_syntax() says yes for every syntax pylibjpeg *could* decode;
        # the plugins actually installed are in _DECODERS
        decoders = getattr(handler, "_DECODERS", None)
        if decoders is not None and uid not in decoders:
            return False
    elif name == "Pillow":
        if uid in getattr(handler, "PillowJPEG2000TransferSyntaxes", ()) and not getattr(handler, "HAVE_JPEG2K", True):
            return False
        if uid in getattr(handler, "PillowJPEGTransferSyntaxes", ()) and not getattr(handler, "HAVE_JPEG", True):
            return False
    return True


def _pydicom_can_decode(uid: str) -> bool:
    import pydicom.config
    from pydicom.uid import UID

    u = UID(uid)
    return any(_handler_can_decode(h, u) for h in pydicom.config.pixel_data_handlers)


def decoder_available(uid: str) -> bool:
    """True when one of ``pydicom.config.pixel_data_handlers``, or an installed decoder of
    :data:`EXTRA_DECODERS`, can decode transfer syntax ``uid``."""
    extra = EXTRA_DECODERS.get(uid)
    if extra is not None and extra.available():
        return True
    return _pydicom_can_decode(uid)


def missing_decoder_fix(uid: str) -> str:
    """What to do when transfer syntax ``uid`` cannot be decoded here: install the decoder that would
    handle it, or — when no decoder this project knows handles it — convert the files."""
    extra = EXTRA_DECODERS.get(uid)
    if extra is not None:
        return f"install its decoder with: {extra.install} (or {CONVERT_ADVICE})"
    from pydicom.pixel_data_handlers import pylibjpeg_handler

    if uid in getattr(pylibjpeg_handler, "SUPPORTED_TRANSFER_SYNTAXES", ()):
        return f"install the decoders with: {INSTALL_DECODERS} (or {CONVERT_ADVICE})"
    return f"no installed pixel data decoder handles that transfer syntax: {CONVERT_ADVICE}"


def check_decoders(example_file_by_syntax: dict[str, tuple[str, int]]) -> None:
    """Raise unless every transfer syntax (``uid -> (example file, number of files)``) can be decoded."""
    for uid, (example, count) in example_file_by_syntax.items():
        if decoder_available(uid):
            continue
        what = "1 file" if count == 1 else f"{count} files"
        raise DicomInputError(
            f"cannot decode the pixel data of this series: it is stored as {transfer_syntax_label(uid)} "
            f"({what}, e.g. {example}) and no installed pixel data decoder supports that transfer syntax; "
            + missing_decoder_fix(uid))


# --------------------------------------------------------------------------------------------- truncation

def expected_pixel_bytes(rows: int, columns: int, samples: int, bits_allocated: int, frames: int,
                         photometric: str) -> int:
    """Bytes of uncompressed pixel data (without the even-length padding byte)."""
    if bits_allocated == 1:
        return (rows * columns * samples * frames + 7) // 8
    per_sample = max(1, bits_allocated // 8)
    if photometric == "YBR_FULL_422":     # chroma subsampled horizontally: 2 samples per pixel
        return rows * columns * 2 * per_sample * frames
    return rows * columns * samples * per_sample * frames


def inspect_pixel_element(fp: BinaryIO, file_size: int, expected_bytes: int | None) -> tuple[bool, str | None]:
    """Look at the element at the current position of ``fp`` (where pydicom stopped before pixels).

    Returns ``(has_pixel_data, problem)``; ``problem`` says why the pixel data is incomplete.
    Reads only element and item headers, never the pixel values. Byte order and explicit/implicit
    VR are taken from the bytes themselves (some files do not use the encoding their transfer
    syntax names).
    """
    start = fp.tell()
    head = fp.read(12)
    if head[:4] == _PIXEL_DATA_LE:
        order = "<"
    elif head[:4] == _PIXEL_DATA_BE:
        order = ">"
    else:
        return False, None
    if len(head) < 8:
        return True, "the file ends inside the header of its pixel data"
    if head[4:6] in _LONG_VRS:               # explicit VR: tag, VR, 2 reserved bytes, 4-byte length
        if len(head) < 12:
            return True, "the file ends inside the header of its pixel data"
        length = struct.unpack(order + "I", head[8:12])[0]
        value_at = start + 12
    else:                                    # implicit VR: tag, 4-byte length
        length = struct.unpack(order + "I", head[4:8])[0]
        value_at = start + 8
    if length == 0xFFFFFFFF:
        return True, _walk_fragments(fp, value_at, file_size, order)
    available = file_size - value_at
    if available < length:
        return True, (f"its pixel data should be {length} bytes long but the file ends after {max(available, 0)} "
                      "bytes of it")
    if expected_bytes is not None and length < expected_bytes:
        return True, (f"its pixel data holds {length} bytes but its Rows, Columns, SamplesPerPixel, BitsAllocated "
                      f"and NumberOfFrames need {expected_bytes} bytes")
    return True, None


def _walk_fragments(fp: BinaryIO, value_at: int, file_size: int, order: str) -> str | None:
    """Check the items of encapsulated pixel data: every item complete, a closing delimiter."""
    fp.seek(value_at)
    items = 0
    while True:
        head = fp.read(8)
        if len(head) < 8:
            return "its compressed pixel data stops before the end-of-data marker (the file is cut short)"
        group, element, length = struct.unpack(order + "HHI", head)
        if (group, element) == (0xFFFE, 0xE0DD):
            break
        if (group, element) != (0xFFFE, 0xE000):
            return f"its compressed pixel data is malformed (found tag ({group:04X},{element:04X}) instead of an item)"
        if length == 0xFFFFFFFF or fp.tell() + length > file_size:
            return "its compressed pixel data runs past the end of the file (the file is cut short)"
        fp.seek(length, 1)
        items += 1
    if items < 2:   # the basic offset table plus at least one fragment
        return "its compressed pixel data holds no image fragment"
    return None


# --------------------------------------------------------------------------------------------- decoding

def read_dataset(path: Path, stop_before_pixels: bool = False):
    """``pydicom.dcmread(force=True)`` with a Transfer Syntax UID always set (guessed from the
    encoding for files written without file meta)."""
    import pydicom
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(str(path), force=True, stop_before_pixels=stop_before_pixels)
    ds.ensure_file_meta()
    if not ds.file_meta.get("TransferSyntaxUID"):
        little = getattr(ds, "is_little_endian", True)
        implicit = getattr(ds, "is_implicit_VR", True)
        ds.file_meta.TransferSyntaxUID = (ImplicitVRLittleEndian if implicit else
                                          ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    return ds


def decode_file(path: Path, display: str) -> np.ndarray:
    """All frames of ``path``: frames×rows×cols (gray, stored values) or frames×rows×cols×3 (RGB,
    YBR already converted, palette colour applied). Errors become :class:`DicomInputError`."""
    try:
        ds = read_dataset(path)
    except Exception as e:
        raise DicomInputError(f"cannot read DICOM file {display}: {type(e).__name__}: {e}. "
                              "The file may have been changed or removed since the series was read") from None
    uid = str(ds.file_meta.get("TransferSyntaxUID", ""))
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            extra = EXTRA_DECODERS.get(uid)
            if extra is not None and extra.available() and not _pydicom_can_decode(uid):
                arr = _decode_frames(ds, frames, extra)
            else:
                arr = ds.pixel_array
    except Exception as e:  # pydicom raises many kinds: missing decoder, truncated or corrupt data
        fix = (missing_decoder_fix(uid) if not decoder_available(uid) else
               "the file may be damaged; re-export or re-transfer it")
        raise DicomInputError(f"cannot decode the pixel data of {display} ({transfer_syntax_label(uid)}): "
                              f"{type(e).__name__}: {e}; {fix}") from None
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if samples == 1 and photometric != "PALETTE COLOR":
        arr = stored_values(arr, int(ds.get("BitsAllocated", 0) or 0), int(ds.get("BitsStored", 0) or 0),
                            ds.get("HighBit", None), int(ds.get("PixelRepresentation", 0) or 0))
    if photometric == "PALETTE COLOR":
        from pydicom.pixel_data_handlers.util import apply_color_lut

        arr = apply_color_lut(arr, ds)
        samples = 3
    elif photometric in ("YBR_FULL", "YBR_FULL_422") and samples == 3:
        # pydicom 2.4 returns YCbCr as stored (also for JPEG baseline); YBR_ICT/YBR_RCT come back as
        # RGB from the JPEG 2000 decoders already
        from pydicom.pixel_data_handlers.util import convert_color_space

        arr = convert_color_space(arr, photometric, "RGB")
    per_frame_ndim = 3 if samples == 3 else 2
    if arr.ndim == per_frame_ndim:
        arr = arr[None]
    if arr.ndim != per_frame_ndim + 1 or arr.shape[0] != frames:
        raise DicomInputError(f"the pixel data of {display} decoded to an array of shape {arr.shape}, which does "
                              f"not match its header ({frames} frame(s), {samples} sample(s) per pixel); "
                              "the file is damaged or inconsistent — re-export it")
    return arr


def _decode_frames(ds, frames: int, decoder: FrameDecoder) -> np.ndarray:
    """The frames of encapsulated pixel data, each decoded by ``decoder`` (frames×rows×cols[×samples])."""
    from pydicom.encaps import generate_pixel_data_frame

    rows, cols = int(ds.Rows), int(ds.Columns)
    out = []
    for data in generate_pixel_data_frame(ds.PixelData, frames):
        arr = np.asarray(decoder.decode_frame(data))
        if arr.shape[:2] != (rows, cols):
            raise ValueError(f"{decoder.name} decoded a frame of {arr.shape[0]}×{arr.shape[1]} pixels, the header "
                             f"says {rows}×{cols}")
        out.append(arr)
    if len(out) != frames:
        raise ValueError(f"found {len(out)} compressed frame(s), NumberOfFrames says {frames}")
    if int(ds.get("PixelRepresentation", 0) or 0) == 1:   # decoders return the bits unsigned
        out = [a.astype(np.int16 if a.dtype.itemsize <= 2 else np.int32, copy=False) if a.dtype.kind == "u" else a
               for a in out]
    return np.stack(out) if frames > 1 else out[0]


def stored_values(arr: np.ndarray, bits_allocated: int, bits_stored: int, high_bit, signed: int) -> np.ndarray:
    """Grey-scale stored values as the header defines them: BitsStored bits ending at HighBit, the
    bits around them dropped, sign-extended when PixelRepresentation is 1.

    A 12-bit signed image (BitsAllocated 16, BitsStored 12, HighBit 11) whose words carry other bits
    above bit 11 reads as −2048..2047, not as the raw 16-bit words. Arrays whose stored values
    already fill their words (BitsStored = BitsAllocated), float data and 1-bit data are returned
    unchanged.
    """
    if arr.dtype.kind not in "iu" or bits_allocated <= 1:
        return arr
    word = arr.dtype.itemsize * 8
    stored = bits_stored if 0 < bits_stored <= word else word
    try:
        high = int(high_bit) if high_bit is not None and high_bit != "" else stored - 1
    except (TypeError, ValueError):
        high = stored - 1
    if not stored - 1 <= high < word:
        high = stored - 1
    shift = high + 1 - stored
    if stored == word and shift == 0:
        return arr
    unsigned = arr.view(np.dtype(f"u{arr.dtype.itemsize}"))
    values = (unsigned >> shift) & ((1 << stored) - 1) if shift else unsigned & ((1 << stored) - 1)
    if signed:
        out_type = np.dtype(f"i{arr.dtype.itemsize}")
        values = values.astype(out_type)
        sign = 1 << (stored - 1)
        return (values ^ sign) - sign if stored < word else values
    return values.astype(arr.dtype, copy=False)


def to_rgb8(frame: np.ndarray, bits_stored: int) -> np.ndarray:
    """An RGB frame as uint8 (16-bit colour is scaled down from its stored bit depth)."""
    if frame.dtype == np.uint8:
        return np.array(frame, dtype=np.uint8, order="C", copy=True)   # never a view of a cached array
    top = float(2 ** max(1, min(int(bits_stored or 16), 32)) - 1)
    f = np.clip(frame.astype(np.float64), 0.0, top) / top * 255.0
    return np.ascontiguousarray((f + 0.5).astype(np.uint8))


def to_physical(frame: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    """Stored values → physical units (``value × slope + intercept``) as float32."""
    if slope == 1.0 and intercept == 0.0:
        return np.array(frame, dtype=np.float32, order="C", copy=True)   # never a view of a cached array
    return np.ascontiguousarray(frame.astype(np.float64) * slope + intercept, dtype=np.float32)
