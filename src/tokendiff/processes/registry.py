"""Kernels by name and from ``scheduler_config.json``: the one record a kernel is rebuilt from."""

from __future__ import annotations

from tokendiff.errors import TokenDiffError
from tokendiff.processes.absorbing import AbsorbingKernel
from tokendiff.processes.hybrid import HybridKernel
from tokendiff.processes.uniform import UniformKernel

__all__ = ["KERNELS", "kernel_from_config"]

KERNELS = {"absorbing": AbsorbingKernel, "uniform": UniformKernel, "hybrid": HybridKernel}


def kernel_from_config(config: dict, source: str = "scheduler_config.json"):
    """The kernel a ``scheduler_config.json`` describes (diffusers' ``_class_name`` and ``forward_process``)."""
    if not isinstance(config, dict):
        raise TokenDiffError(f"{source} is not a JSON object; put back the file saved with the checkpoint")
    for key in ("eps", "sigma_min", "sigma_max", "p_uniform", "gamma", "t_eps", "alpha_schedule"):
        value = config.get(key)
        kind = str if key == "alpha_schedule" else (int, float)
        if key in config and (isinstance(value, bool) or not isinstance(value, kind)):
            raise TokenDiffError(
                f"{source}: {key}={value!r} has the wrong type; put back the file saved with the checkpoint"
            )
    if config.get("_class_name") == "HybridTokenDiffusionScheduler":
        return HybridKernel.from_config(config)
    process = config.get("forward_process")
    if process not in ("absorbing", "uniform"):
        raise TokenDiffError(
            f"{source}: forward_process={process!r} is not a kernel tokendiff knows (absorbing, uniform, or "
            "_class_name HybridTokenDiffusionScheduler); put back the file saved with the checkpoint"
        )
    return KERNELS[process].from_config(config)
