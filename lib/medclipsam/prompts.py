"""Coarse mask -> visual prompts for SAM (boxes and/or points).

Coordinates follow SAM: a box is ``[x0, y0, x1, y1]`` and a point ``(x, y)`` in pixel units,
``x`` being the column and ``y`` the row. A box names its first and last pixel (inclusive), as
segment-anything's ``batched_mask_to_box`` does; :func:`box_of_slices` is the one place that
turns pixel extents into boxes (:func:`mask_box`, :func:`boxes_of_components`). Prompt types are looked up by name in
:data:`VISUAL_PROMPT_TYPES`; each has the signature ``(coarse_mask, cfg, rng) -> VisualPrompts``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from scipy import ndimage

from .checks import integer_at_least
from .errors import ConfigError, InputError
from .postprocess.components import count_components, label_components
from .registry import Registry


def _as_boxes(boxes: Any) -> np.ndarray:
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4)


def _as_points(points: Any) -> np.ndarray:
    return np.asarray(points, dtype=np.float32).reshape(-1, 2)


def _as_labels(labels: Any) -> np.ndarray:
    return np.asarray(labels, dtype=np.int64).reshape(-1)


@dataclass
class VisualPrompts:
    """Visual prompts derived from a coarse mask.

    ``boxes``: float32 (n, 4) ``[x0, y0, x1, y1]``, the first and last column and row the box
    covers (inclusive: a mask on columns 3..7 and rows 2..5 has the box ``[3, 2, 7, 5]``; SAM's
    ``batched_mask_to_box`` convention), made by :func:`box_of_slices` and read that way by
    ``sam.box_clip``; ``points``: float32 (m, 2) ``(x, y)``;
    ``point_labels``: int64 (m,), 1 = foreground, 0 = background; ``num_components``: number of
    connected components in the coarse mask.
    """

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), dtype=np.float32))
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.float32))
    point_labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), dtype=np.int64))
    num_components: int = 0

    def __post_init__(self) -> None:
        self.boxes = _as_boxes(self.boxes)
        self.points = _as_points(self.points)
        self.point_labels = _as_labels(self.point_labels)
        if self.points.shape[0] != self.point_labels.shape[0]:
            raise InputError(
                f"{self.points.shape[0]} points but {self.point_labels.shape[0]} point labels; "
                "expected one label (1 = foreground, 0 = background) per point"
            )
        self.num_components = int(self.num_components)

    @property
    def empty(self) -> bool:
        """True when there is nothing to prompt SAM with: no box and no foreground point."""
        return self.boxes.shape[0] == 0 and not bool(np.any(self.point_labels == 1))

    @classmethod
    def none(cls, num_components: int = 0) -> "VisualPrompts":
        """No prompts (the target was not found in the coarse mask)."""
        return cls(num_components=num_components)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (lists of numbers)."""
        return {
            "boxes": self.boxes.tolist(),
            "points": self.points.tolist(),
            "point_labels": self.point_labels.tolist(),
            "num_components": self.num_components,
        }


@dataclass
class PromptConfig:
    """Which visual prompts to derive from the coarse mask.

    ``kind``: a name in :data:`VISUAL_PROMPT_TYPES` (``boxes``, ``box``, ``points``,
    ``boxes+points``); ``num_points`` positive and ``num_negative_points`` negative points are
    sampled with ``seed``; ``connectivity`` (4 or 8) defines the connected components.
    """

    kind: str = "boxes"
    num_points: int = 10
    num_negative_points: int = 0
    seed: int = 0
    connectivity: int = 8

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or not self.kind:
            raise ConfigError(f"visual prompt type must be a non-empty name, got {self.kind!r}")
        for name, minimum in (("num_points", 1), ("num_negative_points", 0), ("seed", 0)):
            setattr(self, name, integer_at_least(name, getattr(self, name), minimum))
        if self.connectivity not in (4, 8):
            raise ConfigError(f"connectivity must be 4 or 8, got {self.connectivity!r}")


PromptType = Callable[[np.ndarray, PromptConfig, np.random.Generator], VisualPrompts]

VISUAL_PROMPT_TYPES: Registry[PromptType] = Registry("visual prompt type")


def box_of_slices(rows: slice, cols: slice) -> list[float]:
    """``[x0, y0, x1, y1]`` of a pixel extent (a bounding slice pair, stop exclusive): first and last
    column and row, inclusive (the :class:`VisualPrompts` convention)."""
    return [float(cols.start), float(rows.start), float(cols.stop - 1), float(rows.stop - 1)]


