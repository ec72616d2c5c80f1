"""Masked diffusion learned from corrupted data (ambient training).

Setting (``shared/notes/ambient.md``): each training sequence ``x`` was observed only partly, as
``y``: each token kept with probability ``q`` (``observed_fraction``), else the mask. Since masking is
independent of values, ``y`` has exactly the law of ``x_{t_n}`` with ``alpha(t_n) = q``.

A share of each batch (``easy_fraction``) gets the easy loss, the rest the hard loss
(:class:`~tokendiff.objectives.ambient.objective.AmbientObjective` draws the levels and splits the rows):

* ``t >= t_n``, the **easy loss** (:mod:`~tokendiff.objectives.ambient.easy`): exact, an unbiased estimate
  of the clean-data NELBO integrand from ``y`` alone.
* ``t < t_n``, no data exists: ``hard_loss`` picks one estimator, one file each:
  ``consistency`` (the default; :mod:`~tokendiff.objectives.ambient.consistency`), the tower property of
  the true conditionals; ``imputation`` (:mod:`~tokendiff.objectives.ambient.imputation`), Monte Carlo EM
  with fresh imputations; ``em`` (:mod:`~tokendiff.objectives.ambient.em`), Monte Carlo EM with a
  persistent imputation buffer. The model's own draws that they need come from
  :func:`~tokendiff.objectives.ambient.fill.fill`.

``hard_batch > 0`` keeps the easy loss on the whole batch every step and adds the hard loss on a sub-batch
of that share of the rows, so the data levels never lose rows to the hard loss.

The naive baseline (:mod:`tokendiff.objectives.naive`) treats ``y`` as clean data whose masked tokens
are simply not scored.
"""

from tokendiff.objectives.ambient.objective import AmbientObjective, level_of_alpha
from tokendiff.objectives.ambient.settings import AmbientSettings

__all__ = ["AmbientObjective", "AmbientSettings", "level_of_alpha"]
