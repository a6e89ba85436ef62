"""3D consistency of a slice-by-slice segmentation (docs/algorithms.md §Consistency).

Slices are segmented independently; afterwards, per prompt:

1. **Gap filling** — a run of at most ``fill_gaps`` empty slices between two segmented slices is
   filled with the intersection of the two bounding masks (a conservative guess: only where both
   neighbours agree); nothing is filled when they do not overlap.
2. **3D connected components** — voxels are connected within a slice by 8-connectivity and across
   neighbouring slices when they overlap (the same row and column), i.e. a 3D connectivity with a
   full 3×3 in-plane neighbourhood and face neighbours across slices.
3. **Selection** by a registered rule: ``supported`` keeps components that reach at least one
   *confident* slice (see :mod:`.presence`), ``largest`` keeps the K largest components by voxel
   count (component selection done in 3D, not per slice — K=2 for lungs stays right at the apices),
   ``all`` keeps everything.

Everything is streamed slice by slice (:class:`MaskStack`): memory holds two slices of component
labels, never a volume of them, so the cost does not grow with the series beyond the label volume.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np
from scipy import ndimage

from ..checks import integer_at_least
from ..errors import ConfigError
from ..registry import Registry

_IN_PLANE = np.ones((3, 3), dtype=bool)


class MaskStack(Protocol):
    """A per-slice binary mask store (one prompt's masks)."""

    def __len__(self) -> int: ...
    def get(self, k: int) -> np.ndarray: ...                 # bool rows×cols
    def set(self, k: int, mask: np.ndarray) -> None: ...
    def any(self, k: int) -> bool: ...


@dataclass
class ConsistencyConfig:
    enabled: bool = True
    fill_gaps: int = 1                  # longest run of empty slices to fill (0: no filling)
    keep: str = "supported"             # component rule: supported | largest | all
    num_components: int = 1             # K for "largest"

    def __post_init__(self) -> None:
        integer_at_least("consistency.fill_gaps", self.fill_gaps, 0)
        integer_at_least("consistency.num_components", self.num_components, 1)
        COMPONENT_RULES.get(self.keep)


@dataclass
class ConsistencyReport:
    filled_slices: list[int]
    components: int
    kept_components: int
    removed_voxels: int

    def to_dict(self) -> dict:
        return {"filled_slices": self.filled_slices, "components_3d": self.components,
                "kept_components_3d": self.kept_components, "removed_voxels": self.removed_voxels}


def fill_gaps(stack: MaskStack, max_gap: int) -> list[int]:
    """Fill runs of ≤ max_gap empty slices between segmented slices; returns the filled indices."""
    filled: list[int] = []
    if max_gap < 1:
        return filled
    n = len(stack)
    nonempty = [k for k in range(n) if stack.any(k)]
    for a, b in zip(nonempty, nonempty[1:]):
        gap = b - a - 1
        if 1 <= gap <= max_gap:
            bridge = stack.get(a) & stack.get(b)
            if bridge.any():
                for k in range(a + 1, b):
                    stack.set(k, bridge)
                    filled.append(k)
    return filled


class _UnionFind:
    def __init__(self) -> None:
        self.parent = np.zeros(1, dtype=np.int64)   # id 0 is background

    def add(self, count: int) -> int:
        start = len(self.parent)
        self.parent = np.concatenate([self.parent, np.arange(start, start + count, dtype=np.int64)])
        return start

    def find(self, i: int) -> int:
        p = self.parent
        root = i
        while p[root] != root:
            root = p[root]
        while p[i] != root:
            p[i], i = root, p[i]
        return int(root)

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def roots(self) -> np.ndarray:
        return np.array([self.find(i) for i in range(len(self.parent))], dtype=np.int64)


@dataclass
class Components3D:
    """Streaming 3D components: ``root[id]`` per slice-local component id, sizes and support per root."""

    offsets: list[int]          # global id of label 1 of slice k
    root: np.ndarray            # global id → root id
    size: np.ndarray            # voxels per root (indexed by root id)
    supported: np.ndarray       # root reaches a confident slice

    @property
    def roots(self) -> np.ndarray:
        return np.flatnonzero(self.size)


def components_3d(stack: MaskStack, confident: np.ndarray | None = None) -> Components3D:
    uf = _UnionFind()
    sizes: list[np.ndarray] = [np.zeros(1, dtype=np.int64)]
    support: list[np.ndarray] = [np.zeros(1, dtype=bool)]
    offsets: list[int] = []
    prev: np.ndarray | None = None
    prev_offset = 0
    for k in range(len(stack)):
        mask = stack.get(k) if stack.any(k) else None
        if mask is None:
            offsets.append(len(uf.parent))
            prev = None
            continue
        labels, count = ndimage.label(mask, structure=_IN_PLANE)
        offset = uf.add(count) - 1          # global id of local label j is offset + j
        offsets.append(offset + 1)
        sizes.append(np.bincount(labels.ravel(), minlength=count + 1)[1:].astype(np.int64))
        flag = bool(confident[k]) if confident is not None else False
        support.append(np.full(count, flag))
        if prev is not None:
            both = (prev > 0) & (labels > 0)
            if both.any():
                pairs = np.unique(np.stack([prev[both], labels[both]], axis=1), axis=0)
                for a, b in pairs:
                    uf.union(prev_offset + int(a), offset + int(b))
        prev, prev_offset = labels, offset
    root = uf.roots()
    flat_sizes = np.concatenate(sizes)
    flat_support = np.concatenate(support)
    size = np.bincount(root, weights=flat_sizes, minlength=len(root)).astype(np.int64)
    size[0] = 0
    supported = np.zeros(len(root), dtype=bool)
    np.logical_or.at(supported, root, flat_support)
    return Components3D(offsets, root, size, supported)


RuleFn = Callable[[Components3D, ConsistencyConfig], np.ndarray]
COMPONENT_RULES: Registry[RuleFn] = Registry("3D component rule")


@COMPONENT_RULES.register("supported")
def _supported(comps: Components3D, cfg: ConsistencyConfig) -> np.ndarray:
    return comps.supported & (comps.size > 0)


@COMPONENT_RULES.register("largest")
def _largest(comps: Components3D, cfg: ConsistencyConfig) -> np.ndarray:
    keep = np.zeros(len(comps.size), dtype=bool)
    roots = comps.roots
    order = roots[np.argsort(-comps.size[roots], kind="stable")]
    keep[order[:cfg.num_components]] = True
    return keep


@COMPONENT_RULES.register("all")
def _all(comps: Components3D, cfg: ConsistencyConfig) -> np.ndarray:
    return comps.size > 0


def enforce_consistency(stack: MaskStack, cfg: ConsistencyConfig,
                        confident: np.ndarray | None = None) -> ConsistencyReport:
    """Gap filling then 3D component selection, in place on ``stack``."""
    if not cfg.enabled:
        return ConsistencyReport([], 0, 0, 0)
    if cfg.keep == "supported" and confident is None:
        raise ConfigError("consistency.keep=supported needs the confident slices")
    filled = fill_gaps(stack, cfg.fill_gaps)
    comps = components_3d(stack, confident)
    keep_root = COMPONENT_RULES.get(cfg.keep)(comps, cfg)
    removed = 0
    for k in range(len(stack)):
        if not stack.any(k):
            continue
        mask = stack.get(k)
        labels, count = ndimage.label(mask, structure=_IN_PLANE)
        ids = comps.offsets[k] + np.arange(count)          # local labels 1..count
        keep_local = np.concatenate([[False], keep_root[comps.root[ids]]])
        new = keep_local[labels]
        removed += int(mask.sum() - new.sum())
        if removed and not np.array_equal(new, mask):
            stack.set(k, new)
    return ConsistencyReport(filled, int(len(comps.roots)), int(keep_root[comps.roots].sum()), removed)


class ArrayMaskStack:
    """A MaskStack over a bool array (tests, small volumes)."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def __len__(self) -> int:
        return int(self.array.shape[0])

    def get(self, k: int) -> np.ndarray:
        return self.array[k].astype(bool)

    def set(self, k: int, mask: np.ndarray) -> None:
        self.array[k] = mask

    def any(self, k: int) -> bool:
        return bool(self.array[k].any())
