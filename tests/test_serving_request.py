"""The served app's vocabulary and request handling (issue 5), without models or a server."""

from __future__ import annotations

import json

import pytest

from medclipsam.errors import ConfigError, InputError
from medclipsam.serving.request import default_config, first, parse_options, resolve_targets, with_window
from medclipsam.serving.vocabulary import load_vocabulary, vocabulary_from_dict


@pytest.fixture(scope="module")
def vocab():
    return load_vocabulary()


def test_default_vocabulary_values_and_prompted_last(vocab):
    labels = vocab.labels()
    assert list(labels.values()) == list(range(1, len(labels) + 1))
    assert labels["prompted"] == len(labels) and labels["left lung"] == 2
    e = vocab.find("Left_Lung")
    assert e is not None and e.snomed.code == "44029006"
    assert vocab.find("tumour").name == "tumor"


def test_free_text_and_vocabulary_prompts(vocab):
    t = resolve_targets({"prompt": "Left lung; a round mass ;tumour; another thing"}, vocab)
    assert [(x.name, x.value) for x in t] == [("left lung", 2), ("a round mass", 9), ("tumor", 4),
                                              ("another thing", 10)]
    assert t[1].entry is None and t[0].entry is vocab.find("left lung")


def test_ohif_label_prompt_maps_to_vocabulary_values(vocab):
    t = resolve_targets({"label_prompt": [4, 1], "prompt": "tumor"}, vocab)      # duplicate dropped
    assert [(x.name, x.value) for x in t] == [("tumor", 4), ("lungs", 1)]
    assert [x.value for x in resolve_targets({"label_prompt": "3"}, vocab)] == [3]
    with pytest.raises(ConfigError, match="names no label"):
        resolve_targets({"label_prompt": [42]}, vocab)


@pytest.mark.parametrize("request_", [{}, {"slices": "12:18"}, {"prompt": ""}, {"prompt": " ; "}, {"prompt": ["", "x"]},
                                      {"prompt": None}, {"label_prompt": []}, {"label_prompt": [], "prompt": " "},
                                      {"prompt": "", "result_extension": ".nrrd", "restore_label_idx": False}])
def test_empty_prompt_is_a_clear_error(vocab, request_):
    # 3D Slicer sends every option, so an empty prompt arrives as "": the 400 names the fix
    with pytest.raises(InputError, match="no text prompt"):
        resolve_targets(request_, vocab)


@pytest.mark.parametrize("request_", [{"restore_label_idx": False},
                                      {"result_extension": ".nrrd", "result_dtype": "uint8",
                                       "result_compress": False, "restore_label_idx": False},
                                      {"slices": "12:18", "preset": ["v2", "v1"], "restore_label_idx": False}])
def test_a_request_that_names_no_target_gets_the_vocabulary(vocab, request_, caplog):
    # OHIF's Auto-Segmentation with the options as shown: no 'prompt' key, no 'label_prompt'
    with caplog.at_level("INFO", logger="medclipsam.serving.request"):
        t = resolve_targets(request_, vocab)
    assert [(x.name, x.value) for x in t] == [(e.name, e.value) for e in vocab.entries]
    assert all(x.entry is vocab.find(x.name) for x in t)
    assert "names no target" in caplog.text and "Class Prompts" in caplog.text


def test_the_vocabulary_default_is_capped_at_max_targets(caplog):
    from medclipsam.serving.request import MAX_TARGETS

    big = vocabulary_from_dict({"labels": [{"name": f"organ {i}", "prompts": [f"organ {i}"]}
                                           for i in range(MAX_TARGETS + 3)]})
    with caplog.at_level("INFO", logger="medclipsam.serving.request"):
        t = resolve_targets({"restore_label_idx": False}, big)
    assert [x.value for x in t] == list(range(1, MAX_TARGETS + 1))
    assert f"organ {MAX_TARGETS + 2}" in caplog.text and "left out" in caplog.text


def test_prompted_is_not_a_target(vocab):
    with pytest.raises(InputError, match="free-text"):
        resolve_targets({"prompt": "prompted"}, vocab)


def test_options_as_slicer_and_ohif_send_them():
    # Slicer: every key, lists reduced to the selected item, bools as bools
    slicer = {**{k: first(v) for k, v in default_config().items()}, "prompt": "liver", "postprocess": "crf",
              "gate": False, "presence_threshold": "0.25", "set": "m2ib.beta=2; consistency.keep=largest"}
    o = parse_options(slicer)
    assert (o.postprocess, o.gate, o.presence_threshold) == ("crf", False, 0.25)
    assert o.engine_overrides() == {"postprocess.method": "crf", "presence.threshold": "0.25",
                                    "presence.enabled": "false", "m2ib.beta": "2", "consistency.keep": "largest"}
    # OHIF: only edited keys; an unedited list arrives whole (= its first item); text booleans
    o = parse_options({"window": default_config()["window"], "gate": "true", "visual_prompts": "points"})
    assert (o.window, o.gate, o.visual_prompts, o.presence_threshold) == ("auto", True, "points", None)
    assert o.engine_overrides() == {"prompts.kind": "points"}


@pytest.mark.parametrize("bad,match", [({"preset": "v9"}, "preset"), ({"gate": "maybe"}, "true or false"),
                                       ({"presence_threshold": "high"}, "not a number"),
                                       ({"presence_threshold": "3"}, "cosine"), ({"set": "beta2"}, "KEY=VALUE"),
                                       ({"slices": "a:b"}, "START:STOP"), ({"window": "ct-liver"}, "window")])
def test_bad_options_name_the_option(bad, match):
    with pytest.raises(ConfigError, match=match):
        parse_options(bad)


def test_window_option_overrides_every_target(vocab):
    t = resolve_targets({"prompt": "lungs; tumor"}, vocab)
    assert [x.window for x in with_window(t, parse_options({"window": "ct-bone"}))] == ["ct-bone", "ct-bone"]
    assert [x.window for x in with_window(t, parse_options({}))] == ["auto", "auto"]


def test_vocabulary_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_vocabulary(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not readable JSON"):
        load_vocabulary(bad)
    for data, match in [({"labels": []}, "at least one"), ({"labels": [{"name": "a"}, {"name": "A"}]}, "twice"),
                        ({"labels": [{"name": "prompted"}]}, "generic"),
                        ({"labels": [{"name": "a", "window": "nope"}]}, "window preset"),
                        ({"labels": [{"name": "a", "snomed": {"code": "1"}}]}, "meaning"),
                        ({"labels": [{"name": "a", "color": [1, 2]}]}, "R, G, B")]:
        with pytest.raises(ConfigError, match=match):
            vocabulary_from_dict(data, "test")
    good = tmp_path / "v.json"
    good.write_text(json.dumps({"labels": [{"name": "kidney", "prompts": ["kidney", "renal"]}]}))
    v = load_vocabulary(good)
    assert v.labels() == {"kidney": 1, "prompted": 2} and v.entries[0].prompt == ["kidney", "renal"]
