"""Model cards: what a model is for, stored next to its weights, and said by every output made with it.

A CLIP model folder (``local-dir:``) may hold ``model_card.json``; a SAM checkpoint ``X.pth`` may have
``X.json`` beside it. A card with ``"intended_use": "demo"`` marks a demo model trained on the
project's synthetic phantoms: the CLI banner, every JSON summary and the DICOM SEG series
description then say :data:`DEMO_NOTICE`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import CheckpointError

MODEL_CARD = "model_card.json"
DEMO_NOTICE = "demo model, synthetic training data, not for clinical use"


def read_card(path: str | Path) -> dict[str, Any]:
    """The card at ``path`` ({} when there is none); a card that is not a JSON object is an error."""
    p = Path(path)
    if not p.is_file():
        return {}
    try:
        card = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"the model card {p} cannot be read ({e}); fix or delete it") from None
    if not isinstance(card, dict):
        raise CheckpointError(f"the model card {p} must hold a JSON object; fix or delete it")
    return card


def sam_card_path(checkpoint: str | Path) -> Path:
    return Path(checkpoint).with_suffix(".json")


def is_demo(card: dict[str, Any]) -> bool:
    return str(card.get("intended_use", "")).lower() == "demo"


def demo_card(name: str, **extra: Any) -> dict[str, Any]:
    """The card a training recipe writes for a demo model."""
    return {"name": name, "intended_use": "demo", "notice": DEMO_NOTICE, **extra}
