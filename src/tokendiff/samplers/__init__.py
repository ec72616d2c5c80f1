"""Reverse loops and their strategies: the loop (:mod:`.diffusion`), its settings (:mod:`.settings`), the step
rules behind one step interface (:mod:`.step`, :mod:`.rules`), blocks (:mod:`.blocks`) and KV caches
(:mod:`.kv_cache`)."""

from tokendiff.samplers.autoregressive import AutoregressiveSampler
from tokendiff.samplers.diffusion import DiffusionSampler
from tokendiff.samplers.noise import row_generators
from tokendiff.samplers.settings import STRATEGIES, SamplingSettings

__all__ = ["DiffusionSampler", "AutoregressiveSampler", "SamplingSettings", "STRATEGIES", "row_generators"]
