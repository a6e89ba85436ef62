"""Model loading: BiomedCLIP through open_clip, SAM through segment-anything."""

from .clip import BIOMEDCLIP_HUB, ClipModel, clip_architecture, list_clip_architectures, load_clip, write_clip_folder
from .hf_convert import hf_to_open_clip, open_clip_to_hf
from .sam import (
    SamArchitecture,
    SamModel,
    build_sam,
    list_sam_architectures,
    load_sam,
    sam_architecture,
    save_sam_checkpoint,
)
from .towers import VisionTower

__all__ = [
    "BIOMEDCLIP_HUB", "ClipModel", "clip_architecture", "list_clip_architectures", "load_clip", "write_clip_folder",
    "hf_to_open_clip", "open_clip_to_hf", "SamArchitecture", "SamModel", "build_sam", "list_sam_architectures",
    "load_sam", "sam_architecture", "save_sam_checkpoint", "VisionTower",
]