def boxes_of_components(labels: np.ndarray) -> np.ndarray:
    """One box per labelled component of ``labels`` (0 = background), in label order, float32 (n, 4)."""
    return _as_boxes([box_of_slices(rows, cols) for rows, cols in
                      (found for found in ndimage.find_objects(labels) if found is not None)])


def mask_box(mask: np.ndarray) -> list[float] | None:
    """The box around all foreground pixels of ``mask``; None when it has none."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return box_of_slices(slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))


def _sample(mask: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``n`` distinct pixels of ``mask`` drawn uniformly, as (x, y) rows."""
    flat = np.flatnonzero(mask)
    take = min(n, flat.size)
    if take == 0:
        return np.zeros((0, 2), dtype=np.float32)
    chosen = rng.choice(flat, size=take, replace=False)
    rows, cols = np.unravel_index(chosen, mask.shape)
    return np.stack([cols, rows], axis=1).astype(np.float32)


@VISUAL_PROMPT_TYPES.register("boxes")
def component_boxes(coarse_mask: np.ndarray, cfg: PromptConfig, rng: np.random.Generator) -> VisualPrompts:
    """One box per connected component, in label (raster) order."""
    labels, count = label_components(coarse_mask, cfg.connectivity)
    return VisualPrompts(boxes=boxes_of_components(labels), num_components=count)


@VISUAL_PROMPT_TYPES.register("box")
def enclosing_box(coarse_mask: np.ndarray, cfg: PromptConfig, rng: np.random.Generator) -> VisualPrompts:
    """A single box around all foreground pixels."""
    count = count_components(coarse_mask, cfg.connectivity)
    box = mask_box(coarse_mask)
    if box is None:
        return VisualPrompts.none(count)
    return VisualPrompts(boxes=[box], num_components=count)


@VISUAL_PROMPT_TYPES.register("points")
def sampled_points(coarse_mask: np.ndarray, cfg: PromptConfig, rng: np.random.Generator) -> VisualPrompts:
    """``num_points`` foreground points and ``num_negative_points`` background points.

    Drawn uniformly without replacement; fewer pixels than asked gives all of them.
    """
    positive = _sample(coarse_mask, cfg.num_points, rng)
    negative = _sample(~coarse_mask, cfg.num_negative_points, rng)
    labels = np.concatenate([np.ones(len(positive), np.int64), np.zeros(len(negative), np.int64)])
    return VisualPrompts(
        points=np.concatenate([positive, negative]),
        point_labels=labels,
        num_components=count_components(coarse_mask, cfg.connectivity),
    )


@VISUAL_PROMPT_TYPES.register("boxes+points")
def boxes_and_points(coarse_mask: np.ndarray, cfg: PromptConfig, rng: np.random.Generator) -> VisualPrompts:
    """The per-component boxes of ``boxes`` together with the points of ``points``."""
    boxes = component_boxes(coarse_mask, cfg, rng)
    points = sampled_points(coarse_mask, cfg, rng)
    return VisualPrompts(
        boxes=boxes.boxes,
        points=points.points,
        point_labels=points.point_labels,
        num_components=boxes.num_components,
    )


def _check_mask(coarse_mask: object) -> np.ndarray:
    if not isinstance(coarse_mask, np.ndarray):
        raise InputError(f"coarse mask must be a numpy array, got {type(coarse_mask).__name__}")
    if coarse_mask.ndim != 2 or coarse_mask.size == 0:
        raise InputError(
            f"coarse mask must be a non-empty 2-D (H, W) array, got shape {coarse_mask.shape}"
        )
    if coarse_mask.dtype == bool:
        return coarse_mask
    if not (np.issubdtype(coarse_mask.dtype, np.integer) or np.issubdtype(coarse_mask.dtype, np.floating)):
        raise InputError(f"coarse mask must be boolean (or 0/1 numbers), got dtype {coarse_mask.dtype}")
    if not np.isin(coarse_mask, (0, 1)).all():
        raise InputError(
            f"coarse mask of dtype {coarse_mask.dtype} holds values other than 0 and 1; expected a binary mask"
        )
    return coarse_mask != 0


def make_visual_prompts(coarse_mask: np.ndarray, cfg: PromptConfig) -> VisualPrompts:
    """Derive SAM's visual prompts from a coarse mask with ``cfg.kind``.

    Sampling uses ``np.random.default_rng(cfg.seed)``, so the result is deterministic. An empty
    coarse mask gives :meth:`VisualPrompts.none` (target not found), never an exception.
    """
    prompt_type = VISUAL_PROMPT_TYPES.get(cfg.kind)
    mask = _check_mask(coarse_mask)
    if not mask.any():
        return VisualPrompts.none()
    return prompt_type(mask, cfg, np.random.default_rng(cfg.seed))
