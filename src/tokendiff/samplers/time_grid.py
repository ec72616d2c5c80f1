"""The sampler's time grid: where the ``N`` reverse steps ``1 = t_0 > t_1 > ... > t_N = 0`` fall.

- ``linear``: uniform in t, ``t_k = 1 - k/N``.
- ``alpha``: uniform in ``alpha(t)``: each step moves the same share of tokens from noise to data
  (``alpha(t_k)`` evenly spaced from ``alpha(1)`` to ``alpha(0)``; ``alpha`` inverted by bisection). For a
  schedule linear in t (``log_linear``, ``linear``) it is the linear grid, bit for bit.
- ``cosine``: packed toward both ends, ``t_k = (1 + cos(pi k / N)) / 2``: the first step from t = 1 and
  the last one into t = 0 are ``~(pi/N)^2 / 4`` long.
- ``auto``: the kernel's ``default_time_grid``, chosen by the measured convergence of the sampler's exact
  output law to the data law on a toy (``tests/test_bounds.py``, docs/kernels.md): ``alpha`` for every
  kernel. It converges at first order in ``N`` everywhere measured, with the smallest constant of the
  three. GIDD's hybrid noise needs it: its uniform share grows like ``sqrt(t)`` near 0, so on the linear
  grid the last step must remove ``~sqrt(1/N)`` of uniform noise in one step that treats positions
  independently (order ~0.6-0.7 in ``N``); uniform in alpha, that step removes ``~1/N``.
"""

from __future__ import annotations

import math

import torch

from tokendiff.processes.base import Kernel

__all__ = ["TIME_GRIDS", "time_grid"]

TIME_GRIDS = ("auto", "linear", "alpha", "cosine")


def _inverse_alpha(kernel: Kernel, targets: torch.Tensor) -> torch.Tensor:
    """Times with ``alpha(t) = target`` (alpha decreases in t), by 60 bisection steps in float64."""
    lo = torch.zeros_like(targets)
    hi = torch.ones_like(targets)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        above = kernel.alpha(mid) > targets  # alpha(mid) still above target: t lies further right
        lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
    return 0.5 * (lo + hi)


def time_grid(kernel: Kernel, steps: int, kind: str = "auto") -> torch.Tensor:
    """The ``steps + 1`` times from 1 to 0 (float64) of grid ``kind`` (module docstring)."""
    assert kind in TIME_GRIDS, kind  # users' values are checked in SamplingSettings
    if kind == "auto":
        kind = kernel.default_time_grid
    k = torch.arange(steps + 1, dtype=torch.float64)
    if kind == "linear":
        times = 1.0 - k / steps
    elif kind == "cosine":
        times = 0.5 * (1.0 + torch.cos(math.pi * k / steps))
    else:  # alpha
        ends = kernel.alpha(torch.tensor([1.0, 0.0], dtype=torch.float64))
        targets = ends[0] + (ends[1] - ends[0]) * k / steps
        linear = 1.0 - k / steps
        if torch.allclose(kernel.alpha(linear), targets, rtol=0.0, atol=1e-12):  # alpha linear in t
            times = linear
        else:
            times = _inverse_alpha(kernel, targets)
    times[0], times[-1] = 1.0, 0.0  # exact ends (cos(pi) and bisection leave ~1e-16)
    return times
