"""Training objectives: what a batch is scored with. Diffusion objectives wrap a kernel."""

from tokendiff.objectives.ambient import AmbientObjective
from tokendiff.objectives.autoregressive import AutoregressiveObjective
from tokendiff.objectives.base import Objective
from tokendiff.objectives.block import BlockDiffusionObjective
from tokendiff.objectives.clean import CleanObjective
from tokendiff.objectives.naive import NaiveObjective
from tokendiff.objectives.response import ResponseObjective

__all__ = [
    "Objective",
    "CleanObjective",
    "NaiveObjective",
    "AmbientObjective",
    "AutoregressiveObjective",
    "BlockDiffusionObjective",
    "ResponseObjective",
    "likelihood_objective",
]


EVAL_T_MIN = 1e-3  # the default eval.t_min: where the bound's part below MDLM's cut is reported apart


def likelihood_objective(objective: Objective) -> Objective:
    """The estimator that evaluation uses for a model trained with ``objective``: the clean NELBO of its
    kernel, whose ``bound_terms`` cover every time in (0, 1] and the t = 0 term (:mod:`tokendiff.objectives.bound`)
    whatever the training ``t_min``, so that no training setting can make the reported bound look better
    than it is, with times drawn independently for every sequence (the antithetic times of training would
    tie sequence ``n`` to the same time stratum in every draw, a bias that the standard error could not
    show). The autoregressive objective is exact and used as it is (``loss_terms``)."""
    if objective.kernel is None:
        return objective
    if isinstance(objective, ResponseObjective):  # the response's NELBO given its prompt
        return ResponseObjective(objective.kernel, t_min=0.0, antithetic=False, estimator="time")
    if isinstance(objective, BlockDiffusionObjective):  # the sum of the blocks' NELBOs
        return BlockDiffusionObjective(objective.kernel, objective.block_size, t_min=0.0, antithetic=False)
    return CleanObjective(objective.kernel, t_min=0.0, antithetic=False, estimator="time")
