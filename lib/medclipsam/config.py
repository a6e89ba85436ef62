"""Pipeline configuration: one dataclass per stage, presets, and ``key=value`` overrides.

Presets (algorithms.md §13):

* ``v1`` — MedCLIP-SAM: gScoreCAM → dense CRF (v1 parameters) → largest component → its box → SAM.
* ``v2`` — MedCLIP-SAMv2: M2IB (block 9, β 1) → Otsu → largest component → one box per component → SAM.

Every field can be overridden with a dotted key, e.g. ``m2ib.beta=2``, ``postprocess.method=kmeans``,
``prompts.kind=points``, ``saliency=gradcam`` (``--set`` on the command line).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from .errors import ConfigError
from .postprocess import CRFConfig, PostprocessConfig
from .prompts import PromptConfig
from .registry import Registry
from .sam_stage import SamStageConfig
from .saliency import SALIENCY_METHODS, GradCAMConfig, GScoreCAMConfig, M2IBConfig


@dataclass
class PipelineConfig:
    preset: str = "v2"
    saliency: str = "m2ib"
    m2ib: M2IBConfig = field(default_factory=M2IBConfig)
    gscorecam: GScoreCAMConfig = field(default_factory=GScoreCAMConfig)
    gradcam: GradCAMConfig = field(default_factory=GradCAMConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    prompts: PromptConfig = field(default_factory=PromptConfig)
    sam: SamStageConfig = field(default_factory=SamStageConfig)

    def __post_init__(self) -> None:
        SALIENCY_METHODS.get(self.saliency)  # unknown names fail here, listing the known ones

    def saliency_params(self) -> Any:
        """The parameter dataclass of the selected saliency method (field named after the method)."""
        params = getattr(self, self.saliency, None)
        return params if params is not None else SALIENCY_METHODS.get(self.saliency).config_cls()

    @classmethod
    def from_preset(cls, name: str, overrides: Mapping[str, Any] | None = None) -> "PipelineConfig":
        cfg = PRESETS.get(name)()
        return apply_overrides(cfg, overrides or {})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PRESETS: Registry[Callable[[], PipelineConfig]] = Registry("preset")


@PRESETS.register("v1")
def preset_v1() -> PipelineConfig:
    return PipelineConfig(
        preset="v1", saliency="gscorecam",
        postprocess=PostprocessConfig(method="crf", crf=CRFConfig.v1(), components="largest", num_components=1),
        prompts=PromptConfig(kind="boxes"))


@PRESETS.register("v2")
def preset_v2() -> PipelineConfig:
    return PipelineConfig(
        preset="v2", saliency="m2ib", m2ib=M2IBConfig(layer=9, beta=1.0),
        postprocess=PostprocessConfig(method="otsu", crf=CRFConfig.v2(), components="largest", num_components=1,
                                      num_components_paired=2),
        prompts=PromptConfig(kind="boxes"))


def _convert(raw: Any, current: Any, key: str) -> Any:
    if not isinstance(raw, str):
        return raw
    text = raw.strip()
    try:
        if isinstance(current, bool):
            low = text.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"'{raw}' is not a boolean")
        if isinstance(current, int):
            return int(text)
        if isinstance(current, float):
            return float(text)
        if isinstance(current, (list, tuple)):
            value = json.loads(text) if text.startswith("[") else [t.strip() for t in text.split(",") if t.strip()]
            return type(current)(value)
        if current is None:
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                return text
    except ValueError as e:
        raise ConfigError(f"cannot set {key}={raw}: expected a {type(current).__name__} ({e})") from None
    return text


def _set(obj: Any, path: list[str], raw: Any, key: str) -> Any:
    if not dataclasses.is_dataclass(obj):
        raise ConfigError(f"cannot set '{key}': '{path[0]}' is inside a value, not a section")
    names = {f.name for f in dataclasses.fields(obj)}
    name = path[0]
    if name not in names:
        raise ConfigError(f"unknown setting '{key}'; '{type(obj).__name__}' has: {', '.join(sorted(names))}")
    current = getattr(obj, name)
    value = _set(current, path[1:], raw, key) if len(path) > 1 else _convert(raw, current, key)
    try:
        return dataclasses.replace(obj, **{name: value})
    except (TypeError, ValueError) as e:
        raise ConfigError(f"cannot set {key}={raw}: {e}") from None


def apply_overrides(cfg: PipelineConfig, overrides: Mapping[str, Any]) -> PipelineConfig:
    """Return a copy of ``cfg`` with dotted-key overrides applied (validated by each dataclass)."""
    for key, raw in overrides.items():
        cfg = _set(cfg, key.split("."), raw, key)
    return cfg


def parse_overrides(items: list[str] | None) -> dict[str, str]:
    """``["m2ib.beta=2", ...]`` → ``{"m2ib.beta": "2"}``."""
    out: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"a setting must look like KEY=VALUE (e.g. m2ib.beta=2), got '{item}'")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out
