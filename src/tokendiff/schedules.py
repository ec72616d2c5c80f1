"""Noise schedules: alpha(t) and alpha'(t) as pure functions of t.

Time convention (stated once, used everywhere): ``t`` in [0, 1]; ``t = 0`` is clean data and
``t = 1`` is (almost) all noise. ``alpha(t)`` is the probability that a token is still clean at time
``t``; it decreases from ``alpha(0) = 1`` to ``alpha(1) ~ 0``.

The continuous-time masked-diffusion NELBO (Sahoo et al. 2024, eq. 10; Shi et al. 2024) weights the
cross-entropy of a masked token at time ``t`` by ``-alpha'(t) / (1 - alpha(t))``; :meth:`Schedule.weight`
returns that factor.

Example::

    >>> s = LogLinearSchedule(eps=1e-3)
    >>> t = torch.tensor([0.0, 0.5, 1.0])
    >>> s.alpha(t)            # (3,)
    tensor([1.0000, 0.5005, 0.0010])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tokendiff.errors import TokenDiffError

__all__ = [
    "Schedule",
    "LogLinearSchedule",
    "LinearSchedule",
    "CosineSchedule",
    "GeometricSchedule",
    "make_schedule",
    "SCHEDULES",
]


class Schedule:
    """Base class. Subclasses define :meth:`alpha` and :meth:`alpha_prime` (d alpha / d t)."""

    name: str = "base"

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def alpha_prime(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def weight(self, t: torch.Tensor) -> torch.Tensor:
        """NELBO weight ``-alpha'(t) / (1 - alpha(t))`` (>= 0; infinite only at t = 0)."""
        return -self.alpha_prime(t) / (1.0 - self.alpha(t))

    def to_dict(self) -> dict:
        return {"alpha_schedule": self.name, **self._params()}

    def _params(self) -> dict:
        return {}


@dataclass
class LogLinearSchedule(Schedule):
    """``alpha(t) = 1 - (1 - eps) t``: the MDLM default; the mask rate grows linearly in t.

    Called log-linear because the total noise ``sigma(t) = -log alpha(t)`` is ``-log(1 - (1-eps) t)``.
    ``eps`` keeps ``alpha(1) = eps > 0`` so that ``sigma`` stays finite.
    """

    eps: float = 1e-3
    name = "loglinear"

    def alpha(self, t):
        return 1.0 - (1.0 - self.eps) * t

    def alpha_prime(self, t):
        return torch.full_like(t, -(1.0 - self.eps))

    def _params(self):
        return {"eps": self.eps}


@dataclass
class LinearSchedule(Schedule):
    """Linear total noise ``sigma(t) = sigma_min + t (sigma_max - sigma_min)``, ``alpha = exp(-sigma)``."""

    sigma_min: float = 1e-4
    sigma_max: float = 20.0
    name = "linear"

    def _sigma(self, t):
        return self.sigma_min + t * (self.sigma_max - self.sigma_min)

    def alpha(self, t):
        return torch.exp(-self._sigma(t))

    def alpha_prime(self, t):
        return -(self.sigma_max - self.sigma_min) * torch.exp(-self._sigma(t))

    def _params(self):
        return {"sigma_min": self.sigma_min, "sigma_max": self.sigma_max}


@dataclass
class GeometricSchedule(Schedule):
    """Geometric total noise ``sigma(t) = sigma_min^(1-t) sigma_max^t``, ``alpha = exp(-sigma)``."""

    sigma_min: float = 1e-4
    sigma_max: float = 20.0
    name = "geometric"

    def _sigma(self, t):
        return self.sigma_min ** (1.0 - t) * self.sigma_max**t

    def alpha(self, t):
        return torch.exp(-self._sigma(t))

    def alpha_prime(self, t):
        sigma = self._sigma(t)
        return -sigma * math.log(self.sigma_max / self.sigma_min) * torch.exp(-sigma)

    def _params(self):
        return {"sigma_min": self.sigma_min, "sigma_max": self.sigma_max}


@dataclass
class CosineSchedule(Schedule):
    """``alpha(t) = eps + (1 - eps) cos(pi t / 2)``: ``alpha(0) = 1``, ``alpha(1) = eps``.

    It masks slowly at first, as in MaskGIT.
    """

    eps: float = 1e-3
    name = "cosine"

    def alpha(self, t):
        return self.eps + (1.0 - self.eps) * torch.cos(0.5 * math.pi * t)

    def alpha_prime(self, t):
        return -(1.0 - self.eps) * 0.5 * math.pi * torch.sin(0.5 * math.pi * t)

    def _params(self):
        return {"eps": self.eps}


SCHEDULES = {
    "loglinear": LogLinearSchedule,
    "linear": LinearSchedule,
    "geometric": GeometricSchedule,
    "cosine": CosineSchedule,
}


def make_schedule(name: str, eps: float = 1e-3) -> Schedule:
    """Build a schedule by name: ``loglinear`` (default), ``linear``, ``cosine`` or ``geometric``."""
    if name not in SCHEDULES:
        raise TokenDiffError(
            f"unknown noise schedule {name!r}; use one of {sorted(SCHEDULES)} (diffusion.schedule=...)"
        )
    if name in ("loglinear", "cosine"):
        if not 0.0 <= eps < 1.0:
            raise TokenDiffError(f"diffusion.eps={eps} is outside [0, 1); the seeds use 1e-3")
        return SCHEDULES[name](eps=eps)
    return SCHEDULES[name]()
