"""The shipped demo models on held-out phantoms: saliency sanity, presence similarity, the whole
pipeline end to end, and ``medclipsam demo`` (issue 4).

Held-out data: phantom seeds the recipes never used (training: CLIP seeds 0 and 100 003, SAM 0 and
1 000 003; ``benchmarks/phantom_eval.py`` seeds from 10 000). The thresholds are the issue's goals;
where a test runs fewer examples than the benchmark, it says what margin it allows.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from medclipsam.demo import DEMO_CLIP, DEMO_SAM, check_demo_models
from medclipsam.evaluation import roc_auc

from project import ROOT, project_module

HELD_OUT = 424_242

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")




@pytest.fixture(scope="module")
def demo_clip():
    check_demo_models()            # shipped with the package: a missing model is a failure, not a skip
    from medclipsam.models import load_clip

    return load_clip(DEMO_CLIP)


@pytest.fixture(scope="module")
def held_out():
    from medclipsam.phantoms import training_slices

    return training_slices(HELD_OUT, 160)


def _similarities(clip, images, prompts) -> dict[str, np.ndarray]:
    """cos(image, prompt) as the slice engine's presence gate computes it."""
    import torch
    import torch.nn.functional as F

    from medclipsam.image import clip_input

    pixels = torch.cat([clip_input(im, clip.image_size, clip.mean, clip.std)[0] for im in images])
    with torch.no_grad():
        img = F.normalize(clip.encode_image(pixels).float(), dim=-1)
        txt = F.normalize(clip.encode_text(list(prompts)).float(), dim=-1)
    cos = (img @ txt.T).numpy()
    return {p: cos[:, j] for j, p in enumerate(prompts)}


def _m2ib_config(clip):
    from medclipsam.demo import demo_pipeline_config

    return demo_pipeline_config(clip).m2ib


def test_demo_models_are_demo_models(demo_clip):
    from medclipsam.models import load_sam
    from medclipsam.models.cards import DEMO_NOTICE

    sam = load_sam(DEMO_SAM)
    assert demo_clip.demo and sam.demo
    assert not demo_clip.random_weights and demo_clip.architecture == "demo"
    assert demo_clip.card["notice"] == DEMO_NOTICE == sam.card["notice"]


def test_shipped_clip_card_recommends_what_its_recipe_writes(demo_clip):
    """The shipped card's pipeline settings are the recipe's (a re-run of the recipe gives the same)."""
    clip_demo = project_module("training", "clip_demo")
    overrides = demo_clip.card["pipeline_overrides"]
    assert overrides == clip_demo.pipeline_recommendations(int(overrides["m2ib.layer"]))


def test_shipped_sam_card_has_its_recipes_prompt_sampling_and_settings():
    """The shipped SAM's card records the recipe's default prompt sampling (a re-run samples alike)."""
    import dataclasses

    from medclipsam.models import load_sam

    sam_demo = project_module("training", "sam_demo")
    card = load_sam(DEMO_SAM).card
    defaults = json.loads(json.dumps(dataclasses.asdict(sam_demo.PromptSampling())))   # tuples → lists
    assert card["training"]["prompt_sampling"] == defaults
    assert card["pipeline_overrides"] == sam_demo.RECOMMENDED_SETTINGS


@pytest.fixture(scope="module")
def pointing_game():
    """benchmarks/pointing_game.py and its report sets' slices (826060-826065: 62 lung-tumour
    slices; picked after the demo CLIP was shipped, scored once with it and used for no choice —
    the earlier report sets 424242, 424248-424252 were seen before the choice, RESULTS.md
    2026-12-08; a 9-slice set cannot measure a rate of 0.9)."""
    pg = project_module("benchmarks", "pointing_game")
    return pg, pg.held_out_slices(pg.REPORT_SETS)


@pytest.mark.parametrize("case", ["brain", "lungs", "brain-tumor", "lung-tumor", "left-lung", "right-lung"])
def test_m2ib_points_at_the_named_structure(demo_clip, pointing_game, case):
    """Pointing game: the peak of the M2IB saliency map for the prompt lies on the named structure
    (within one token, 8 px, of it), on held-out slices that also show another structure."""
    pg, slices = pointing_game
    c = {c.name: c for c in pg.CASES}[case]
    hits = pg.pointing_hits(demo_clip, slices, c)
    assert len(hits) >= 40, f"only {len(hits)} held-out slices show {c.structure} and {c.other}"
    assert np.mean(hits) >= 0.9, f"pointing game {np.mean(hits):.3f} ({sum(hits)} of {len(hits)}) for {c.prompt!r}"


