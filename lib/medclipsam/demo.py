"""The demo: small models of the real architectures, trained on the project's phantoms, shipped with
the package so that the whole product runs end to end on a fresh CPU machine without downloads.

* :data:`DEMO_CLIP` — a BiomedCLIP-shaped model (timm ViT + BERT-style text tower) in a
  ``local-dir:`` folder, trained by ``training/clip_demo.py``;
* :data:`DEMO_SAM` — a SAM-architecture checkpoint (``demo`` architecture), trained by
  ``training/sam_demo.py``. The demo and the app without ``--conf sam`` use it rather than
  LiteMedSAM (the default SAM elsewhere): on fresh phantoms it gives the better figures
  (``benchmarks/phantom_eval.py``, selection seed 200: tumour Dice 0.849 vs 0.775, lungs 0.941 vs
  0.930; ``benchmarks/RESULTS.md``, 2026-12-07). On real CT it is far worse (``real_ct_boxes.py``).

Both carry a model card (``intended_use: demo``), so every output made with them says
"demo model, synthetic training data, not for clinical use". A model card may also recommend
pipeline settings for its model (``"pipeline_overrides": {"m2ib.layer": "3"}``): a small model's
bottleneck layer is not BiomedCLIP's block 9.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from .config import PipelineConfig
from .errors import CheckpointError

DEMO_DIR = Path(__file__).resolve().parent / "demo_models"
DEMO_CLIP_DIR = DEMO_DIR / "clip"
DEMO_SAM_PATH = DEMO_DIR / "sam" / "demo-sam.pth"
DEMO_CLIP = f"local-dir:{DEMO_CLIP_DIR}"
DEMO_SAM = f"demo:{DEMO_SAM_PATH}"
TRAIN_HINT = ("train them with `python training/clip_demo.py --out lib/medclipsam/demo_models/clip` and "
              "`python training/sam_demo.py --out lib/medclipsam/demo_models/sam/demo-sam.pth` (minutes on a CPU)")


def check_demo_models() -> None:
    """Fail with the fix when the demo models are not where the package expects them."""
    missing = [str(p) for p in (DEMO_CLIP_DIR / "open_clip_config.json", DEMO_SAM_PATH) if not p.exists()]
    if missing:
        raise CheckpointError(f"the demo models are missing ({', '.join(missing)}); {TRAIN_HINT}")


def recommended_overrides(*models: Any) -> dict[str, str]:
    """Pipeline settings the models' cards recommend (later models win on the same key)."""
    out: dict[str, str] = {}
    for m in models:
        card = getattr(m, "card", None) or {}
        overrides = card.get("pipeline_overrides") or {}
        if not isinstance(overrides, Mapping):
            raise CheckpointError(f"the model card of {getattr(m, 'spec', m)} has 'pipeline_overrides' that is not "
                                  "an object of KEY: VALUE settings; fix the card")
        out.update({str(k): str(v) for k, v in overrides.items()})
    return out


def demo_pipeline_config(*models: Any, preset: str = "v2", overrides: Mapping[str, str] | None = None) -> PipelineConfig:
    """The preset with the models' recommended settings, then the user's ``overrides`` on top."""
    return PipelineConfig.from_preset(preset, {**recommended_overrides(*models), **dict(overrides or {})})
