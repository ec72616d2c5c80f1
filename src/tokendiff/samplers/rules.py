"""The step rules by name: ``sampling.strategy`` picks one, ``sampling.remask=cap`` replaces it by ReMDM's.

A new rule: one file with its class (:class:`tokendiff.samplers.step.StepRule`), its name in
:data:`tokendiff.samplers.settings.Strategy`, and one line here.
"""

from __future__ import annotations

from tokendiff.processes.base import Kernel
from tokendiff.samplers.ancestral import AncestralStep
from tokendiff.samplers.confidence import ConfidenceStep
from tokendiff.samplers.remasking import RemaskingStep
from tokendiff.samplers.settings import STRATEGIES, SamplingSettings
from tokendiff.samplers.step import StepRule
from tokendiff.samplers.threshold import ThresholdStep

__all__ = ["STEP_RULES", "step_rule"]

STEP_RULES = {"ancestral": AncestralStep, "confidence": ConfidenceStep, "threshold": ThresholdStep}
assert tuple(STEP_RULES) == STRATEGIES  # one rule per strategy name, in the order the settings list them


def step_rule(kernel: Kernel, settings: SamplingSettings) -> StepRule:
    """The rule of ``settings`` for ``kernel`` (its constructor refuses a kernel it cannot follow)."""
    if settings.remask == "cap":
        return RemaskingStep(kernel, settings)
    return STEP_RULES[settings.strategy](kernel, settings)
