"""The one place where a run's settings are resolved: preset, model cards, the user's settings.

:class:`Settings` is the root configuration: the 2D pipeline's section
(:class:`~medclipsam.config.PipelineConfig`: saliency method and parameters, post-processing,
visual prompts, SAM stage) and the volume engine's (:class:`~medclipsam.volume.config.VolumeConfig`:
presence gate, 3D consistency, propagation, batching). :func:`resolve_settings` builds it for
every entry point — ``segment``, ``segment-series``, the demo, the MONAI Label server, the
benchmarks — in the same order:

1. the preset (``v1`` / ``v2``);
2. the settings the models' cards recommend (``pipeline_overrides`` in a model card: a small demo
   model's M2IB layer, or rules chosen on the phantoms the demo models were trained for, such as
   turning propagation on), each announced in a note;
3. the user's ``KEY=VALUE`` settings, which always win.

A key's first part says its section: a field of :class:`~medclipsam.config.PipelineConfig` or a
registered saliency method (``m2ib.beta``) goes to the pipeline, one of
:data:`~medclipsam.volume.config.VOLUME_SETTINGS` (``presence.threshold``, ``propagation.enabled``)
to the volume engine; ``pipeline.`` / ``volume.`` prefixes are accepted too.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .config import PipelineConfig, apply_overrides
from .errors import CheckpointError, ConfigError
from .volume.config import VOLUME_SETTINGS, VolumeConfig

CARD_SETTINGS_KEY = "pipeline_overrides"        # the model card's object of KEY: VALUE settings


@dataclass
class Settings:
    """The root configuration of a run."""

    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    volume: VolumeConfig = field(default_factory=VolumeConfig)


def split_settings(pairs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``KEY=VALUE`` settings → (the pipeline's, the volume engine's), prefixes removed; a key that
    belongs to neither is refused, listing both sections' keys."""
    pipeline_names = set(PipelineConfig.setting_names())
    pipeline: dict[str, Any] = {}
    volume: dict[str, Any] = {}
    for key, value in pairs.items():
        section, k = _split_prefix(str(key).strip())
        head = k.partition(".")[0]
        if head in VOLUME_SETTINGS and section in (None, "volume"):
            volume[k] = value
        elif head in pipeline_names and section in (None, "pipeline"):
            pipeline[k] = value
        else:
            raise ConfigError(f"unknown setting '{key}'; settings start with one of: "
                              f"{', '.join(sorted(pipeline_names))} (the 2D pipeline) or "
                              f"{', '.join(VOLUME_SETTINGS)} (the volume engine)")
    return pipeline, volume


def card_settings(model: Any) -> dict[str, str]:
    """The settings a model's card recommends (``{}`` without a card or recommendations)."""
    card = getattr(model, "card", None) or {}
    values = card.get(CARD_SETTINGS_KEY) or {}
    if not isinstance(values, Mapping):
        raise CheckpointError(f"the model card of {getattr(model, 'spec', model)} has '{CARD_SETTINGS_KEY}' that is "
                              "not an object of KEY: VALUE settings; fix the card")
    return {str(k): str(v) for k, v in values.items()}


def resolve_settings(preset: str = "v2", models: Sequence[Any] = (), overrides: Mapping[str, Any] | None = None,
                     volume: VolumeConfig | None = None) -> tuple[Settings, list[str]]:
    """The settings of a run and the notes on what the model cards changed.

    ``overrides`` are the user's ``KEY=VALUE`` settings (both sections); ``volume`` is the volume
    section the caller's own options built (slice range, ROI, batch size), the cards' and user's
    volume settings applied on top. Raises :class:`~medclipsam.errors.ConfigError` for an unknown
    key or a bad value, naming it.
    """
    user = {str(k).strip(): v for k, v in dict(overrides or {}).items()}
    user_keys = {_split_prefix(k)[1] for k in user}
    notes: list[str] = []
    recommended: dict[str, str] = {}
    for m in models:
        taken = {k: v for k, v in card_settings(m).items() if _split_prefix(k)[1] not in user_keys}
        if taken:
            notes.append(f"settings recommended by the model card of {getattr(m, 'spec', type(m).__name__)}: "
                         + ", ".join(f"{k}={v}" for k, v in taken.items()))
            recommended.update(taken)
    pipeline_pairs, volume_pairs = split_settings({**recommended, **user})
    pipeline = PipelineConfig.from_preset(preset, pipeline_pairs)
    base = dataclasses.replace(volume) if volume is not None else VolumeConfig()
    return Settings(pipeline, apply_overrides(base, volume_pairs)), notes


def _split_prefix(key: str) -> tuple[str | None, str]:
    """``("volume", "presence.threshold")`` for ``volume.presence.threshold``; ``(None, key)`` unprefixed."""
    head, _, rest = key.partition(".")
    return (head, rest) if head in ("pipeline", "volume") and rest else (None, key)


__all__ = ["Settings", "resolve_settings", "split_settings", "card_settings",
           "CARD_SETTINGS_KEY"]
