"""Known-answer tests for saliency map -> coarse mask."""

from __future__ import annotations

import numpy as np
import pytest

from medclipsam.errors import ConfigError, InputError, UnknownMethodError
from medclipsam.postprocess import (
    BINARIZATION_METHODS,
    COMPONENT_FILTERS,
    CRFConfig,
    PostprocessConfig,
    count_components,
    keep_largest_components,
    label_components,
    largest_filter,
    make_coarse_mask,
    names_paired_structure,
    otsu_threshold,
    two_means_threshold,
)


def disk(shape: tuple[int, int], center: tuple[float, float], radius: float) -> np.ndarray:
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    return (rows - center[0]) ** 2 + (cols - center[1]) ** 2 <= radius**2


def gray_image(shape: tuple[int, int], value: int = 128) -> np.ndarray:
    return np.full((*shape, 3), value, dtype=np.uint8)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


# --------------------------------------------------------------------------- thresholds


def test_otsu_threshold_between_two_clusters() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.uniform(0.10, 0.20, 500), rng.uniform(0.70, 0.85, 300)])
    t = otsu_threshold(values)
    assert 0.20 <= t < 0.70
    assert ((values > t) == (values >= 0.5)).all()


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_two_means_agrees_with_otsu_within_one_bin(seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = np.clip(np.concatenate([rng.normal(0.3, 0.08, 6000), rng.normal(0.7, 0.08, 4000)]), 0, 1)
    bin_width = (values.max() - values.min()) / 256
    assert abs(two_means_threshold(values) - otsu_threshold(values)) <= bin_width
    assert 0.4 < two_means_threshold(values) < 0.6


def test_constant_values_thresholds() -> None:
    assert otsu_threshold(np.full(10, 0.4)) == pytest.approx(0.4)
    assert two_means_threshold(np.full(10, 0.4)) == pytest.approx(0.4)
    with pytest.raises(ConfigError):
        otsu_threshold(np.arange(5.0), bins=1)


@pytest.mark.parametrize("method", ["otsu", "kmeans", "threshold"])
def test_bright_disk_is_recovered_exactly(method: str) -> None:
    shape = (64, 80)
    target = disk(shape, (30, 45), 12)
    saliency = np.where(target, 0.9, 0.1)
    cfg = PostprocessConfig(method=method, threshold=0.3)
    mask = make_coarse_mask(saliency, gray_image(shape), cfg)
    assert mask.dtype == bool and mask.shape == shape
    np.testing.assert_array_equal(mask, target)


@pytest.mark.parametrize("method", ["otsu", "kmeans"])
def test_constant_saliency_gives_empty_mask(method: str) -> None:
    mask = make_coarse_mask(np.full((20, 30), 0.7), gray_image((20, 30)), PostprocessConfig(method=method))
    assert mask.shape == (20, 30) and not mask.any()


def test_threshold_method_uses_configured_threshold() -> None:
    saliency = np.array([[0.2, 0.5, 0.8]])
    image = gray_image((1, 3))
    cfg = PostprocessConfig(method="threshold", threshold=0.5, components="all")
    np.testing.assert_array_equal(make_coarse_mask(saliency, image, cfg), [[False, False, True]])


# --------------------------------------------------------------------------- dense CRF


def test_crf_config_versions() -> None:
    assert CRFConfig.v1() == CRFConfig()
    v2 = CRFConfig.v2()
    assert (v2.gaussian_sxy, v2.bilateral_sxy, v2.bilateral_srgb) == (5, 5, 3)
    assert (v2.gaussian_compat, v2.bilateral_compat, v2.iterations, v2.tau, v2.eps) == (3, 5, 1, 1.05, 1e-8)
    with pytest.raises(ConfigError):
        CRFConfig(iterations=0)
    assert PostprocessConfig(crf={"gaussian_sxy": 5}).crf.gaussian_sxy == 5


@pytest.mark.parametrize("crf", [CRFConfig.v1(), CRFConfig.v2()], ids=["v1", "v2"])
def test_crf_recovers_smooth_disk(crf: CRFConfig) -> None:
    shape = (64, 64)
    target = disk(shape, (32, 30), 14)
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    dist = np.sqrt((rows - 32) ** 2 + (cols - 30) ** 2)
    saliency = 1.0 / (1.0 + np.exp((dist - 14) / 2.0))  # smooth, ~0.5 on the disk boundary
    rng = np.random.default_rng(0)
    base = np.where(target, 170.0, 80.0)[..., None]
    image = np.clip(base + rng.normal(0, 15, (*shape, 3)), 0, 255).astype(np.uint8)
    cfg = PostprocessConfig(method="crf", crf=crf, components="all")
    mask = make_coarse_mask(saliency, image, cfg)
    assert mask.dtype == bool and mask.shape == shape
    assert dice(mask, target) > 0.9


def test_crf_all_salient_gives_all_foreground() -> None:
    shape = (24, 32)
    image = np.random.default_rng(1).integers(0, 256, (*shape, 3), dtype=np.uint8)
    cfg = PostprocessConfig(method="crf", components="all")
    assert make_coarse_mask(np.full(shape, 0.99), image, cfg).all()


# --------------------------------------------------------------------------- components


def three_disks() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    shape = (60, 120)
    big = disk(shape, (30, 25), 15)
    medium = disk(shape, (30, 70), 10)
    small = disk(shape, (30, 105), 5)
    return big, medium, small, big | medium | small


def test_largest_keeps_the_k_biggest() -> None:
    big, medium, small, mask = three_disks()
    saliency = mask.astype(float)
    one = COMPONENT_FILTERS.get("largest")(mask, saliency, PostprocessConfig(num_components=1))
    two = COMPONENT_FILTERS.get("largest")(mask, saliency, PostprocessConfig(num_components=2))
    np.testing.assert_array_equal(one, big)
    np.testing.assert_array_equal(two, big | medium)
    np.testing.assert_array_equal(keep_largest_components(mask, 2), big | medium)
    np.testing.assert_array_equal(keep_largest_components(mask, 5), mask)


def test_largest_ties_broken_by_lower_label() -> None:
    mask = np.zeros((5, 9), dtype=bool)
    mask[1:3, 1:3] = True
    mask[1:3, 5:7] = True
    expected = np.zeros_like(mask)
    expected[1:3, 1:3] = True
    np.testing.assert_array_equal(keep_largest_components(mask, 1), expected)


def test_confidence_filter_uses_mean_saliency() -> None:
    big, medium, small, mask = three_disks()
    saliency = np.zeros(mask.shape)
    saliency[big] = 0.4  # large but not confident
    saliency[medium] = 0.8
    saliency[small] = 0.6
    cfg = PostprocessConfig(components="confidence", confidence_threshold=0.5)
    np.testing.assert_array_equal(COMPONENT_FILTERS.get("confidence")(mask, saliency, cfg), medium | small)
    cfg = PostprocessConfig(components="confidence", confidence_threshold=0.7)
    np.testing.assert_array_equal(COMPONENT_FILTERS.get("confidence")(mask, saliency, cfg), medium)


def test_confidence_filter_end_to_end() -> None:
    big, medium, small, mask = three_disks()
    saliency = np.where(mask, 0.6, 0.05)
    saliency[medium] = 0.95
    cfg = PostprocessConfig(method="threshold", threshold=0.3, components="confidence", confidence_threshold=0.9)
    np.testing.assert_array_equal(make_coarse_mask(saliency, gray_image(mask.shape), cfg), medium)


def test_four_versus_eight_connectivity() -> None:
    mask = np.zeros((4, 4), dtype=bool)
    mask[1, 1] = mask[2, 2] = True
    assert count_components(mask, connectivity=4) == 2
    assert count_components(mask, connectivity=8) == 1
    labels, count = label_components(mask, 4)
    assert count == 2 and set(np.unique(labels)) == {0, 1, 2}
    with pytest.raises(ConfigError):
        count_components(mask, connectivity=6)


def test_min_size_drops_small_components() -> None:
    big, medium, small, mask = three_disks()
    saliency = mask.astype(float)
    min_size = int(small.sum()) + 1
    kept = COMPONENT_FILTERS.get("all")(mask, saliency, PostprocessConfig(min_size=min_size))
    np.testing.assert_array_equal(kept, big | medium)
    assert COMPONENT_FILTERS.get("all")(mask, saliency, PostprocessConfig()).sum() == mask.sum()
    cfg = PostprocessConfig(num_components=3, min_size=min_size)
    np.testing.assert_array_equal(COMPONENT_FILTERS.get("largest")(mask, saliency, cfg), big | medium)


# --------------------------------------------------------------------------- validation


def test_registries_list_methods() -> None:
    assert BINARIZATION_METHODS.names() == ["crf", "kmeans", "otsu", "threshold"]
    assert COMPONENT_FILTERS.names() == ["all", "confidence", "largest"]
    with pytest.raises(UnknownMethodError, match="otsu"):
        make_coarse_mask(np.zeros((4, 4)), gray_image((4, 4)), PostprocessConfig(method="watershed"))


@pytest.mark.parametrize(
    ("saliency", "image", "message"),
    [
        (np.zeros((4, 4, 1)), gray_image((4, 4)), "2-D"),
        (np.full((4, 4), np.nan), gray_image((4, 4)), "NaN"),
        (np.full((4, 4), 3.0), gray_image((4, 4)), r"\[0, 1\]"),
        (np.zeros((4, 4)), np.zeros((4, 4, 3), dtype=np.float32), r"uint8.*got dtype float32"),
        (np.zeros((4, 4)), np.zeros((4, 4), dtype=np.uint8), r"\(H, W, 3\)"),
        (np.zeros((4, 4)), gray_image((4, 5)), "same H x W"),
        ([[0.1, 0.2]], gray_image((1, 2)), "numpy array"),
    ],
)
def test_bad_input_raises_input_error(saliency: object, image: np.ndarray, message: str) -> None:
    with pytest.raises(InputError, match=message):
        make_coarse_mask(saliency, image, PostprocessConfig())  # type: ignore[arg-type]


def test_bad_config_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="connectivity"):
        PostprocessConfig(connectivity=6)
    with pytest.raises(ConfigError, match="num_components"):
        PostprocessConfig(num_components=0)
    with pytest.raises(ConfigError, match="num_components_paired"):
        PostprocessConfig(num_components_paired=-1)
    with pytest.raises(ConfigError, match="min_size"):
        PostprocessConfig(min_size=-1)


