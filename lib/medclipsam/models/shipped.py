"""The models that ship inside the package, and the short specifications that name them.

``--clip demo`` and ``--sam demo`` stand for the demo models in ``medclipsam/demo_models/`` (small
models of the real architectures trained on the project's phantoms, :mod:`medclipsam.demo`):
``local-dir:<that folder>/clip`` and ``demo:<that folder>/sam/demo-sam.pth``. The loaders expand
a short specification here, in one place, before they parse it.
"""

from __future__ import annotations

from pathlib import Path

DEMO_DIR = Path(__file__).resolve().parent.parent / "demo_models"
DEMO_CLIP_DIR = DEMO_DIR / "clip"
DEMO_SAM_PATH = DEMO_DIR / "sam" / "demo-sam.pth"

CLIP_SHORT_SPECS = {"demo": f"local-dir:{DEMO_CLIP_DIR}"}
SAM_SHORT_SPECS = {"demo": f"demo:{DEMO_SAM_PATH}"}


def expand_clip_spec(spec: str) -> str:
    """A CLIP specification with a short name (``demo``) replaced by what it stands for."""
    return CLIP_SHORT_SPECS.get(spec.strip(), spec) if isinstance(spec, str) else spec


def expand_sam_spec(spec: str) -> str:
    """A SAM specification with a short name (``demo``) replaced by what it stands for."""
    return SAM_SHORT_SPECS.get(spec.strip(), spec) if isinstance(spec, str) else spec
