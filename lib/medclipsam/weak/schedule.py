"""The cyclic learning rate of MedCLIP-SAMv2's weakly supervised stage, done as the paper says.

The paper (``docs/algorithms.md`` §Weak-paper) splits E epochs into D cycles whose learning rate
oscillates between a maximum and a minimum, and ensembles the last checkpoints of every cycle. Its
code (§Weak-schedule) divides each cycle's decay by the *total* epoch count, so the rate only falls from 0.01
to ≈0.0085 — almost constant, and the checkpoints of a cycle barely differ. Here every cycle
restarts at ``lr_max`` and decays to ``lr_min`` over *its own* length (cosine annealing with warm
restarts, stepped per iteration), so the end of each cycle is a converged, distinct model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ConfigError


@dataclass(frozen=True)
class CyclicSchedule:
    epochs: int                 # total epochs E
    cycles: int                 # D: E must be a multiple of D
    lr_max: float = 3e-3       # AdamW's (the trainer's default); nnU-Net's SGD: 1e-2
    lr_min: float = 3e-5
    keep_per_cycle: int = 2     # checkpoints kept at the end of each cycle (ensemble = cycles × keep)

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.cycles < 1:
            raise ConfigError(f"epochs ({self.epochs}) and cycles ({self.cycles}) must be at least 1")
        if self.epochs % self.cycles:
            raise ConfigError(f"{self.epochs} epochs do not split into {self.cycles} equal cycles; "
                              "choose epochs as a multiple of cycles "
                              f"(e.g. {self.cycles * max(1, self.epochs // self.cycles)})")
        if not 0 < self.lr_min <= self.lr_max:
            raise ConfigError(f"need 0 < lr_min ({self.lr_min}) <= lr_max ({self.lr_max})")
        if not 1 <= self.keep_per_cycle <= self.cycle_length:
            raise ConfigError(f"keep_per_cycle {self.keep_per_cycle} must be 1..{self.cycle_length} "
                              "(the epochs of one cycle)")

    @property
    def cycle_length(self) -> int:
        return self.epochs // self.cycles

    def lr(self, epoch: int, fraction: float = 0.0) -> float:
        """The rate at ``epoch`` (0-based) plus ``fraction`` (0..1) of it: ``lr_max`` at each cycle's
        start, ``lr_min`` at its end."""
        t = (epoch % self.cycle_length + fraction) / self.cycle_length
        return self.lr_min + 0.5 * (self.lr_max - self.lr_min) * (1.0 + math.cos(math.pi * min(t, 1.0)))

    def cycle(self, epoch: int) -> int:
        return epoch // self.cycle_length

    def keeps(self, epoch: int) -> bool:
        """Whether the checkpoint after ``epoch`` joins the ensemble (the last ``keep_per_cycle`` of a cycle)."""
        return epoch % self.cycle_length >= self.cycle_length - self.keep_per_cycle

    @property
    def ensemble_size(self) -> int:
        return self.cycles * self.keep_per_cycle
