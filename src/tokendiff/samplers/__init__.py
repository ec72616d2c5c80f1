"""Reverse loops and their strategies."""

from tokendiff.samplers.autoregressive import AutoregressiveSampler
from tokendiff.samplers.masked import MaskedDiffusionSampler, row_generators

__all__ = ["MaskedDiffusionSampler", "AutoregressiveSampler", "row_generators"]
