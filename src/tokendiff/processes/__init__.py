"""Forward kernels: corruption, NELBO terms, reverse steps and priors (no weights, no loops)."""

from tokendiff.processes.absorbing import AbsorbingKernel
from tokendiff.processes.base import Kernel
from tokendiff.processes.hybrid import HybridKernel
from tokendiff.processes.interpolating import InterpolatingKernel
from tokendiff.processes.registry import KERNELS, kernel_from_config
from tokendiff.processes.uniform import UniformKernel

__all__ = [
    "Kernel",
    "InterpolatingKernel",
    "AbsorbingKernel",
    "UniformKernel",
    "HybridKernel",
    "KERNELS",
    "kernel_from_config",
]
