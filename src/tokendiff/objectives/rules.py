"""The value rules of the objectives' settings: one function each, with the message the CLI prints.

The objective constructors check the values they need by calling these, and the config schema
(:mod:`tokendiff.configs.sections`) calls the same functions on the ``diffusion.*`` and ``data.*`` keys
before any work starts, so each rule and its message exist once (``tests/test_rules.py``). The ambient
losses' settings are checked by :class:`~tokendiff.objectives.ambient.settings.AmbientSettings`.
"""

from __future__ import annotations

from typing import Literal, get_args

from tokendiff.errors import TokenDiffError

__all__ = [
    "ESTIMATORS",
    "check_t_min",
    "check_estimator",
    "check_count_kernel",
    "BLOCK_KERNELS",
    "check_block_kernel",
    "check_block_size",
]

Estimator = Literal["time", "count", "bound"]
ESTIMATORS: tuple[str, ...] = get_args(Estimator)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise TokenDiffError(message)


def check_t_min(t_min: float) -> None:
    """Training times are drawn from ``[t_min, 1]`` (:func:`~tokendiff.objectives.times.sample_times`)."""
    _check(0.0 <= t_min < 1.0, f"diffusion.t_min={t_min} must lie in [0, 1); MDLM uses 1e-3")


def check_estimator(estimator: str) -> None:
    """The training estimator of :class:`~tokendiff.objectives.clean.CleanObjective`."""
    _check(estimator in ESTIMATORS, f"diffusion.estimator={estimator!r} is unknown; use time, count or bound")


def check_count_kernel(masked_diffusion: bool, kernel: str) -> None:
    """``estimator=count`` draws a number of masks: it needs MDLM's masked diffusion (the kernel's
    ``masked_diffusion``); ``kernel`` names the one at hand (``diffusion.process``)."""
    _check(
        masked_diffusion,
        f"diffusion.estimator=count needs masked diffusion (diffusion.process=absorbing), not {kernel}; "
        "use diffusion.estimator=time",
    )


BLOCK_KERNELS = ("absorbing", "uniform")  # the kernels block diffusion is defined and tested for


def check_block_kernel(kernel: str) -> None:
    """Block diffusion noises each block with a kernel of :data:`BLOCK_KERNELS`: masks (BD3-LM) or uniform noise
    (DiffusionGemma's); ``kernel`` names the one at hand (``diffusion.process``, a kernel's ``name``). GIDD's
    hybrid noise is refused: its block objective and sampler have not been checked."""
    _check(
        kernel in BLOCK_KERNELS,
        f"model.block_diffusion=true needs diffusion.process=absorbing or uniform (masks or uniform noise within "
        f"blocks), not {kernel}",
    )


def check_block_size(block_size: int) -> None:
    """Tokens per block of block diffusion (:class:`~tokendiff.objectives.block.BlockDiffusionObjective`)."""
    _check(block_size >= 1, f"diffusion.block_size={block_size} must be >= 1, e.g. 16")
