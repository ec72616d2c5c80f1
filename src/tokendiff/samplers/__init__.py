"""Reverse loops and their strategies."""

from tokendiff.samplers.autoregressive import AutoregressiveSampler
from tokendiff.samplers.diffusion import DiffusionSampler, row_generators

__all__ = ["DiffusionSampler", "AutoregressiveSampler", "row_generators"]
