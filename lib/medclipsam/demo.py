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
settings for its model (``"pipeline_overrides": {"m2ib.layer": "3", "propagation.enabled": "true"}``,
applied by :func:`medclipsam.settings.resolve_settings`): a small model's bottleneck layer is not
BiomedCLIP's block 9, and rules read off the phantoms the demo models were trained for (propagation)
belong to their cards, not to the engine's defaults.
"""

from __future__ import annotations

from typing import Any, Mapping

from .config import PipelineConfig
from .errors import CheckpointError
from .models.shipped import CLIP_SHORT_SPECS, DEMO_CLIP_DIR, DEMO_DIR, DEMO_SAM_PATH, SAM_SHORT_SPECS  # noqa: F401

DEMO_CLIP = CLIP_SHORT_SPECS["demo"]          # "--clip demo" for short
DEMO_SAM = SAM_SHORT_SPECS["demo"]            # "--sam demo" for short
TRAIN_HINT = ("train them with `python training/clip_demo.py --out lib/medclipsam/demo_models/clip` and "
              "`python training/sam_demo.py --out lib/medclipsam/demo_models/sam/demo-sam.pth` (minutes on a CPU)")


def check_demo_models() -> None:
    """Fail with the fix when the demo models are not where the package expects them."""
    missing = [str(p) for p in (DEMO_CLIP_DIR / "open_clip_config.json", DEMO_SAM_PATH) if not p.exists()]
    if missing:
        raise CheckpointError(f"the demo models are missing ({', '.join(missing)}); {TRAIN_HINT}")


def demo_pipeline_config(*models: Any, preset: str = "v2",
                         overrides: Mapping[str, str] | None = None) -> PipelineConfig:
    """The 2D pipeline's section of :func:`medclipsam.settings.resolve_settings` for these models
    (preset, the cards' recommendations, then ``overrides``), for callers that run single images."""
    from .settings import resolve_settings

    return resolve_settings(preset, models, overrides)[0].pipeline
