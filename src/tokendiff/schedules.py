"""Noise schedules: alpha(t) and alpha'(t) as pure functions of t.

Time convention (stated once, used everywhere): ``t`` in [0, 1]; ``t = 0`` is clean data and
``t = 1`` is (almost) all noise. ``alpha(t)`` is the probability that a token is still clean at time
``t``; it decreases from ``alpha(0) = 1`` to ``alpha(1) ~ 0``.

The continuous-time masked-diffusion NELBO (Sahoo et al. 2024, eq. 10; Shi et al. 2024) weights the
cross-entropy of a masked token at time ``t`` by ``-alpha'(t) / (1 - alpha(t))``; :meth:`Schedule.weight`
returns that factor.

The names and formulas are those of diffusers' ``TokenDiffusionScheduler`` (``_alpha_t`` in
``src/diffusers/schedulers/scheduling_token_diffusion.py``), so that a ``scheduler_config.json`` means
the same alpha(t) to both libraries (``tests/test_scheduler_config.py`` checks 5 points of each).

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
    "ALIASES",
    "schedule_from_dict",
]


class Schedule:
    """Base class. Subclasses define :meth:`alpha` and :meth:`alpha_prime` (d alpha / d t)."""

    name: str = "base"
    eps: float = 1e-3
    sigma_min: float = 1e-4
    sigma_max: float = 20.0

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def alpha_prime(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def weight(self, t: torch.Tensor) -> torch.Tensor:
        """NELBO weight ``-alpha'(t) / (1 - alpha(t))`` (>= 0; infinite only at t = 0)."""
        return -self.alpha_prime(t) / (1.0 - self.alpha(t))

    def to_dict(self) -> dict:
        """The schedule's fields of diffusers' ``TokenDiffusionScheduler`` (``alpha_schedule``, ``eps``,
        ``sigma_min``, ``sigma_max``); diffusers checks all of them whatever the schedule."""
        return {"alpha_schedule": self.name, "eps": self.eps, "sigma_min": self.sigma_min, "sigma_max": self.sigma_max}


@dataclass
class LogLinearSchedule(Schedule):
    """``alpha(t) = 1 - (1 - eps) t``: the MDLM default; the mask rate grows linearly in t.

    Called log-linear because the total noise ``sigma(t) = -log alpha(t)`` is ``-log(1 - (1-eps) t)``.
    ``eps`` keeps ``alpha(1) = eps > 0`` so that ``sigma`` stays finite.
    """

    eps: float = 1e-3
    name = "log_linear"

    def alpha(self, t):
        return 1.0 - (1.0 - self.eps) * t

    def alpha_prime(self, t):
        return torch.full_like(t, -(1.0 - self.eps))


@dataclass
class LinearSchedule(Schedule):
    """``alpha(t) = (1 - 2 eps)(1 - t) + eps``: linear from ``1 - eps`` to ``eps`` (diffusers' ``linear``)."""

    eps: float = 1e-3
    name = "linear"

    def alpha(self, t):
        return (1.0 - 2.0 * self.eps) * (1.0 - t) + self.eps

    def alpha_prime(self, t):
        return torch.full_like(t, -(1.0 - 2.0 * self.eps))


@dataclass
class CosineSchedule(Schedule):
    """``alpha(t) = (1 - 2 eps)(1 - cos(pi (1 - t) / 2)) + eps`` (diffusers' ``cosine``): from ``1 - eps``
    to ``eps``, masking fast at first and slowly near the end."""

    eps: float = 1e-3
    name = "cosine"

    def alpha(self, t):
        return (1.0 - 2.0 * self.eps) * (1.0 - torch.cos(0.5 * math.pi * (1.0 - t))) + self.eps

    def alpha_prime(self, t):
        return -(1.0 - 2.0 * self.eps) * 0.5 * math.pi * torch.sin(0.5 * math.pi * (1.0 - t))


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


SCHEDULES = {
    "log_linear": LogLinearSchedule,
    "linear": LinearSchedule,
    "cosine": CosineSchedule,
    "geometric": GeometricSchedule,
}
ALIASES = {"loglinear": "log_linear"}  # the name tokendiff used before it took diffusers' names


def make_schedule(name: str, eps: float = 1e-3, sigma_min: float = 1e-4, sigma_max: float = 20.0) -> Schedule:
    """Build a schedule by name: ``log_linear`` (default), ``linear``, ``cosine`` or ``geometric``."""
    name = ALIASES.get(name, name)
    if name not in SCHEDULES:
        raise TokenDiffError(
            f"unknown noise schedule {name!r}; use one of {sorted(SCHEDULES)} (diffusion.schedule=...)"
        )
    if not 0.0 < eps < 1.0:
        raise TokenDiffError(f"diffusion.eps={eps} is outside (0, 1); the seeds use 1e-3")
    if not 0.0 < sigma_min < sigma_max:
        raise TokenDiffError(
            f"diffusion.sigma_min={sigma_min} and diffusion.sigma_max={sigma_max} need 0 < sigma_min < sigma_max"
        )
    if name == "geometric":
        return GeometricSchedule(sigma_min=sigma_min, sigma_max=sigma_max)
    return SCHEDULES[name](eps=eps)


def schedule_from_dict(config: dict) -> Schedule:
    """The schedule a :meth:`Schedule.to_dict` record describes (diffusers' defaults for missing fields)."""
    return make_schedule(
        config.get("alpha_schedule", "log_linear"),
        config.get("eps", 1e-3),
        config.get("sigma_min", 1e-4),
        config.get("sigma_max", 20.0),
    )
