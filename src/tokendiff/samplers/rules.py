"""The step rules by name: ``sampling.strategy`` picks one, ``sampling.remask=cap`` replaces it by ReMDM's.

A new rule: one file with its class (:class:`tokendiff.samplers.step.StepRule`), its name in
:data:`tokendiff.samplers.settings.Strategy`, and one line here.
"""

from __future__ import annotations

from tokendiff.errors import TokenDiffError
from tokendiff.processes.base import Kernel
from tokendiff.samplers.ancestral import AncestralStep
from tokendiff.samplers.block_refinement import BlockRefinementStep
from tokendiff.samplers.confidence import ConfidenceStep
from tokendiff.samplers.ddim import DDIMStep
from tokendiff.samplers.entropy_bound import EntropyBoundStep
from tokendiff.samplers.remasking import RemaskingStep
from tokendiff.samplers.settings import STRATEGIES, SamplingSettings
from tokendiff.samplers.step import StepRule
from tokendiff.samplers.threshold import ThresholdStep

__all__ = ["STEP_RULES", "step_rule", "fitting_strategies"]

STEP_RULES = {
    "ancestral": AncestralStep,
    "confidence": ConfidenceStep,
    "threshold": ThresholdStep,
    "block_refinement": BlockRefinementStep,
    "entropy_bound": EntropyBoundStep,
    "ddim": DDIMStep,
}
assert tuple(STEP_RULES) == STRATEGIES  # one rule per strategy name, in the order the settings list them


def step_rule(kernel: Kernel, settings: SamplingSettings) -> StepRule:
    """The rule of ``settings`` for ``kernel`` (its constructor refuses a kernel it cannot follow)."""
    if settings.remask == "cap":
        return RemaskingStep(kernel, settings)
    return STEP_RULES[settings.strategy](kernel, settings)


def fitting_strategies(kernel: Kernel) -> list[str]:
    """The strategies whose rule follows ``kernel`` with the default settings (the demo's choices)."""
    names = []
    for name, rule in STEP_RULES.items():
        try:
            rule(kernel, SamplingSettings(strategy=name))
        except TokenDiffError:
            continue
        names.append(name)
    return names
