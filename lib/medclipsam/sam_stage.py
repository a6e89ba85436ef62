"""The SAM stage: visual prompts → final mask.

The image embedding is computed once per image (:meth:`SamSegmenter.set_image`) however many
prompts follow. Boxes go to SAM in one batched call, each box with the shared point prompts in
"boxes+points" mode; points alone go in one call. One mask per prompt (or, with ``multimask``,
the best of SAM's three by predicted IoU); the masks are united, and the union keeps the K
largest connected components, K = the number of components of the coarse mask (as the
reference does). With ``box_clip`` ≥ 0 (off by default, as in the papers) each box's mask is cut to
that box grown by ``box_clip`` × its sides: a box prompt says the target lies inside it, and a
small SAM that spills into a low-contrast neighbour (liver around a hepatic lesion) is held to it.
With ``coarse_clip`` ≥ 0 (off by default) the mask is also cut to the coarse mask grown by
``coarse_clip`` × the image's longer side (rounded to whole pixels): SAM refines the outline, but
not beyond where the saliency map put the target.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from scipy import ndimage

from .errors import ConfigError, InputError
from .models.sam_inputs import sam_input_recipe
from .postprocess import keep_largest_components
from .prompts import VisualPrompts


@dataclass
class SamStageConfig:
    multimask: bool = False          # ask SAM for 3 masks per prompt and keep the best-scoring one
    keep_components: bool = True     # keep the K largest components of the union (K = coarse-mask components)
    connectivity: int = 8
    box_clip: float = -1.0           # ≥ 0: cut each box's mask to its box grown by this fraction of its sides (off: -1)
    coarse_clip: float = -1.0        # ≥ 0: cut the mask to the coarse mask grown by this fraction of the image's
                                     # longer side (off: -1)

    def __post_init__(self) -> None:
        for name, limit in (("box_clip", "of the box's sides"), ("coarse_clip", "of the image's longer side")):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not (value == -1 or 0 <= value <= 1):
                raise ConfigError(f"sam.{name} must be -1 (off) or a fraction {limit} in [0, 1], got {value!r}")

    def coarse_margin_px(self, shape: tuple[int, int]) -> int | None:
        """``coarse_clip`` in pixels for an image of ``shape`` (None: off)."""
        return None if self.coarse_clip < 0 else int(round(self.coarse_clip * max(shape)))


@dataclass
class SamEmbedding:
    """SAM's image embedding of one image, kept to decode prompts later (see :meth:`SamSegmenter.encode`)."""

    features: torch.Tensor           # 1 × C × h × w
    original_size: tuple[int, int]
    input_size: tuple[int, int]


@dataclass
class SamOutput:
    mask: np.ndarray                 # bool H×W
    scores: list[float]              # SAM's predicted IoU of each mask used
    num_masks: int


