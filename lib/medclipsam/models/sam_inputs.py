"""How an RGB slice becomes a SAM model's input tensor: one registered recipe per model family.

Every recipe resizes the image so that its longer side is the model's input size (the shape
segment-anything's ``ResizeLongestSide`` gives, so box scaling and mask cropping stay the
predictor's own), normalises intensities, and pads bottom/right with zeros to a square.

* ``sam`` — segment-anything's recipe: bilinear resize (PIL), ImageNet mean / std
  (``Sam.preprocess``).
* ``medsam`` — MedSAM / LiteMedSAM's recipe: area-averaging resize, then the resized image's
  own min–max to [0, 1] (``pixel_mean`` 0 and ``pixel_std`` 255 in the architecture describe
  this scale; the normalised tensor goes to the encoder as is).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..registry import Registry


@dataclass(frozen=True)
class SamInput:
    tensor: torch.Tensor              # 1 × 3 × S × S, what the image encoder takes
    original_size: tuple[int, int]    # H, W of the RGB image
    input_size: tuple[int, int]       # h, w of the resized image inside the S × S square


SamInputFn = Callable[[np.ndarray, torch.nn.Module], SamInput]
SAM_INPUTS: Registry[SamInputFn] = Registry("SAM input recipe")


def check_rgb(rgb: np.ndarray) -> None:
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        got = f"{rgb.dtype} {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise InputError(f"SAM takes an RGB uint8 image H×W×3, got {got}; render the slice to RGB first "
                         "(a grey slice: stack it three times)")
    if rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise InputError(f"SAM got an empty image {rgb.shape}")


def resized_shape(h: int, w: int, size: int) -> tuple[int, int]:
    """segment-anything's ResizeLongestSide shape: longer side ``size``, rounded half up."""
    scale = size / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@SAM_INPUTS.register("sam")
def sam_input(rgb: np.ndarray, model: torch.nn.Module) -> SamInput:
    from segment_anything.utils.transforms import ResizeLongestSide

    check_rgb(rgb)
    resized = ResizeLongestSide(model.image_encoder.img_size).apply_image(rgb)
    t = torch.as_tensor(resized, device=_device(model)).permute(2, 0, 1).contiguous()[None]
    return SamInput(model.preprocess(t), tuple(rgb.shape[:2]), tuple(t.shape[-2:]))


@SAM_INPUTS.register("medsam")
def medsam_input(rgb: np.ndarray, model: torch.nn.Module) -> SamInput:
    check_rgb(rgb)
    size = model.image_encoder.img_size
    h, w = rgb.shape[:2]
    nh, nw = resized_shape(h, w, size)
    x = torch.as_tensor(rgb, device=_device(model)).permute(2, 0, 1)[None].float()
    if (nh, nw) != (h, w):
        # area averaging when shrinking (what the recipe asks for); bilinear when enlarging a small image
        mode = "area" if nh <= h and nw <= w else "bilinear"
        x = F.interpolate(x, size=(nh, nw), mode=mode, **({} if mode == "area" else {"align_corners": False}))
        x = x.round().clamp(0, 255)                  # the recipe resizes the 8-bit image to 8 bits
    lo, hi = x.amin(), x.amax()
    x = (x - lo) / torch.clamp(hi - lo, min=1e-8)
    x = F.pad(x, (0, size - nw, 0, size - nh))
    return SamInput(x, (h, w), (nh, nw))


def sam_input_recipe(name: str) -> SamInputFn:
    return SAM_INPUTS.get(name)
