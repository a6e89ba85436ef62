"""The volume engine's settings (:class:`VolumeConfig`) and the parsers of its range options.

The sections ``presence``, ``consistency`` and ``propagation`` are the stages' own dataclasses; the
rest are the engine's batching and orientation knobs. :data:`VOLUME_SETTINGS` names what a
``KEY=VALUE`` setting may address here (the rest belongs to the 2D pipeline,
:class:`~medclipsam.config.PipelineConfig`); :func:`medclipsam.settings.resolve_settings` routes
settings to the two.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..checks import integer_at_least
from ..errors import ConfigError
from .consistency import ConsistencyConfig
from .presence import PresenceConfig
from .propagation import PropagationConfig

SALIENCY_BATCH_MAX = 64          # the most (slice, prompt) pairs one saliency call may take
# (slice, prompt) pairs per call of a batched saliency method (M2IB) when VolumeConfig.saliency_batch
# is 0 (auto). CPU, measured with full-size BiomedCLIP (random weights, layer 9, 10 steps × 10 samples)
# on a 2-core Xeon: CPU seconds per pair 16.6-18.7 one at a time, 15.0 in pairs, 12.8-14.0 in fours,
# 13.7 in eights, peak RSS +0.8 GB at 4 and +1.5 GB at 8 over one at a time: 4 takes the gain without
# the memory of 8. CUDA: not measured here (no GPU); one pair is only 10 noisy copies of one image,
# far too little work for a GPU, and 16 pairs (160 sequences per step) is a batch the size of the
# similarity pass's 64 full forward passes; at layer 9 its activations for backward are a few GB
# (benchmarks/m2ib_speed.py --slices N --device cuda prints the peak), set saliency_batch to go lower.
SALIENCY_BATCH_CPU = 4
SALIENCY_BATCH_CUDA = 16


@dataclass
class VolumeConfig:
    presence: PresenceConfig = field(default_factory=PresenceConfig)
    consistency: ConsistencyConfig = field(default_factory=ConsistencyConfig)
    propagation: PropagationConfig = field(default_factory=PropagationConfig)
    batch_size: int = 0                           # SAM slices per batch; 0: CPU 1, CUDA fitted to free memory
    slice_range: tuple[int, int] | None = None    # [start, stop) in sorted slice order; None: all
    roi: tuple[int, int, int, int] | None = None  # (x0, y0, x1, y1) pixels (columns, rows) of the stored grid,
                                                  # half-open
    autocast: bool = True                         # bf16 autocast on CUDA
    max_batch_size: int = 16
    inspect: int = 0                              # keep every stage's output on this many present slices
                                                  # per prompt (plus one judged absent), for montages
    reorient: bool = True                         # show the models each slice as a viewer does (radiological
                                                  # convention, volume/display.py); labels stay on the stored grid
    saliency_batch: int = 0                       # (slice, prompt) pairs per saliency call for a method with a
                                                  # batch form (M2IB); 0: SALIENCY_BATCH_CPU / _CUDA

    def __post_init__(self) -> None:
        integer_at_least("batch_size", self.batch_size, 0)
        integer_at_least("saliency_batch", self.saliency_batch, 0)
        if self.saliency_batch > SALIENCY_BATCH_MAX:        # a request may set it: bound its memory
            raise ConfigError(f"saliency_batch must be at most {SALIENCY_BATCH_MAX} (0: automatic), got "
                              f"{self.saliency_batch}")
        integer_at_least("max_batch_size", self.max_batch_size, 1)
        integer_at_least("inspect", self.inspect, 0)


def parse_slice_range(text: str | None) -> tuple[int, int] | None:
    """``"START:STOP"`` (0-based, STOP exclusive; either may be empty) → a tuple with None for open ends."""
    if text is None:
        return None
    parts = text.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        start = int(parts[0]) if parts[0].strip() else 0
        stop = int(parts[1]) if parts[1].strip() else -1
    except ValueError:
        raise ConfigError(f"slice range {text!r} must be START:STOP (0-based, STOP exclusive), e.g. 10:40") from None
    return start, stop


def parse_roi(text: str | None) -> tuple[int, int, int, int] | None:
    """``"X0,Y0,X1,Y1"`` in pixels (columns, rows; X1/Y1 exclusive)."""
    if text is None:
        return None
    try:
        values = tuple(int(v) for v in text.split(","))
        if len(values) != 4:
            raise ValueError
    except ValueError:
        raise ConfigError(f"ROI {text!r} must be X0,Y0,X1,Y1 in pixels (column/row, X1 and Y1 exclusive)") from None
    return values  # type: ignore[return-value]


# the sections and fields a KEY=VALUE setting may address (slice_range, roi, batch_size, autocast,
# max_batch_size and inspect are set by their own options)
VOLUME_SETTINGS = ("presence", "consistency", "propagation", "reorient", "saliency_batch")