@pytest.mark.parametrize("prompts, paired", [
    ("lungs", True), ("both lungs", True), ("the Lungs", True), ("both kidneys", True), (["lungs", "both lungs"], True),
    ("lung", False), ("left lung", False), ("tumor", False), ("lung tumor", False), (["lungs", "tumor"], False),
    ([], False), ("", False),
])
def test_paired_structures_are_named_by_plural_organ_words(prompts, paired) -> None:
    assert names_paired_structure(prompts) is paired


def test_for_prompt_keeps_two_components_for_a_paired_structure_only() -> None:
    cfg = PostprocessConfig(num_components=1, num_components_paired=2)
    assert cfg.for_prompt("lungs").num_components == 2 and cfg.num_components == 1    # a copy, cfg unchanged
    assert cfg.for_prompt("tumor") is cfg and cfg.for_prompt("left lung").num_components == 1
    plain = PostprocessConfig(num_components=3)                                           # 0: no paired rule
    assert plain.for_prompt("lungs") is plain
    # the filter then keeps that many: two lungs in a mask survive for "lungs", one for "tumor"
    mask = np.zeros((20, 30), bool)
    mask[2:18, 2:12] = True
    mask[4:16, 18:27] = True
    sal = mask.astype(float)
    assert count_components(largest_filter(mask, sal, cfg.for_prompt("lungs"))) == 2
    assert count_components(largest_filter(mask, sal, cfg.for_prompt("tumor"))) == 1
