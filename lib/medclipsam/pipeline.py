"""The zero-shot pipeline on one 2D image: text + image → saliency map → coarse mask → visual prompts → SAM.

Each stage is taken from its registry by the names in :class:`~medclipsam.config.PipelineConfig`,
so a stage is replaced without touching the others. An empty coarse mask ends the image with a
"target not found" result (empty mask), never an exception.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .config import PipelineConfig
from .models import ClipModel, SamModel
from .models.cards import DEMO_NOTICE
from .postprocess import make_coarse_mask
from .prompts import VisualPrompts, make_visual_prompts
from .saliency import SaliencyResult, compute_saliency, text_target
from .sam_stage import SamOutput, SamSegmenter
from .timing import StageClock


@dataclass
class SegmentationResult:
    mask: np.ndarray                    # bool H×W, the final (pseudo-)label
    found: bool                         # False: "target not found" (empty coarse mask)
    saliency: SaliencyResult
    coarse_mask: np.ndarray
    visual_prompts: VisualPrompts
    sam: SamOutput | None
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def message(self) -> str:
        return "segmented" if self.found else "target not found (empty coarse mask)"

    def summary(self) -> dict[str, Any]:
        return {
            "found": self.found,
            "message": self.message,
            "similarity": round(self.saliency.similarity, 6),
            "raw_saliency_max": round(self.saliency.raw_max, 6),
            "raw_saliency_mean": round(self.saliency.raw_mean, 6),
            "coarse_mask_pixels": int(self.coarse_mask.sum()),
            "mask_pixels": int(self.mask.sum()),
            "visual_prompts": self.visual_prompts.to_dict(),
            "sam_scores": [round(s, 4) for s in self.sam.scores] if self.sam else [],
            "seconds": {k: round(v, 4) for k, v in self.seconds.items()},
        }


@dataclass
class SliceChain:
    """What the chain after saliency gave on one image: coarse mask, visual prompts, SAM's output
    (None when the coarse mask gave no visual prompt: "target not found")."""

    coarse_mask: np.ndarray
    visual_prompts: VisualPrompts
    sam: SamOutput | None

    @property
    def mask(self) -> np.ndarray:
        return self.sam.mask if self.sam is not None else np.zeros(self.coarse_mask.shape, bool)


def chain_from_saliency(saliency_map: np.ndarray, rgb: np.ndarray, prompts: str | Sequence[str],
                        config: PipelineConfig, segmenter: SamSegmenter, *, prompt_seed: int | None = None,
                        set_image: Callable[[], None] | None = None, clock: StageClock | None = None) -> SliceChain:
    """The stages after saliency on one image — saliency map → coarse mask → visual prompts → SAM —
    the one implementation behind :meth:`Pipeline.segment` and the volume engine's SAM pass.

    ``segmenter`` must hold the image's SAM embedding when SAM runs, or ``set_image`` sets it (called
    only when there is a visual prompt, so an image without one costs no SAM encoding).
    ``prompt_seed`` replaces the visual prompts' seed (the volume engine seeds each slice apart).
    """
    clock = clock or StageClock()
    with clock.stage("postprocess"):
        coarse = make_coarse_mask(saliency_map, rgb, config.postprocess.for_prompt(prompts))
        prompt_cfg = config.prompts if prompt_seed is None else dataclasses.replace(config.prompts, seed=prompt_seed)
        visual = make_visual_prompts(coarse, prompt_cfg)
    if visual.empty:
        return SliceChain(coarse, visual, None)
    if set_image is not None:
        with clock.stage("sam_encoder"):
            set_image()
    with clock.stage("sam_decoder"):
        out = segmenter.segment(visual, config.sam, coarse_mask=coarse)
    return SliceChain(coarse, visual, out)


class Pipeline:
    """A CLIP model, a SAM model and a configuration; :meth:`segment` runs one image."""

    def __init__(self, clip: ClipModel, sam: SamModel, config: PipelineConfig | None = None) -> None:
        self.clip = clip
        self.sam = sam
        self.config = config or PipelineConfig.from_preset("v2")
        self.segmenter = SamSegmenter(sam)
        self._text_cache: dict[tuple[str, ...], torch.Tensor] = {}

    @property
    def random_weights(self) -> bool:
        return self.clip.random_weights or self.sam.random_weights

    def identity(self) -> dict[str, Any]:
        return {"clip": self.clip.identity(), "sam": self.sam.identity()}

    def warnings(self) -> list[str]:
        """What every output made with these models must say (one line per fact)."""
        random_models = [name for name, m in (("CLIP", self.clip), ("SAM", self.sam)) if m.random_weights]
        demo_models = [name for name, m in (("CLIP", self.clip), ("SAM", self.sam)) if getattr(m, "demo", False)]
        out = []
        if random_models:
            out.append(f"RANDOM WEIGHTS ({' and '.join(random_models)}): saliency maps and masks are meaningless; "
                       "use only to measure cost")
        if demo_models:
            out.append(f"DEMO MODEL ({' and '.join(demo_models)}): {DEMO_NOTICE}")
        return out

    @property
    def demo(self) -> bool:
        return bool(getattr(self.clip, "demo", False) or getattr(self.sam, "demo", False))

    def series_description(self) -> str:
        """What made a result, in at most 64 characters (a DICOM SeriesDescription): the demo notice
        for demo models, else preset and architectures, with RANDOM WEIGHTS when they are random."""
        if self.demo:
            return DEMO_NOTICE
        text = f"medclipsam {self.config.preset} {self.clip.architecture} + SAM {self.sam.architecture}"
        if self.random_weights:
            text += " RANDOM WEIGHTS"
        return text[:64]

    def text_embedding(self, prompts: str | Sequence[str]) -> torch.Tensor:
        """The text target, computed once per prompt (or prompt ensemble) and reused for every image."""
        key = (prompts,) if isinstance(prompts, str) else tuple(prompts)
        if key not in self._text_cache:
            self._text_cache[key] = text_target(self.clip, list(key))
        return self._text_cache[key]

    def segment(self, rgb: np.ndarray, prompts: str | Sequence[str],
                clock: StageClock | None = None) -> SegmentationResult:
        cfg = self.config
        clock = clock or StageClock()
        with clock.stage("text"):
            text = self.text_embedding(prompts)
        with clock.stage("saliency"):
            saliency = compute_saliency(self.clip, rgb, text, cfg.saliency, cfg.saliency_params())
        chain = chain_from_saliency(saliency.saliency_map, rgb, prompts, cfg, self.segmenter,
                                    set_image=lambda: self.segmenter.set_image(rgb), clock=clock)
        clock.seconds["total"] = clock.total()
        return SegmentationResult(chain.mask, chain.sam is not None, saliency, chain.coarse_mask,
                                  chain.visual_prompts, chain.sam, dict(clock.seconds))