def test_absent_structure_scores_lower_than_a_present_one(demo_clip, held_out):
    """On CT slices without a tumour, cos(image, "tumor") < cos(image, "spine") (the spine is on
    every slice); over all held-out CT slices, "tumor" scores higher where a tumour is (AUC)."""
    ct = [s for s in held_out if s.kind == "ct-chest" and "tumor" not in s.hidden]  # hidden: neither
    sims = _similarities(demo_clip, [np.asarray(s.rgb) for s in ct], ["tumor", "spine"])
    has_spine = np.array([s.mask("spine").any() for s in ct])
    has_tumour = np.array([s.mask("tumor").any() for s in ct])
    sel = has_spine & ~has_tumour
    assert sel.sum() >= 10
    assert np.mean(sims["tumor"][sel] < sims["spine"][sel]) >= 0.9
    pos, neg = sims["tumor"][has_tumour], sims["tumor"][~has_tumour]
    assert pos.size >= 3 and neg.size >= 3
    auc = roc_auc(np.concatenate([pos, neg]), np.arange(pos.size + neg.size) < pos.size)
    assert auc >= 0.85, f"tumour presence AUC {auc:.3f} on {pos.size}+{neg.size} held-out CT slices"


@pytest.fixture(scope="module")
def end_to_end() -> dict[str, float]:
    """The whole zero-shot pipeline with the demo models on 2 fresh phantom CT series (the benchmark
    runs 8); the tests below allow 0.05 below the issue's goals (0.80, 0.80, 0.90)."""
    evaluate = project_module("benchmarks", "phantom_eval").evaluate
    return evaluate(seed=3, n=2, clip_spec=DEMO_CLIP, sam_spec=DEMO_SAM, verbose=False)


def test_end_to_end_lungs(end_to_end):
    assert end_to_end["lung_dice"] >= 0.75, end_to_end


def test_end_to_end_left_and_right_lung(end_to_end):
    """"left lung" finds the left lung, not either one (the "lungs" Dice cannot tell)."""
    assert end_to_end["left_lung_dice"] >= 0.75, end_to_end
    assert end_to_end["right_lung_dice"] >= 0.75, end_to_end


def test_end_to_end_tumour(end_to_end):
    """0.847 on these 2 series (CLIP 16, twelfth round); the benchmark's 8 series per seed: 0.804–0.910
    on seeds 0 / 1 / 2 / 3 / 7 / 100 / 101 (benchmarks/RESULTS.md)."""
    assert end_to_end["tumor_dice"] >= 0.75, end_to_end


def test_end_to_end_presence_gate(end_to_end):
    assert end_to_end["gate_auc"] >= 0.85, end_to_end


def test_demo_command_writes_seg_nifti_montage_and_report(tmp_path, capsys):
    import pydicom
    from PIL import Image

    from medclipsam.cli import main
    from medclipsam.models.cards import DEMO_NOTICE
    from medclipsam.volume.itk_io import read_volume

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr()
    assert "DEMO MODEL" in printed.err and DEMO_NOTICE in printed.err
    last = printed.out.strip().splitlines()[-1]
    assert last.startswith("slices=32 processed=")
    for name in ("labels.nii.gz", "seg.dcm", "montage.png", "report.json"):
        assert (out / name).is_file(), name
        assert str(out / name) in printed.out
    seg = pydicom.dcmread(out / "seg.dcm")
    assert seg.Modality == "SEG" and seg.SeriesDescription == DEMO_NOTICE
    assert seg.SegmentSequence[0].SegmentLabel == "tumor"
    assert "settings recommended by the model card of local-dir:" in printed.err and "m2ib.layer=3" in printed.err
    assert "propagation.enabled=true" in printed.err
    label = read_volume(out / "labels.nii.gz").array
    truth = read_volume(ROOT / "sample-data" / "phantoms" / "ct_chest_labels.nii.gz").array == 1
    assert label.shape == truth.shape and (label > 0).sum() > 0
    assert ((label > 0) & truth).sum() > 0          # it finds the tumour (how well: the end-to-end test)
    montage = np.asarray(Image.open(out / "montage.png"))
    assert montage.ndim == 3 and montage.shape[0] > 100 and montage.shape[1] > 300
    report = json.loads((out / "report.json").read_text())
    assert any("DEMO MODEL" in w for w in report["warnings"])


def test_demo_short_specs_name_the_shipped_models():
    """``--clip demo`` / ``--sam demo`` load the shipped demo models (issue 24, item 7)."""
    from medclipsam.demo import DEMO_CLIP, DEMO_SAM, check_demo_models
    from medclipsam.models import load_clip, load_sam
    from medclipsam.models.shipped import expand_clip_spec, expand_sam_spec

    check_demo_models()
    assert expand_clip_spec("demo") == DEMO_CLIP and expand_sam_spec(" demo ") == DEMO_SAM
    assert expand_clip_spec("random:tiny") == "random:tiny" and expand_sam_spec("vit_b:random") == "vit_b:random"
    clip, sam = load_clip("demo"), load_sam("demo")
    assert clip.demo and sam.demo and clip.spec == DEMO_CLIP
    assert sam.identity()["architecture"] == "demo"
