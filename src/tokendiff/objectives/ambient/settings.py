"""The ambient losses' settings: one validated record, checked here once with the message the CLI prints.

:class:`~tokendiff.objectives.ambient.objective.AmbientObjective` builds it from its arguments, and the
config's ``ambient`` section builds it from its keys (:meth:`tokendiff.configs.sections.AmbientConfig.settings`),
so that a bad ``ambient.<key>=...`` is refused before any work with the same message either way. What ties a
setting to the kernel or to another setting is the objective's to check.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal, get_args

from tokendiff.errors import TokenDiffError

__all__ = ["AmbientSettings", "HARD_LOSSES", "DIVERGENCES", "AMBIENT_KEYS"]

HardLoss = Literal["consistency", "imputation", "em"]
Divergence = Literal["kl", "squared"]
HARD_LOSSES: tuple[str, ...] = get_args(HardLoss)
DIVERGENCES: tuple[str, ...] = get_args(Divergence)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise TokenDiffError(message)


@dataclass(frozen=True)
class AmbientSettings:
    """How the ambient objective splits a batch and runs its hard loss (the arguments of
    :class:`~tokendiff.objectives.ambient.objective.AmbientObjective`, which documents each)."""

    consistency_weight: float = 1.0
    descent_steps: int = 2
    easy_fraction: float = 0.5
    hard_loss: HardLoss = "consistency"
    divergence: Divergence = "kl"
    hard_start: float = 0.0
    hard_batch: float = 0.0
    imputed_weight: float = 1.0
    impute_rounds: int = 16
    refresh: float = 0.25
    gibbs_share: float = 0.1
    consistency_reveal: float = 0.0
    consistency_max_masked: float = 1.0

    def __post_init__(self):
        _check(self.consistency_weight >= 0, f"ambient.consistency_weight={self.consistency_weight} must be >= 0")
        _check(self.descent_steps >= 1, f"ambient.descent_steps={self.descent_steps} must be >= 1")
        _check(0.0 <= self.hard_start < 1.0, f"ambient.hard_start={self.hard_start} must lie in [0, 1), e.g. 0.3")
        _check(
            0.0 < self.easy_fraction <= 1.0,
            f"ambient.easy_fraction={self.easy_fraction} must lie in (0, 1], e.g. 0.5",
        )
        _check(
            self.hard_loss in HARD_LOSSES,
            f"ambient.hard_loss={self.hard_loss!r} is unknown; use consistency, imputation or em",
        )
        for name in ("hard_batch", "imputed_weight", "refresh"):
            value = getattr(self, name)
            _check(0.0 <= value <= 1.0, f"ambient.{name}={value} must lie in [0, 1]")
        _check(self.impute_rounds >= 1, f"ambient.impute_rounds={self.impute_rounds} must be >= 1, e.g. 16")
        _check(0.0 < self.gibbs_share <= 1.0, f"ambient.gibbs_share={self.gibbs_share} must lie in (0, 1]")
        _check(
            0.0 <= self.consistency_reveal < 1.0,
            f"ambient.consistency_reveal={self.consistency_reveal} must lie in [0, 1), e.g. 0.25",
        )
        _check(
            self.divergence in DIVERGENCES,
            f"ambient.divergence={self.divergence!r} is unknown; use squared or kl",
        )
        _check(
            0.0 < self.consistency_max_masked <= 1.0,
            f"ambient.consistency_max_masked={self.consistency_max_masked} must lie in (0, 1], e.g. 0.5",
        )


AMBIENT_KEYS: tuple[str, ...] = tuple(f.name for f in fields(AmbientSettings))
