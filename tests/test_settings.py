"""One configuration path (issue 24, items 1–2): :func:`medclipsam.settings.resolve_settings` gives
every entry point the same root configuration — preset, then what the model cards recommend
(announced), then the user's settings, which win — with the 2D pipeline's and the volume engine's
sections routed by key; saliency parameters are keyed by the registered method; propagation is off
unless a card (the demo CLIP's) or the user turns it on."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import pytest

from medclipsam.config import PipelineConfig
from medclipsam.errors import CheckpointError, ConfigError
from medclipsam.settings import Settings, resolve_settings, split_settings
from medclipsam.volume.config import VolumeConfig


def model(spec: str, **settings: str) -> SimpleNamespace:
    return SimpleNamespace(spec=spec, card={"pipeline_overrides": settings} if settings else {})


def test_defaults_without_cards_or_settings():
    settings, notes = resolve_settings()
    assert isinstance(settings, Settings) and notes == []
    assert settings.pipeline == PipelineConfig.from_preset("v2")
    assert settings.volume == VolumeConfig()
    assert settings.volume.propagation.enabled is False        # phantom-chosen rules: off by default


def test_cards_then_user_each_section_routed():
    clip = model("clip-x", **{"m2ib.layer": "3", "propagation.enabled": "true", "presence.saliency_ratio": "0.3"})
    sam = model("sam-y", **{"sam.box_clip": "0.1", "m2ib.layer": "4"})
    settings, notes = resolve_settings("v2", (clip, sam), {"presence.saliency_ratio": "0", "volume.reorient": "false",
                                                           "pipeline.m2ib.beta": "2"})
    assert settings.pipeline.m2ib.layer == 4                  # the later card wins on a shared key
    assert settings.pipeline.m2ib.beta == 2.0 and settings.pipeline.sam.box_clip == 0.1
    assert settings.volume.propagation.enabled is True and settings.volume.reorient is False
    assert settings.volume.presence.saliency_ratio == 0.0      # the user's value beats the card's
    assert notes == ["settings recommended by the model card of clip-x: m2ib.layer=3, propagation.enabled=true",
                     "settings recommended by the model card of sam-y: sam.box_clip=0.1, m2ib.layer=4"]


def test_base_volume_section_keeps_the_callers_options():
    base = VolumeConfig(slice_range=(2, 5), batch_size=3)
    settings, _ = resolve_settings("v1", (), {"consistency.keep": "largest"}, base)
    assert settings.volume.slice_range == (2, 5) and settings.volume.batch_size == 3
    assert settings.volume.consistency.keep == "largest" and settings.pipeline.preset == "v1"
    assert base.consistency.keep != "largest"                  # the caller's object is not changed


@pytest.mark.parametrize("key", ["foo.bar", "slice_range", "inspect", "volume.inspect", "methods.m2ib", "m2ib",
                                 "pipeline.presence.threshold"])
def test_unknown_or_unsettable_keys_are_refused(key):
    with pytest.raises(ConfigError) as err:
        resolve_settings("v2", (), {key: "1"})
    assert key.split(".")[-1] in str(err.value) or key in str(err.value)


def test_unknown_key_lists_both_sections():
    with pytest.raises(ConfigError) as err:
        split_settings({"nonsense.x": "1"})
    msg = str(err.value)
    assert "m2ib" in msg and "postprocess" in msg and "presence" in msg and "propagation" in msg


def test_bad_card_is_named():
    with pytest.raises(CheckpointError, match="clip-z"):
        resolve_settings("v2", (SimpleNamespace(spec="clip-z", card={"pipeline_overrides": ["m2ib.layer=3"]}),), {})


def test_saliency_parameters_keyed_by_the_registered_method():
    """A method registered anywhere gets its parameters in the configuration without an edit of it."""
    from medclipsam.saliency import SALIENCY_METHODS, register_saliency

    @dataclass
    class ToyConfig:
        strength: float = 1.0

    @register_saliency("toy_method", ToyConfig, "a test method")
    def toy(clip, pixels, text_embedding, params):       # pragma: no cover - never run
        raise AssertionError

    try:
        cfg = PipelineConfig.from_preset("v2", {"saliency": "toy_method", "toy_method.strength": "2.5"})
        assert cfg.saliency_params() == ToyConfig(2.5) and cfg.toy_method.strength == 2.5
        assert cfg.to_dict()["toy_method"] == {"strength": 2.5}
        assert cfg.m2ib.layer == 9                              # the others keep their preset values
        with pytest.raises(ConfigError, match="unknown setting 'toy_method.nope'"):
            PipelineConfig.from_preset("v2", {"toy_method.nope": "1"})
    finally:
        SALIENCY_METHODS._items.pop("toy_method", None)


def test_demo_clip_card_turns_propagation_on():
    """The demo models' phantom-chosen rule lives on their card; a real model does not inherit it."""
    from medclipsam.demo import DEMO_CLIP, check_demo_models
    from medclipsam.models import load_clip

    check_demo_models()
    clip = load_clip(DEMO_CLIP)
    demo, notes = resolve_settings("v2", (clip,), {})
    assert demo.volume.propagation.enabled is True and demo.pipeline.m2ib.layer == 3
    assert any("propagation.enabled=true" in n for n in notes)
    off, _ = resolve_settings("v2", (clip,), {"propagation.enabled": "false"})
    assert off.volume.propagation.enabled is False
    real, _ = resolve_settings("v2", (model("litemedsam"),), {})
    assert real.volume.propagation.enabled is False and real.pipeline.m2ib.layer == 9


def test_segment_refuses_volume_settings(tmp_path, capsys):
    """``segment`` runs single images: a volume setting has nothing to act on and is named, not ignored."""
    from pathlib import Path

    from medclipsam.cli import main

    image = Path(__file__).resolve().parents[1] / "sample-data" / "images" / "us_breast_lesion.png"
    code = main(["segment", str(image), "--prompt", "lesion", "--clip", "random:tiny", "--sam", "tiny:random",
                 "--out", str(tmp_path / "o"), "--set", "propagation.enabled=true"])
    assert code == 2
    err = capsys.readouterr().err
    assert "propagation.enabled" in err and "segment-series" in err
    assert not (tmp_path / "o").exists()
