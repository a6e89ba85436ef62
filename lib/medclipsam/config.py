"""Pipeline configuration: one dataclass per stage, presets, and ``key=value`` overrides.

Presets (docs/algorithms.md §Presets):

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
from .saliency import SALIENCY_METHODS, M2IBConfig
from .sam_stage import SamStageConfig


def _plain(params: Any) -> Any:
    if dataclasses.is_dataclass(params) and not isinstance(params, type):
        return dataclasses.asdict(params)
    return dict(params) if isinstance(params, Mapping) else repr(params)


def _method_defaults() -> dict[str, Any]:
    return {name: SALIENCY_METHODS.get(name).config_cls() for name in SALIENCY_METHODS}


@dataclass
class PipelineConfig:
    """The 2D pipeline's settings: the saliency method and each registered method's parameters
    (``methods``, keyed by the method's registered name, so a new method needs no field here: its
    parameters are set as ``<name>.<field>=VALUE`` and read as ``config.<name>``), then one section
    per later stage."""

    preset: str = "v2"
    saliency: str = "m2ib"
    methods: dict[str, Any] = field(default_factory=_method_defaults)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    prompts: PromptConfig = field(default_factory=PromptConfig)
    sam: SamStageConfig = field(default_factory=SamStageConfig)

    def __post_init__(self) -> None:
        SALIENCY_METHODS.get(self.saliency)  # unknown names fail here, listing the known ones
        methods = _method_defaults()
        for name, params in dict(self.methods).items():
            entry = SALIENCY_METHODS.get(name)
            if not isinstance(params, entry.config_cls):
                raise ConfigError(f"the parameters of saliency method '{name}' must be a "
                                  f"{entry.config_cls.__name__}, got {type(params).__name__}")
            methods[entry.name] = params
        self.methods = methods

    def __getattr__(self, name: str) -> Any:
        # config.m2ib, config.gscorecam, ...: the parameters of a registered saliency method
        methods = self.__dict__.get("methods")
        if methods is not None and name in methods:
            return methods[name]
        raise AttributeError(f"'{type(self).__name__}' has no attribute '{name}'")

    def saliency_params(self) -> Any:
        """The parameter dataclass of the selected saliency method."""
        return self.methods[SALIENCY_METHODS.get(self.saliency).name]

    def with_method(self, name: str, params: Any) -> "PipelineConfig":
        """A copy with the parameters of saliency method ``name`` replaced."""
        return dataclasses.replace(self, methods={**self.methods, SALIENCY_METHODS.get(name).name: params})

    @classmethod
    def from_preset(cls, name: str, overrides: Mapping[str, Any] | None = None) -> "PipelineConfig":
        cfg = PRESETS.get(name)()
        return apply_overrides(cfg, overrides or {})

    def to_dict(self) -> dict[str, Any]:
        """Plain data, each method's parameters under its name (``{"m2ib": {...}, ...}``)."""
        out = {f.name: dataclasses.asdict(getattr(self, f.name)) if dataclasses.is_dataclass(getattr(self, f.name))
               else getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "methods"}
        out.update({name: _plain(params) for name, params in self.methods.items()})
        return out

    @staticmethod
    def setting_names() -> list[str]:
        """The first parts of the keys this section takes (its fields and the registered methods)."""
        return sorted({f.name for f in dataclasses.fields(PipelineConfig) if f.name != "methods"}
                      | set(SALIENCY_METHODS.names()))


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
        preset="v2", saliency="m2ib", methods={"m2ib": M2IBConfig(layer=9, beta=1.0)},
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
    if isinstance(obj, PipelineConfig) and path[0] in SALIENCY_METHODS:
        if len(path) == 1:
            raise ConfigError(f"cannot set '{key}': '{path[0]}' is a section (set e.g. {path[0]}.<field>=VALUE)")
        name = SALIENCY_METHODS.get(path[0]).name
        return obj.with_method(name, _set(obj.methods[name], path[1:], raw, key))
    if not dataclasses.is_dataclass(obj):
        raise ConfigError(f"cannot set '{key}': '{path[0]}' is inside a value, not a section")
    names = {f.name for f in dataclasses.fields(obj)} - {"methods"}
    name = path[0]
    if name not in names:
        known = PipelineConfig.setting_names() if isinstance(obj, PipelineConfig) else sorted(names)
        raise ConfigError(f"unknown setting '{key}'; '{type(obj).__name__}' has: {', '.join(known)}")
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
