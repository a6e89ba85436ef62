"""Configuration of the post-processing stage: saliency map -> coarse mask.

:class:`CRFConfig` holds the dense CRF parameters of MedCLIP-SAM (``v1``) and MedCLIP-SAMv2
(``v2``); :class:`PostprocessConfig` picks the binarization method and the connected-component
filter applied to the coarse mask.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..checks import integer_at_least
from ..errors import ConfigError

CONNECTIVITIES = (4, 8)

# Prompts naming a paired structure as a whole. MedCLIP-SAMv2 keeps K = 1 component, 2 for lungs
# (docs/algorithms.md §Post-processing); ``PostprocessConfig.num_components_paired`` gives such prompts their own K.
PAIRED_STRUCTURES = re.compile(
    r"\b(lungs|kidneys|adrenals|adrenal glands|breasts|ovaries|testes|eyes|orbits|hips|parotids|parotid glands)\b",
    re.IGNORECASE)


def names_paired_structure(prompts: str | Sequence[str]) -> bool:
    """Whether a prompt (or every prompt of an ensemble) names a paired structure as a whole
    ("lungs", "both kidneys"; not "left lung")."""
    texts = [prompts] if isinstance(prompts, str) else list(prompts)
    return bool(texts) and all(PAIRED_STRUCTURES.search(str(t)) for t in texts)


@dataclass
class CRFConfig:
    """Dense CRF parameters used to turn a saliency map into a coarse mask.

    Unary energies (background / foreground) are ``-log(p + eps) / (tau * sigmoid(p))`` with
    ``p = 1 - s`` and ``p = s`` respectively, ``s`` being the saliency map. The pairwise terms
    are a Gaussian (smoothness) kernel and a bilateral (appearance) kernel on the RGB image.
    """

    gaussian_sxy: float = 3
    gaussian_compat: float = 3
    bilateral_sxy: float = 60
    bilateral_srgb: float = 5
    bilateral_compat: float = 5
    iterations: int = 1
    tau: float = 1.05
    eps: float = 1e-8

    def __post_init__(self) -> None:
        for name in ("gaussian_sxy", "bilateral_sxy", "bilateral_srgb", "tau", "eps"):
            value = getattr(self, name)
            if not value > 0:
                raise ConfigError(f"CRF {name} must be > 0, got {value!r}")
        for name in ("gaussian_compat", "bilateral_compat"):
            value = getattr(self, name)
            if not value >= 0:
                raise ConfigError(f"CRF {name} must be >= 0, got {value!r}")
        self.iterations = integer_at_least("CRF iterations", self.iterations, minimum=1)

    @classmethod
    def v1(cls) -> "CRFConfig":
        """CRF parameters of MedCLIP-SAM (the defaults)."""
        return cls()

    @classmethod
    def v2(cls) -> "CRFConfig":
        """CRF parameters of MedCLIP-SAMv2 (tighter spatial and colour kernels)."""
        return cls(gaussian_sxy=5, bilateral_sxy=5, bilateral_srgb=3)


@dataclass
class PostprocessConfig:
    """How a saliency map becomes a coarse mask.

    ``method`` names a binarization method (``crf``, ``otsu``, ``kmeans``, ``threshold``);
    ``components`` names a connected-component filter (``largest``, ``confidence``, ``all``).
    ``threshold`` is used by the ``threshold`` method, ``num_components`` by ``largest``,
    ``confidence_threshold`` by ``confidence``; ``min_size`` (pixels) applies to every filter.
    ``num_components_paired`` (> 0) replaces ``num_components`` for prompts naming a paired structure
    ("lungs"; :func:`names_paired_structure`), as MedCLIP-SAMv2 keeps 1 component, 2 for lungs;
    :meth:`for_prompt` resolves it.
    A ``crf`` given as a mapping (e.g. read from JSON) is turned into a :class:`CRFConfig`.
    """

    method: str = "otsu"
    threshold: float = 0.3
    crf: CRFConfig = field(default_factory=CRFConfig)
    components: str = "largest"
    num_components: int = 1
    num_components_paired: int = 0
    confidence_threshold: float = 0.5
    min_size: int = 0
    connectivity: int = 8

    def __post_init__(self) -> None:
        if isinstance(self.crf, dict):
            self.crf = _crf_from_mapping(self.crf)
        if not isinstance(self.crf, CRFConfig):
            raise ConfigError(f"crf must be a CRFConfig or a mapping, got {type(self.crf).__name__}")
        if not isinstance(self.method, str) or not self.method:
            raise ConfigError(f"post-processing method must be a non-empty name, got {self.method!r}")
        if not isinstance(self.components, str) or not self.components:
            raise ConfigError(f"component filter must be a non-empty name, got {self.components!r}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(
                f"threshold must lie in [0, 1] (saliency maps are normalised), got {self.threshold!r}"
            )
        self.num_components = integer_at_least("num_components", self.num_components, minimum=1)
        self.num_components_paired = integer_at_least("num_components_paired", self.num_components_paired, minimum=0)
        self.min_size = integer_at_least("min_size (pixels)", self.min_size, minimum=0)
        if self.connectivity not in CONNECTIVITIES:
            raise ConfigError(f"connectivity must be 4 or 8, got {self.connectivity!r}")
        self.connectivity = int(self.connectivity)

    def for_prompt(self, prompts: str | Sequence[str]) -> "PostprocessConfig":
        """This configuration as it applies to ``prompts``: ``num_components_paired`` components for
        a prompt naming a paired structure when it is set, else unchanged."""
        if self.num_components_paired and names_paired_structure(prompts):
            return dataclasses.replace(self, num_components=self.num_components_paired)
        return self


def _crf_from_mapping(values: dict[str, Any]) -> CRFConfig:
    try:
        return CRFConfig(**values)
    except TypeError as exc:
        raise ConfigError(f"invalid CRF configuration {values!r}: {exc}") from None
