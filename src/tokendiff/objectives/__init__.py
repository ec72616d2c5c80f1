"""Training objectives: what a batch is scored with. Diffusion objectives wrap a kernel."""

from tokendiff.objectives.ambient import AmbientObjective
from tokendiff.objectives.autoregressive import AutoregressiveObjective
from tokendiff.objectives.base import Objective
from tokendiff.objectives.block import BlockDiffusionObjective
from tokendiff.objectives.clean import CleanObjective
from tokendiff.objectives.naive import NaiveObjective

__all__ = [
    "Objective",
    "CleanObjective",
    "NaiveObjective",
    "AmbientObjective",
    "AutoregressiveObjective",
    "BlockDiffusionObjective",
    "likelihood_objective",
]


EVAL_T_MIN = 1e-3  # the default eval.t_min: MDLM's


def likelihood_objective(objective: Objective, t_min: float = EVAL_T_MIN) -> Objective:
    """The estimator that evaluation uses for a model trained with ``objective``: the clean NELBO of its
    kernel with the ``time`` estimator at evaluation's own ``t_min`` (``eval.t_min``, not the training
    one, so that no training setting can make the reported bound look better than it is), with times
    drawn independently for every sequence (the antithetic times of training would tie sequence ``n`` to
    the same time stratum in every draw, a bias that the standard error could not show). The
    autoregressive objective is exact and used as it is."""
    if objective.kernel is None:
        return objective
    if isinstance(objective, BlockDiffusionObjective):  # the sum of the blocks' NELBOs
        return BlockDiffusionObjective(objective.kernel, objective.block_size, t_min=t_min, antithetic=False)
    return CleanObjective(objective.kernel, t_min=t_min, antithetic=False, estimator="time")
