"""Kernels by name and from ``scheduler_config.json``: the one record a kernel is rebuilt from."""

from __future__ import annotations

import math

from tokendiff.errors import TokenDiffError
from tokendiff.processes.absorbing import AbsorbingKernel
from tokendiff.processes.hybrid import HybridKernel
from tokendiff.processes.uniform import UniformKernel
from tokendiff.schedules import SCHEDULES

__all__ = ["KERNELS", "CLASS_NAMES", "kernel_from_config"]

KERNELS = {"absorbing": AbsorbingKernel, "uniform": UniformKernel, "hybrid": HybridKernel}
# diffusers' scheduler classes whose fields tokendiff writes and reads (``_class_name``)
CLASS_NAMES = ("TokenDiffusionScheduler", "HybridTokenDiffusionScheduler")
PUT_BACK = "put back the file saved with the checkpoint"

# the fields each class reads, with the range diffusers' constructor (or tokendiff's math) allows, so that a bad
# value is reported by its name in the file, not by the diffusion.* key it would have come from in a config
_NUMBERS = {
    "TokenDiffusionScheduler": {
        "eps": (lambda v: 0.0 < v < 1.0, "must lie in (0, 1), e.g. 0.001"),
        "sigma_min": (lambda v: v > 0, "must be > 0, e.g. 0.0001"),
        "sigma_max": (lambda v: v > 0, "must be > 0, e.g. 20.0"),
    },
    "HybridTokenDiffusionScheduler": {
        "p_uniform": (lambda v: 0.0 <= v < 1.0, "must lie in [0, 1), e.g. 0.1"),
        "gamma": (lambda v: 0 < v <= 100, "must lie in (0, 100], e.g. 1.0"),
        "t_eps": (lambda v: 0.0 < v < 0.5, "must lie in (0, 0.5), e.g. 0.0001"),
    },
}


def _fail(source: str, key: str, value, rule: str):
    raise TokenDiffError(f"{source}: {key}={value!r} {rule}; {PUT_BACK}")


def _check_fields(config: dict, class_name: str, source: str) -> None:
    """Types of every known field present, and the range of each field ``class_name`` reads."""
    for key in ("eps", "sigma_min", "sigma_max", "p_uniform", "gamma", "t_eps"):
        value = config.get(key)
        if key in config and (isinstance(value, bool) or not isinstance(value, (int, float))):
            _fail(source, key, value, "has the wrong type (a number)")
        if key in config and not math.isfinite(value):
            _fail(source, key, value, "is not a finite number")
    for key, kind in (("alpha_schedule", str), ("exclude_mask_from_uniform", bool)):
        if key in config and not isinstance(config[key], kind):
            _fail(source, key, config[key], f"has the wrong type (a {'string' if kind is str else 'boolean'})")
    for key, (ok, rule) in _NUMBERS[class_name].items():
        if key in config and not ok(config[key]):
            _fail(source, key, config[key], rule)
    if class_name == "TokenDiffusionScheduler":
        schedule = config.get("alpha_schedule", "log_linear")
        if schedule not in SCHEDULES:
            _fail(source, "alpha_schedule", schedule, f"is not a schedule tokendiff knows ({', '.join(SCHEDULES)})")
        low, high = config.get("sigma_min", 1e-4), config.get("sigma_max", 20.0)
        if not low < high:
            _fail(source, "sigma_max", high, f"must be above sigma_min={low!r}")


def kernel_from_config(config: dict, source: str = "scheduler_config.json"):
    """The kernel a ``scheduler_config.json`` describes (diffusers' ``_class_name`` and ``forward_process``).

    Every error names ``source`` and the field as the file spells it.
    """
    if not isinstance(config, dict):
        raise TokenDiffError(f"{source} is not a JSON object; {PUT_BACK}")
    class_name = config.get("_class_name")
    if class_name not in CLASS_NAMES:
        _fail(
            source,
            "_class_name",
            class_name,
            f"is not a scheduler tokendiff reads ({CLASS_NAMES[0]}: absorbing or uniform; {CLASS_NAMES[1]}: hybrid)",
        )
    _check_fields(config, class_name, source)
    if class_name == "HybridTokenDiffusionScheduler":
        kernel_class = HybridKernel
    else:
        process = config.get("forward_process")
        if process not in ("absorbing", "uniform"):
            _fail(source, "forward_process", process, f"is not a kernel {class_name} has (absorbing or uniform)")
        kernel_class = KERNELS[process]
    noisy = kernel_class is UniformKernel or (kernel_class is HybridKernel and config.get("p_uniform", 0.0) > 0)
    vocab_size = config.get("vocab_size")
    if noisy and isinstance(vocab_size, int) and not isinstance(vocab_size, bool) and vocab_size < 3:
        _fail(source, "vocab_size", vocab_size, "leaves fewer than 2 real tokens (the mask is one), too few for noise")
    return kernel_class.from_config(config, source)