class SamSegmenter:
    """Wraps ``segment_anything.SamPredictor`` for our visual prompts."""

    def __init__(self, sam) -> None:
        from segment_anything import SamPredictor

        self.sam = sam
        self.predictor = SamPredictor(sam.model)
        self._input = sam_input_recipe(getattr(sam, "preprocess", "sam"))
        self._shape: tuple[int, int] | None = None

    def set_image(self, rgb: np.ndarray) -> None:
        """Compute the image embedding (full-resolution RGB uint8 H×W×3; resized by the model's input recipe)."""
        self.set_embedding(self.encode([rgb])[0])

    @torch.no_grad()
    def encode(self, images: Sequence[np.ndarray]) -> list[SamEmbedding]:
        """Image embeddings of several RGB uint8 images in one batched encoder call (same as
        :meth:`set_image` image by image; batching pays on a GPU). Each image becomes the encoder's
        input through the model's recipe (``SamModel.preprocess``: :mod:`.models.sam_inputs`)."""
        inputs = [self._input(rgb, self.predictor.model) for rgb in images]
        if not inputs:
            return []
        features = self.predictor.model.image_encoder(torch.cat([x.tensor for x in inputs]))
        return [SamEmbedding(features[i:i + 1], x.original_size, x.input_size) for i, x in enumerate(inputs)]

    def set_embedding(self, embedding: SamEmbedding) -> None:
        """Use a precomputed embedding for the next :meth:`segment` calls."""
        p = self.predictor
        p.reset_image()
        p.features = embedding.features
        p.original_size = embedding.original_size
        p.input_size = embedding.input_size
        p.is_image_set = True
        self._shape = embedding.original_size

    @torch.no_grad()
    def segment(self, prompts: VisualPrompts, cfg: SamStageConfig | None = None,
                coarse_mask: np.ndarray | None = None) -> SamOutput:
        """Decode ``prompts`` on the current image. ``coarse_mask`` (H×W, what the prompts came from) is
        needed only with ``cfg.coarse_clip`` ≥ 0."""
        cfg = cfg or SamStageConfig()
        if self._shape is None:
            raise RuntimeError("call set_image() before segment()")
        h, w = self._shape
        margin = cfg.coarse_margin_px((h, w))
        if margin is not None:
            if coarse_mask is None:
                raise ConfigError("sam.coarse_clip is on but no coarse mask was given to SamSegmenter.segment(); "
                                  "pass coarse_mask=, or set sam.coarse_clip=-1")
            if np.shape(coarse_mask) != (h, w):
                raise InputError(f"the coarse mask is {np.shape(coarse_mask)} but the image is {(h, w)}")
        if prompts.empty:
            return SamOutput(np.zeros((h, w), bool), [], 0)
        p = self.predictor
        dev = p.device
        coords = labels = None
        if len(prompts.points):
            coords = p.transform.apply_coords_torch(torch.as_tensor(prompts.points, dtype=torch.float32, device=dev),
                                                    (h, w))
            labels = torch.as_tensor(prompts.point_labels, dtype=torch.int64, device=dev)
        if len(prompts.boxes):
            boxes = p.transform.apply_boxes_torch(torch.as_tensor(prompts.boxes, dtype=torch.float32, device=dev),
                                                  (h, w))
            n = boxes.shape[0]
            if coords is not None:
                coords = coords.unsqueeze(0).expand(n, -1, -1)
                labels = labels.unsqueeze(0).expand(n, -1)
            masks, iou, _ = p.predict_torch(coords, labels, boxes, multimask_output=cfg.multimask)
        else:
            masks, iou, _ = p.predict_torch(coords.unsqueeze(0), labels.unsqueeze(0), None,
                                            multimask_output=cfg.multimask)
        # masks: prompts × k × H × W (bool), iou: prompts × k
        best = iou.argmax(dim=1)
        rows = torch.arange(masks.shape[0], device=masks.device)
        chosen = masks[rows, best]
        if cfg.box_clip >= 0 and len(prompts.boxes):
            chosen = chosen & _box_windows(prompts.boxes, cfg.box_clip, (h, w), chosen.device)
        scores = iou[rows, best].float().cpu().tolist()
        union = chosen.any(dim=0).cpu().numpy()
        if margin is not None:
            union &= _near_mask(np.asarray(coarse_mask, bool), margin)
        if cfg.keep_components and prompts.num_components > 0 and union.any():
            union = keep_largest_components(union, prompts.num_components, connectivity=cfg.connectivity)
        return SamOutput(union.astype(bool), scores, int(chosen.shape[0]))


def _near_mask(mask: np.ndarray, margin: int) -> np.ndarray:
    """Pixels within ``margin`` pixels (Euclidean) of ``mask``: the mask itself for margin 0."""
    if margin <= 0 or not mask.any():
        return mask.copy()
    return ndimage.distance_transform_edt(~mask) <= margin


def _box_windows(boxes: np.ndarray, margin: float, shape: tuple[int, int], device: torch.device) -> torch.Tensor:
    """One boolean window per box ``[x0, y0, x1, y1]`` (first and last pixel, inclusive: the
    :class:`~medclipsam.prompts.VisualPrompts` convention), grown on every side by ``margin`` ×
    ``x1 - x0`` / ``y1 - y0``, as prompts × H × W."""
    h, w = shape
    b = torch.as_tensor(np.asarray(boxes, dtype=np.float32), device=device)
    grow = torch.stack([b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], dim=1) * margin
    x0, x1 = b[:, 0] - grow[:, 0], b[:, 2] + grow[:, 0]
    y0, y1 = b[:, 1] - grow[:, 1], b[:, 3] + grow[:, 1]
    ys = torch.arange(h, device=device, dtype=torch.float32)[None, :, None]
    xs = torch.arange(w, device=device, dtype=torch.float32)[None, None, :]
    return ((ys >= y0[:, None, None]) & (ys <= y1[:, None, None]) &
            (xs >= x0[:, None, None]) & (xs <= x1[:, None, None]))
