"""Reading 2D images and turning them into what the models take.

* :func:`read_image` reads PNG, JPEG, TIFF, BMP and single-frame DICOM files.
* :func:`to_rgb8` (from :mod:`medclipsam.rgb8`) turns 8-bit gray, 16-bit (or float) gray and
  RGB(A) arrays into an 8-bit RGB rendering: 8-bit data as stored, wider data stretched between its
  0.5th and 99.5th percentiles.
* A DICOM file is read as the one-slice series it is (:func:`medclipsam.dicom.read_series`, whose
  decoder is :func:`medclipsam.dicom.pixels.decode_file`) and rendered with the series window
  policy (:func:`medclipsam.volume.render.choose_window`: CT by a preset chosen from the prompts,
  MR by percentiles, other modalities as stored or by their stored window; MONOCHROME1 inverted),
  so a 2D DICOM and a one-slice series give the same pixels.
* :func:`clip_input` pads the rendering to a square (centred, black) before resizing it to the CLIP
  input size, and :class:`SquarePad` maps a saliency map back onto the original pixels. The
  reference centre-crops and then stretches the map over the full image (misaligned on
  non-square images, docs/algorithms.md §Pad-to-square); padding and un-padding keeps every pixel aligned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from .errors import InputError
from .rgb8 import to_rgb8

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


def read_image(path: str | Path, prompts: Sequence[str] = (), window: str | None = None) -> np.ndarray:
    """Read an image file as uint8 H×W×3 RGB (see module docstring for the rendering).

    A DICOM file is rendered as the one-slice series it is: the window the volume engine would
    choose for ``prompts`` (:func:`medclipsam.volume.render.choose_window`), or the preset named by
    ``window``."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"image not found: {p}")
    if p.suffix.lower() in DICOM_SUFFIXES or _is_dicom(p):
        return _read_dicom(p, prompts, window)
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
        raise InputError(f"cannot read image {p}: {e}. "
                         "Supported: PNG, JPEG, TIFF, BMP and single-frame DICOM") from None
    if arr.ndim == 3 and arr.shape[2] == 2:  # LA
        arr = arr[..., 0]
    return to_rgb8(arr)


def _read_dicom(p: Path, prompts: Sequence[str], window: str | None) -> np.ndarray:
    """A single-frame DICOM file through the series reader (decoders, stored bits, YBR, palette) and
    the series window policy."""
    from pydicom.errors import InvalidDicomError

    from .dicom import read_series
    from .dicom.pixels import read_dataset
    from .volume.render import choose_window, render_slice

    try:
        frames = int(read_dataset(p, stop_before_pixels=True).get("NumberOfFrames", 1) or 1)
    except (InvalidDicomError, OSError, EOFError, ValueError, TypeError, AttributeError):
        frames = 1      # not readable as DICOM: read_series below says why
    if frames > 1:
        raise InputError(f"DICOM file {p.name} has {frames} frames; 'segment' takes single-frame 2D images. "
                         "Export the frame you need as a single-frame file, or segment the whole file as a "
                         "volume with 'medclipsam segment-series'")
    series = read_series(p)
    try:
        if len(series) != 1:     # a mosaic: several slices in one frame
            raise InputError(f"DICOM file {p.name} holds {len(series)} slices; 'segment' takes single-frame 2D "
                             "images. Segment the whole file as a volume with 'medclipsam segment-series'")
        chosen = choose_window(series, [str(t) for t in prompts], window)
        return render_slice(series.read_slice(0), chosen)
    finally:
        series.close()


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


def clip_input(rgb: np.ndarray, size: int, mean: tuple[float, ...],
               std: tuple[float, ...]) -> tuple[torch.Tensor, SquarePad]:
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
