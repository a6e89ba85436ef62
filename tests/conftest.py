"""Shared fixtures: tiny random-initialised models that take the same code paths as the full ones."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

warnings.filterwarnings("ignore", category=FutureWarning)


@pytest.fixture(scope="session")
def tiny_clip():
    from medclipsam.models import load_clip

    return load_clip("random:tiny")


@pytest.fixture(scope="session")
def tiny_sam():
    from medclipsam.models import load_sam

    return load_sam("tiny:random")


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_clip, tiny_sam):
    """Preset v2 with the tiny random models, M2IB cut short (3 steps, 2 samples) for speed."""
    from medclipsam.config import PipelineConfig
    from medclipsam.pipeline import Pipeline

    return Pipeline(tiny_clip, tiny_sam, PipelineConfig.from_preset("v2", {"m2ib.layer": "2", "m2ib.steps": "3",
                                                                           "m2ib.samples": "2"}))


@pytest.fixture
def disk_image() -> np.ndarray:
    """A non-square 8-bit RGB image with a bright disk (rows 40±18, cols 100±18) on noise."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:90, :160]
    g = (30 + 20 * rng.random((90, 160))).astype(np.float32)
    g[(yy - 40) ** 2 + (xx - 100) ** 2 < 18 ** 2] = 220
    return np.repeat(g.astype(np.uint8)[..., None], 3, axis=2)
