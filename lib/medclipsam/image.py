"""Reading 2D images and turning them into what the models take.

* :func:`read_image` reads PNG, JPEG, TIFF, BMP and single-frame DICOM files.
* :func:`to_rgb8` turns 8-bit gray, 16-bit (or float) gray and RGB(A) arrays into an 8-bit RGB
  rendering: 8-bit data as stored, wider data stretched between its 0.5th and 99.5th percentiles
  (DICOM: its own window when it has one).
* :func:`clip_input` pads the rendering to a square (centred, black) before resizing it to the CLIP
  input size, and :class:`SquarePad` maps a saliency map back onto the original pixels. The
  reference centre-crops and then stretches the map over the full image (misaligned on
  non-square images, docs/algorithms.md §Pad-to-square); padding and un-padding keeps every pixel aligned.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from .errors import InputError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
DICOM_SUFFIXES = {".dcm", ".dicom", ".ima"}


def is_supported_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES | DICOM_SUFFIXES or (path.is_file() and _is_dicom(path))


def _is_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
        return len(head) == 132 and head[128:132] == b"DICM"
    except OSError:
        return False


def to_rgb8(array: np.ndarray, window: tuple[float, float] | None = None) -> np.ndarray:
    """Render a 2D gray or RGB(A) array as uint8 H×W×3."""
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim == 3 and a.shape[2] == 4:
        a = a[..., :3]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)):
        raise InputError(f"expected a 2D gray or RGB image, got an array of shape {a.shape}")
    if a.size == 0:
        raise InputError("the image is empty (0 pixels)")
    if a.dtype == np.uint8 and window is None:
        out = a
    else:
        f = a.astype(np.float64)
        if not np.isfinite(f).all():
            raise InputError("the image has NaN or infinite pixel values")
        lo, hi = window if window is not None else (np.percentile(f, 0.5), np.percentile(f, 99.5))
        if hi <= lo:
            lo, hi = float(f.min()), float(f.max())
        out = np.zeros(f.shape, np.uint8) if hi <= lo else (
            np.clip((f - lo) / (hi - lo), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if out.ndim == 2:
        out = np.repeat(out[..., None], 3, axis=2)
    return np.ascontiguousarray(out)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as uint8 H×W×3 RGB (see module docstring for the rendering)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"image not found: {p}")
    if p.suffix.lower() in DICOM_SUFFIXES or _is_dicom(p):
        return _read_dicom(p)
    try:
        with Image.open(p) as im:
            im.load()
            if im.mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            if im.mode in ("1", "L", "LA"):
                im = im.convert("L")
            elif im.mode in ("CMYK", "YCbCr", "HSV", "LAB"):
                im = im.convert("RGB")
            arr = np.array(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise InputError(f"cannot read image {p}: {e}. Supported: PNG, JPEG, TIFF, BMP and single-frame DICOM") from None
    if arr.ndim == 3 and arr.shape[2] == 2:  # LA
        arr = arr[..., 0]
    return to_rgb8(arr)


def _read_dicom(p: Path) -> np.ndarray:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(str(p), force=True)   # also files written without the 128-byte preamble
        ds.ensure_file_meta()
        if "TransferSyntaxUID" not in ds.file_meta:
            from pydicom.uid import ImplicitVRLittleEndian

            ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    except (InvalidDicomError, OSError, EOFError, ValueError, AttributeError) as e:
        raise InputError(f"cannot read DICOM file {p}: {e}") from None
    if "PixelData" not in ds:
        raise InputError(f"DICOM file {p} has no pixel data (it is a {ds.get('Modality', 'non-image')} object, "
                         "not an image)")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise InputError(f"DICOM file {p} has {frames} frames; 'segment' takes single 2D images. Export the frame "
                         "you need as a single-frame file, or segment the whole file as a volume with "
                         "'medclipsam segment-series'")
    try:
        arr = ds.pixel_array
    except Exception as e:  # pydicom raises many kinds for missing decoders / truncated data
        raise InputError(f"cannot decode the pixel data of {p} (transfer syntax "
                         f"{ds.file_meta.get('TransferSyntaxUID', 'unknown')}): {e}") from None
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric in ("YBR_FULL", "YBR_FULL_422"):
        from pydicom.pixel_data_handlers.util import convert_color_space

        arr = convert_color_space(arr, photometric, "RGB")
    if arr.ndim == 3:
        return to_rgb8(arr)
    values = arr.astype(np.float64) * float(ds.get("RescaleSlope", 1) or 1) + float(ds.get("RescaleIntercept", 0) or 0)
    window = None
    if "WindowCenter" in ds and "WindowWidth" in ds:
        wc = ds.WindowCenter
        ww = ds.WindowWidth
        wc = float(wc[0] if isinstance(wc, pydicom.multival.MultiValue) else wc)
        ww = float(ww[0] if isinstance(ww, pydicom.multival.MultiValue) else ww)
        if ww > 0:
            window = (wc - ww / 2.0, wc + ww / 2.0)
    rgb = to_rgb8(values, window=window)
    if photometric == "MONOCHROME1":
        rgb = 255 - rgb
    return rgb


@dataclass(frozen=True)
class SquarePad:
    """How an H×W image was padded (centred) to a square of side ``side``."""

    height: int
    width: int
    top: int
    left: int

    @property
    def side(self) -> int:
        return max(self.height, self.width)

    @classmethod
    def for_shape(cls, height: int, width: int) -> "SquarePad":
        side = max(height, width)
        return cls(height, width, (side - height) // 2, (side - width) // 2)

    def pad(self, rgb: np.ndarray) -> np.ndarray:
        out = np.zeros((self.side, self.side, 3), dtype=rgb.dtype)
        out[self.top:self.top + self.height, self.left:self.left + self.width] = rgb
        return out

    def to_image(self, square_map: torch.Tensor | np.ndarray) -> np.ndarray:
        """Resize a square map (any size) to side×side (bilinear) and cut out the original H×W pixels."""
        m = torch.as_tensor(np.asarray(square_map, dtype=np.float32) if isinstance(square_map, np.ndarray)
                            else square_map.detach().float().cpu())
        if m.ndim != 2 or m.shape[0] != m.shape[1]:
            raise ValueError(f"expected a square 2D map, got shape {tuple(m.shape)}")
        if m.shape[0] != self.side:
            m = F.interpolate(m[None, None], size=(self.side, self.side), mode="bilinear", align_corners=False)[0, 0]
        return m[self.top:self.top + self.height, self.left:self.left + self.width].numpy().copy()


def clip_input(rgb: np.ndarray, size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[torch.Tensor, SquarePad]:
    """Pad to square, resize to ``size`` (bicubic, as BiomedCLIP's processor), normalise: 1×3×size×size."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise InputError(f"expected an RGB uint8 image H×W×3, got {rgb.dtype} {rgb.shape}")
    pad = SquarePad.for_shape(rgb.shape[0], rgb.shape[1])
    square = Image.fromarray(pad.pad(rgb))
    if square.size != (size, size):
        square = square.resize((size, size), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(square, dtype=np.float32) / 255.0).permute(2, 0, 1)
    x = (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    return x.unsqueeze(0).contiguous(), pad
