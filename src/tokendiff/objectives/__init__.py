"""Training objectives: what a batch is scored with. Diffusion objectives wrap a kernel."""

from tokendiff.objectives.ambient import AmbientObjective
from tokendiff.objectives.autoregressive import AutoregressiveObjective
from tokendiff.objectives.base import Objective
from tokendiff.objectives.clean import CleanObjective
from tokendiff.objectives.naive import NaiveObjective

__all__ = [
    "Objective",
    "CleanObjective",
    "NaiveObjective",
    "AmbientObjective",
    "AutoregressiveObjective",
    "likelihood_objective",
]


def likelihood_objective(objective: Objective) -> Objective:
    """The estimator that evaluation uses for a model trained with ``objective``: the clean NELBO of its
    kernel at the same ``t_min``, with times drawn independently for every sequence (the antithetic times
    of training would tie sequence ``n`` to the same time stratum in every draw, a bias that the standard
    error could not show). The autoregressive objective is exact and used as it is."""
    if objective.kernel is None:
        return objective
    return CleanObjective(objective.kernel, t_min=objective.t_min, antithetic=False)
