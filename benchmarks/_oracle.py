"""An ORACLE saliency method made from a reference label, for benchmarks and tests only.

``saliency=oracle`` turns the volume engine's saliency pass into a known, good-but-imperfect map of the
true structure, so that everything after it — coarse mask, boxes, SAM, 3D consistency, the NIfTI and
DICOM SEG writers, and every geometric transform between the stored grid and what the models see —
can be checked end to end on real images against the same reference (``benchmarks/real_ct_oracle.py``,
``tests/test_real_geometry.py``). It is registered when this module is imported, never by ``lib/``,
so no user can pick it; importing the module twice (or under two names) registers it once.

What the oracle holds (:class:`OracleTarget`, made by :func:`prepare_target`): for every slice of the
series, the reference mask turned into **what the models see**, computed forwards only —

1. the slice's ROI (``VolumeConfig.roi``, stored-grid pixels) cut out,
2. turned to the radiological display orientation with the engine's own
   :func:`~medclipsam.volume.display.display_orientation` object, ``.apply`` only (never ``.invert``:
   the inverse is what the pipeline under test must get right),
3. drawn as an 8-bit image and passed through :func:`~medclipsam.image.clip_input` (centred square
   padding, bicubic resize to the CLIP input size; mean 0 / std 1), giving the structure's occupancy
   (0..1) on the CLIP input square.

Optionally also the slice itself as the models see it (the same window, ROI, orientation and
``clip_input``), a fingerprint the oracle compares with the pixels it is handed, so a slice mix-up
(wrong slice index, wrong slice order, different ROI) is an error, not a silently wrong map.

Each call (one slice, one prompt) then, seeded by ``cfg.seed``:

* **which slice**: the engine calls a method without a batch form once per (slice, prompt) with
  ``seed = params.seed + k`` (``k`` the slice's index in the series, ``engine._segment``:
  ``slice_params``); :class:`OracleConfig` keeps the seed it started from in ``first_seed``, so
  ``k = cfg.seed - cfg.first_seed``. The fingerprint check (when present) confirms it.
* **which target**: the prompt's text embedding is matched with ``text_target(clip, name)`` of each
  target (the engine's own function: equal to rounding), so one run may carry several prompts.
* the occupancy map is **shifted** by ``shift_px`` CLIP-input pixels in a direction drawn from the
  seed, **blurred** (Gaussian, ``blur_sigma`` CLIP-input pixels), **reduced to the token grid** (mean
  over each ViT patch, ``clip.vision.grid_size``), and given **noise** (Gaussian, standard deviation
  ``noise`` × the grid's peak, so a small structure is as recognisable as a large one; clipped at 0,
  as a capacity map is never negative).
* a slice where the target is absent gets an all-zero grid: min-max normalisation makes that an empty
  saliency map, hence an empty coarse mask and no SAM call — with the presence gate off, the oracle
  alone decides which slices have the target.

The engine instantiates the method's config with no arguments (``PipelineConfig.saliency_params``:
``oracle`` has no field of its own in ``PipelineConfig``), so the targets and parameters are supplied
by :func:`oracle_session`, a context manager whose values every ``OracleConfig()`` made inside it takes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import weakref
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator, Mapping

import numpy as np
import torch

from medclipsam.image import clip_input
from medclipsam.saliency import SALIENCY_METHODS, MethodOutput, register_saliency, text_target

NAME = "oracle"
DEFAULTS: dict[str, Any] = {"seed": 0, "blur_sigma": 2.0, "shift_px": 2.0, "noise": 0.05}
TEXT_TOLERANCE = 1e-4        # max |difference| between the prompt's text embedding and a target's
VIEW_TOLERANCE = 2e-3         # max |difference| (0..1 intensity) between the pixels handed over and the fingerprint


@dataclass(frozen=True)
class OracleTarget:
    """One structure as the models see it on every slice of a series (module docstring)."""

    name: str                              # the prompt text that asks for it
    occupancy: np.ndarray = field(repr=False)    # float32 slices × S × S: the structure on the CLIP input square
    views: np.ndarray | None = field(default=None, repr=False)
    # views: float32 slices × S × S, the slice itself as CLIP input (channel 0, 0..1), or None: no slice check

    @property
    def num_slices(self) -> int:
        return int(self.occupancy.shape[0])

    @property
    def image_size(self) -> int:
        return int(self.occupancy.shape[1])


@dataclass
class OracleConfig:
    """The oracle's parameters; a field left None takes the active :func:`oracle_session`'s value."""

    seed: int | None = None                # the engine adds the slice index k to it
    blur_sigma: float | None = None        # Gaussian blur, CLIP-input pixels
    shift_px: float | None = None          # shift length, CLIP-input pixels (direction from the seed)
    noise: float | None = None             # noise standard deviation, as a fraction of the grid's peak
    first_seed: int | None = None          # the seed of slice 0 (k = seed - first_seed)
    targets: Mapping[str, OracleTarget] | None = None

    _is_medclipsam_oracle: ClassVar[bool] = True
    _sessions: ClassVar[list] = []         # the stack of active sessions (OracleConfig instances)

    def __post_init__(self) -> None:
        active = type(self)._sessions[-1] if type(self)._sessions else None
        for f in dataclasses.fields(self):
            if getattr(self, f.name) is None and active is not None:
                setattr(self, f.name, getattr(active, f.name))
            if getattr(self, f.name) is None and f.name in DEFAULTS:
                setattr(self, f.name, DEFAULTS[f.name])
        if self.first_seed is None:
            self.first_seed = self.seed
        if self.targets is None:
            self.targets = {}
        if self.blur_sigma < 0 or self.shift_px < 0 or self.noise < 0:
            raise ValueError(f"oracle blur_sigma, shift_px and noise must be ≥ 0, got {self.blur_sigma}, "
                             f"{self.shift_px}, {self.noise}")


def _register() -> type:
    """Register ``oracle`` once; a second import (another module name) reuses the first registration."""
    if NAME in SALIENCY_METHODS:
        entry = SALIENCY_METHODS.get(NAME)
        if not getattr(entry.config_cls, "_is_medclipsam_oracle", False):
            raise RuntimeError(f"a saliency method {NAME!r} that is not this oracle is already registered")
        return entry.config_cls
    register_saliency(NAME, OracleConfig, "ORACLE from a reference label (benchmarks and tests only): "
                                          "shifted, blurred, noisy occupancy on the token grid")(oracle_saliency)
    return OracleConfig


@contextlib.contextmanager
def oracle_session(targets: Mapping[str, OracleTarget] | list[OracleTarget], **params: Any) -> Iterator[Any]:
    """Inside, every ``OracleConfig()`` (the one the engine makes) carries ``targets`` and ``params``
    (seed, blur_sigma, shift_px, noise). Yields that config."""
    if not isinstance(targets, Mapping):
        targets = {t.name: t for t in targets}
    unknown = set(params) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"unknown oracle parameter(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    cls = REGISTERED_CONFIG
    cfg = cls(targets=dict(targets), **params)
    cls._sessions.append(cfg)
    try:
        yield cfg
    finally:
        cls._sessions.remove(cfg)


# ----------------------------------------------------------------------------- preparing a target


def _square(image: np.ndarray, image_size: int) -> np.ndarray:
    """What ``clip_input`` makes of an H×W (0..255) picture: channel 0 of the S×S input, 0..1."""
    rgb = np.repeat(np.asarray(image, dtype=np.uint8)[..., None], 3, axis=2)
    pixels, _pad = clip_input(rgb, image_size, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    return pixels[0, 0].numpy().astype(np.float32)


def prepare_target(name: str, mask: np.ndarray, src: Any, *, image_size: int,
                   roi: tuple[int, int, int, int] | None = None, reorient: bool = True,
                   window: str | None = None, fingerprint: bool = True) -> OracleTarget:
    """The reference ``mask`` (bool slices × rows × cols on ``src``'s stored grid) as the models see
    it: ROI ``(x0, y0, x1, y1)`` cut out, display orientation applied (forward only), padded square
    and resized as the CLIP input of side ``image_size``. ``fingerprint``: also keep each slice as the
    engine renders it (``window``: as ``segment-series --window``; None/auto = the engine's choice for
    the prompt ``name``), for the oracle's slice check."""
    from medclipsam.volume.display import AS_STORED, display_orientation
    from medclipsam.volume.render import choose_window, render_slice

    mask = np.asarray(mask, dtype=bool)
    n, rows, cols = src.geometry.shape
    if mask.shape != (n, rows, cols):
        raise ValueError(f"reference {name!r} is {mask.shape}, the series {(n, rows, cols)}")
    x0, y0, x1, y1 = roi if roi is not None else (0, 0, cols, rows)
    orientation = display_orientation(src.geometry) if reorient else AS_STORED
    win = choose_window(src, [name], window) if fingerprint else None
    occupancy = np.zeros((n, image_size, image_size), np.float32)
    views = np.zeros((n, image_size, image_size), np.float32) if fingerprint else None
    for k in range(n):
        seen = orientation.apply(mask[k, y0:y1, x0:x1])
        if seen.any():
            occupancy[k] = np.clip(_square(seen.astype(np.uint8) * 255, image_size), 0.0, 1.0)
        if views is not None:
            rgb = orientation.apply(render_slice(src.read_slice(k), win)[y0:y1, x0:x1])
            views[k] = _square(rgb[..., 0], image_size)
    return OracleTarget(name, occupancy, views)


# ----------------------------------------------------------------------------- the method


_TEXT_CACHE: dict[tuple[int, str], tuple[Any, torch.Tensor]] = {}    # (id(clip), name) → (weakref, embedding)


def _which_target(clip: Any, text_embedding: torch.Tensor, targets: Mapping[str, OracleTarget]) -> OracleTarget:
    """The target whose ``text_target(clip, name)`` is the embedding the engine handed over (the
    engine computes it with the same function, so they agree to rounding)."""
    if not targets:
        raise RuntimeError("the oracle saliency method has no reference: run the pipeline inside "
                           "benchmarks/_oracle.py's oracle_session(targets)")
    query = torch.as_tensor(text_embedding).detach().float().cpu().reshape(-1)
    gaps = {}
    for name in targets:
        key = (id(clip), name)
        cached = _TEXT_CACHE.get(key)
        if cached is None or cached[0]() is not clip:       # an id can be reused by a later model
            device = getattr(clip, "device", torch.device("cpu"))
            with torch.autocast(device_type=torch.device(device).type, enabled=False):
                cached = (weakref.ref(clip), text_target(clip, name).detach().float().cpu().reshape(-1))
            _TEXT_CACHE[key] = cached
        mine = cached[1]
        gaps[name] = float((query - mine).abs().max()) if mine.shape == query.shape else float("inf")
    matches = [name for name, gap in gaps.items() if gap <= TEXT_TOLERANCE]
    if len(matches) != 1:
        best = min(gaps, key=gaps.__getitem__)
        raise RuntimeError(f"the oracle was asked about a prompt that is none of its targets, or several "
                           f"({len(matches)} match; nearest {best!r}, max difference {gaps[best]:.3g}; targets: "
                           f"{sorted(targets)})")
    return targets[matches[0]]


def _check_view(clip: Any, pixels: torch.Tensor, target: OracleTarget, k: int) -> None:
    """The pixels handed over must be slice ``k`` as prepared (slice index, order, ROI, orientation)."""
    if target.views is None:
        return
    seen = pixels[0, 0].detach().float().cpu().numpy() * float(clip.std[0]) + float(clip.mean[0])
    diffs = np.abs(target.views - seen[None]).reshape(target.num_slices, -1).max(axis=1)
    if diffs[k] > VIEW_TOLERANCE:
        j = int(np.argmin(diffs))
        raise RuntimeError(f"the oracle was asked about slice {k} (from the seed) but the pixels differ from that "
                           f"slice as prepared by {diffs[k]:.3g}; closest prepared slice: {j} "
                           f"(difference {diffs[j]:.3g}) — slice order, ROI or orientation disagree")


def oracle_grid(occupancy: np.ndarray, grid: tuple[int, int], cfg: OracleConfig) -> np.ndarray:
    """Shift, blur, reduce to the token grid, add noise (all seeded by ``cfg.seed``): gh × gw float32."""
    from scipy import ndimage

    gh, gw = grid
    side = occupancy.shape[0]
    if side % gh or side % gw:
        raise ValueError(f"the CLIP input side {side} is not a multiple of the token grid {grid}")
    if not occupancy.any():
        return np.zeros((gh, gw), np.float32)
    rng = np.random.default_rng(int(cfg.seed))
    angle = rng.uniform(0.0, 2.0 * math.pi)
    m = occupancy.astype(np.float64)
    if cfg.shift_px:
        m = ndimage.shift(m, (cfg.shift_px * math.sin(angle), cfg.shift_px * math.cos(angle)), order=1,
                          mode="constant", cval=0.0)
    if cfg.blur_sigma:
        m = ndimage.gaussian_filter(m, cfg.blur_sigma, mode="constant", cval=0.0)
    g = m.reshape(gh, side // gh, gw, side // gw).mean(axis=(1, 3))
    if cfg.noise:
        g = g + rng.normal(0.0, cfg.noise * float(g.max()), g.shape)
    return np.clip(g, 0.0, None).astype(np.float32)


def oracle_saliency(clip: Any, pixels: torch.Tensor, text_embedding: torch.Tensor, cfg: OracleConfig) -> MethodOutput:
    """The registered method (module docstring): one slice (``pixels`` 1×3×S×S), one prompt."""
    if pixels.shape[0] != 1:
        raise ValueError(f"the oracle takes one image per call, got {pixels.shape[0]}")
    target = _which_target(clip, text_embedding, cfg.targets)
    k = int(cfg.seed) - int(cfg.first_seed)
    if not 0 <= k < target.num_slices:
        raise RuntimeError(f"the oracle was asked about slice {k} (seed {cfg.seed} - first seed {cfg.first_seed}); "
                           f"{target.name!r} has {target.num_slices} slices")
    if pixels.shape[-1] != target.image_size:
        raise RuntimeError(f"the CLIP input is {pixels.shape[-1]} pixels square; the oracle was prepared for "
                           f"{target.image_size}")
    _check_view(clip, pixels, target, k)
    grid = oracle_grid(target.occupancy[k], tuple(clip.vision.grid_size), cfg)
    return MethodOutput(raw_grid=torch.from_numpy(grid), extras={"oracle_slice": k, "oracle_target": target.name})


REGISTERED_CONFIG = _register()

__all__ = ["NAME", "OracleConfig", "OracleTarget", "REGISTERED_CONFIG", "oracle_grid", "oracle_saliency",
           "oracle_session", "prepare_target"]
