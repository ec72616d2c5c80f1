"""Forward kernels: corruption, NELBO terms, reverse steps and priors (no weights, no loops)."""

from tokendiff.processes.absorbing import AbsorbingKernel
from tokendiff.processes.base import Kernel

__all__ = ["Kernel", "AbsorbingKernel"]
