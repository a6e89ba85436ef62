"""The demo SAM's model card: its recommended pipeline settings and what it records of the training."""

from __future__ import annotations

import hashlib
import json
import os
import platform
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping

import torch

from medclipsam.models.cards import DEMO_NOTICE, demo_card, sam_card_path

DISCLAIMER = DEMO_NOTICE  # "demo model, synthetic training data, not for clinical use"

# Pipeline settings the card recommends for this SAM (``--set`` wins over them). ``sam.box_clip`` 0.1
# (sixth round, SAM 14 with CLIP 15): tumour Dice 0.662 / 0.709 / 0.706 → 0.684 / 0.726 / 0.743 on
# phantom_eval seeds 0 / 1 / 7, lungs ± 0.003; a small SAM spills out of a box into low-contrast
# neighbours (liver around a hepatic lesion) that the prompt excludes.
# ``sam.coarse_clip`` 0.008 (1 px at 128 px; seventh round, with the fine-tuned SAM 16): tumour
# +0.013 to +0.034 on seeds 0 / 1 / 7, lungs within 0.002: SAM may refine the outline but not grow
# past where the saliency map put the target.
RECOMMENDED_SETTINGS: dict[str, str] = {"sam.box_clip": "0.1", "sam.coarse_clip": "0.008"}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_card(out_path: Path, spec: str, arch, cfg, *, run: Mapping[str, Any], multimask_weight: float,
               iou_weight: float, unions: Mapping[str, Any] | None, init_record: dict[str, Any] | None, device: str,
               metrics: dict[str, Any], ev: dict[str, Any]) -> Path:
    """Write the model card ``out_path.with_suffix(".json")`` atomically. ``run``: the run's own settings
    (recipe, data, sizes, optimiser), to which the loss, prompt sampling, init and software are added."""
    card = demo_card(
        f"demo SAM ({arch.name} architecture)",
        description=(f"A SAM-architecture model ({arch.name}) "
                     + (f"fine-tuned from {init_record['checkpoint']} (see training.init) " if init_record else
                        "trained from scratch ")
                     + "by training/sam_demo.py on synthetic slices with jittered box and point prompts; "
                     + f"{DISCLAIMER}."),
        load=f"load_sam(\"{spec}\")",
        checkpoint=out_path.name,
        architecture=arch.to_dict(),
        pipeline_overrides=dict(RECOMMENDED_SETTINGS),
        training={
            **run,
            "loss": f"BCE + Dice (single mask) + {multimask_weight} × min over 3 of BCE + Dice (multimask) "
                    f"+ {iou_weight} × IoU-prediction MSE, on masks at the original resolution",
            "prompt_sampling": asdict(cfg),
            "union_targets": {k: list(v) for k, v in (unions or {}).items()},
            "init": init_record or "random (torch.manual_seed(seed))",
            "threads": torch.get_num_threads(), "device": str(device), "torch": torch.__version__,
            "python": platform.python_version(),
        },
        metrics={k: v for k, v in metrics.items() if k != "per_structure"} | {
            "per_structure": ev["per_structure"],
            "evaluation": "held-out slices through medclipsam.sam_stage.SamSegmenter: one jittered box per "
                          "structure (box_dice), one jittered box per component (component_box_dice), 10 positive "
                          "points (point_dice); default SamStageConfig"},
    )
    tmp = sam_card_path(out_path).with_name(sam_card_path(out_path).name + ".partial")
    tmp.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, sam_card_path(out_path))
    return sam_card_path(out_path)
