"""Known-answer tests for coarse mask -> visual prompts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medclipsam.errors import ConfigError, InputError, UnknownMethodError
from medclipsam.prompts import VISUAL_PROMPT_TYPES, PromptConfig, VisualPrompts, make_visual_prompts


def rect_mask(shape: tuple[int, int], *rects: tuple[int, int, int, int]) -> np.ndarray:
    """Mask with inclusive rectangles (row0, row1, col0, col1)."""
    mask = np.zeros(shape, dtype=bool)
    for r0, r1, c0, c1 in rects:
        mask[r0 : r1 + 1, c0 : c1 + 1] = True
    return mask


def test_box_of_a_rectangle_on_a_non_square_image() -> None:
    mask = rect_mask((40, 70), (5, 9, 20, 49))
    prompts = make_visual_prompts(mask, PromptConfig(kind="boxes"))
    assert prompts.boxes.dtype == np.float32 and prompts.boxes.shape == (1, 4)
    np.testing.assert_array_equal(prompts.boxes, [[20, 5, 49, 9]])
    assert prompts.num_components == 1
    assert prompts.points.shape == (0, 2) and prompts.point_labels.shape == (0,)
    assert not prompts.empty


def test_boxes_one_per_component_inside_the_image() -> None:
    # second rectangle touches the bottom-right corner: its box ends on the last column and row
    mask = rect_mask((40, 70), (2, 4, 3, 10), (30, 39, 60, 69))
    prompts = make_visual_prompts(mask, PromptConfig(kind="boxes"))
    np.testing.assert_array_equal(prompts.boxes, [[3, 2, 10, 4], [60, 30, 69, 39]])
    assert prompts.num_components == 2


def test_single_box_around_all_foreground() -> None:
    mask = rect_mask((40, 70), (5, 9, 20, 29), (15, 20, 40, 49))
    prompts = make_visual_prompts(mask, PromptConfig(kind="box"))
    np.testing.assert_array_equal(prompts.boxes, [[20, 5, 49, 20]])
    assert prompts.num_components == 2


def test_points_inside_foreground_unique_and_deterministic() -> None:
    mask = rect_mask((40, 70), (5, 9, 20, 49), (25, 30, 5, 10))
    cfg = PromptConfig(kind="points", num_points=25, seed=3)
    prompts = make_visual_prompts(mask, cfg)
    assert prompts.points.dtype == np.float32 and prompts.points.shape == (25, 2)
    assert prompts.point_labels.dtype == np.int64 and (prompts.point_labels == 1).all()
    xs, ys = prompts.points[:, 0].astype(int), prompts.points[:, 1].astype(int)
    assert mask[ys, xs].all()
    assert len({(x, y) for x, y in zip(xs, ys)}) == 25
    again = make_visual_prompts(mask, cfg)
    np.testing.assert_array_equal(prompts.points, again.points)
    other = make_visual_prompts(mask, PromptConfig(kind="points", num_points=25, seed=4))
    assert not np.array_equal(prompts.points, other.points)
    assert prompts.boxes.shape == (0, 4) and not prompts.empty


def test_fewer_pixels_than_points_gives_all_pixels() -> None:
    mask = np.zeros((8, 12), dtype=bool)
    mask[2, 3] = mask[5, 7] = mask[6, 11] = True
    prompts = make_visual_prompts(mask, PromptConfig(kind="points", num_points=10))
    assert sorted(map(tuple, prompts.points.astype(int).tolist())) == [(3, 2), (7, 5), (11, 6)]


def test_negative_points_in_background() -> None:
    mask = rect_mask((30, 50), (10, 19, 10, 39))
    prompts = make_visual_prompts(mask, PromptConfig(kind="points", num_points=5, num_negative_points=7, seed=1))
    assert prompts.points.shape == (12, 2)
    np.testing.assert_array_equal(prompts.point_labels, [1] * 5 + [0] * 7)
    xs, ys = prompts.points[:, 0].astype(int), prompts.points[:, 1].astype(int)
    assert mask[ys[:5], xs[:5]].all()
    assert not mask[ys[5:], xs[5:]].any()


def test_boxes_plus_points() -> None:
    mask = rect_mask((40, 70), (5, 9, 20, 49), (20, 25, 2, 6))
    cfg = PromptConfig(kind="boxes+points", num_points=4, seed=0)
    prompts = make_visual_prompts(mask, cfg)
    boxes = make_visual_prompts(mask, PromptConfig(kind="boxes"))
    points = make_visual_prompts(mask, PromptConfig(kind="points", num_points=4, seed=0))
    np.testing.assert_array_equal(prompts.boxes, boxes.boxes)
    np.testing.assert_array_equal(prompts.points, points.points)
    np.testing.assert_array_equal(prompts.point_labels, points.point_labels)
    assert prompts.num_components == 2


@pytest.mark.parametrize("kind", ["boxes", "box", "points", "boxes+points"])
def test_empty_mask_gives_no_prompts(kind: str) -> None:
    prompts = make_visual_prompts(np.zeros((16, 24), dtype=bool), PromptConfig(kind=kind, num_negative_points=3))
    assert prompts.empty
    assert prompts.boxes.shape == (0, 4) and prompts.points.shape == (0, 2)
    assert prompts.num_components == 0


def test_visual_prompts_none_and_to_dict() -> None:
    none = VisualPrompts.none()
    assert none.empty and none.to_dict() == {"boxes": [], "points": [], "point_labels": [], "num_components": 0}
    negatives_only = VisualPrompts(points=[[1, 2]], point_labels=[0], num_components=1)
    assert negatives_only.empty
    prompts = make_visual_prompts(rect_mask((40, 70), (5, 9, 20, 49)), PromptConfig(kind="boxes+points", num_points=2))
    data = json.loads(json.dumps(prompts.to_dict()))
    assert data["boxes"] == [[20.0, 5.0, 49.0, 9.0]]
    assert len(data["points"]) == 2 and data["point_labels"] == [1, 1] and data["num_components"] == 1


def test_integer_zero_one_mask_is_accepted() -> None:
    mask = rect_mask((40, 70), (5, 9, 20, 49)).astype(np.uint8)
    np.testing.assert_array_equal(make_visual_prompts(mask, PromptConfig()).boxes, [[20, 5, 49, 9]])


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (np.zeros((4, 4, 3), dtype=bool), "2-D"),
        (np.full((4, 4), 2, dtype=np.uint8), "0 and 1"),
        ([[True, False]], "numpy array"),
    ],
)
def test_bad_mask_raises_input_error(mask: object, message: str) -> None:
    with pytest.raises(InputError, match=message):
        make_visual_prompts(mask, PromptConfig())  # type: ignore[arg-type]


def test_bad_prompt_config() -> None:
    assert VISUAL_PROMPT_TYPES.names() == ["box", "boxes", "boxes+points", "points"]
    with pytest.raises(UnknownMethodError, match="boxes"):
        make_visual_prompts(np.ones((4, 4), dtype=bool), PromptConfig(kind="scribbles"))
    with pytest.raises(ConfigError, match="num_points"):
        PromptConfig(num_points=0)
    with pytest.raises(ConfigError, match="connectivity"):
        PromptConfig(connectivity=5)
