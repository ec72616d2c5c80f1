"""The D3PM posterior step of uniform noise (diffusers' ``DiscreteDDIMScheduler``), with the leave-one-out
corrector (:mod:`tokendiff.samplers.loo_corrector`).

A step from ``t`` to ``s`` draws a clean token ``x0`` per position from the model's posterior ``p(x0 | x_t)``,
then ``x_s`` from the exact posterior ``q(x_s | x_t, x0)`` of the forward process (D3PM's parametrization, Austin
et al. 2021): per position a draw from ``sum_x0 p(x0 | x_t) q(x_s | x_t, x0)``.

Which denoiser that needs: the full posterior ``p(x0_i | x_t)``, which sees ``x_t^i`` itself. tokendiff's
models are trained on the NELBO of the plug-in step (``tokendiff.processes.interpolating``), whose exact
denoiser is the leave-one-out law ``p(x0_i | x_t^{-i})``; :func:`posterior_from_loo` turns one into the other
(``p(x0 | x_t) ~ p(x0 | x_t^{-i}) q(x_t^i | x0)``), after which this step has exactly the law of the
ancestral step for a model of either kind. What it adds is the drawn ``x0`` and, with ``corrector_steps``, the
corrector sweeps. The functions below take the full posterior, as diffusers' scheduler does.

For uniform noise over ``N`` tokens, with ``a = alpha_t / alpha_s`` and ``b = alpha_s``, the posterior is a
choice of three routes (diffusers' decomposition): *clean* (``x_s = x0``) with mass
``b (1 - a) / N + a b 1[x_t = x0]``, *stay* (``x_s = x_t``) with ``a (1 - b) / N``, *noise* (``x_s`` uniform)
with ``(1 - a)(1 - b) / N``; at the last step (``b = 1``) it commits ``x0``. Hybrid noise (masks and uniform
tokens) has no such short form: its step draws ``x_s`` from the kernel's posterior given the drawn ``x0``.
"""

from __future__ import annotations

import torch

from tokendiff.errors import TokenDiffError
from tokendiff.processes.base import Kernel
from tokendiff.processes.denoisers import posterior_from_loo
from tokendiff.samplers.loo_corrector import LeaveOneOutCorrector
from tokendiff.samplers.noise import gumbel_argmax
from tokendiff.samplers.settings import SamplingSettings
from tokendiff.samplers.step import StepInput

__all__ = ["DDIMStep", "posterior_from_loo", "posterior_routes", "take_routes"]

CLEAN, STAY, NOISE = 0, 1, 2  # the routes, in diffusers' order


def posterior_routes(x: torch.Tensor, x0: torch.Tensor, alpha_t: float, alpha_s: float, support: int) -> torch.Tensor:
    """The probabilities of the routes (clean, stay, noise) of ``q(x_s | x_t = x, x0)``, (B, L, 3) float64, for
    uniform noise over ``support`` tokens."""
    a, b = alpha_t / alpha_s, alpha_s
    same = (x == x0).double()  # (B, L)
    clean = b * (1.0 - a) / support + a * b * same
    stay = torch.full_like(same, a * (1.0 - b) / support)
    noise = torch.full_like(same, (1.0 - a) * (1.0 - b) / support)
    mass = torch.stack([clean, stay, noise], dim=-1)  # (B, L, 3)
    return mass / mass.sum(-1, keepdim=True)


def take_routes(x: torch.Tensor, x0: torch.Tensor, routes: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """``x_s`` (B, L) from the drawn ``routes`` (B, L): ``x0`` on the clean route, ``x`` on the stay route, the
    uniform draw ``noise`` on the noise route."""
    return torch.where(routes == CLEAN, x0, torch.where(routes == NOISE, noise, x))


class DDIMStep:
    """``sampling.strategy=ddim``: ``x0 ~ p(x0 | x_t)``, then ``x_s ~ q(x_s | x_t, x0)``; ``corrector_steps`` sweeps
    of the leave-one-out corrector after the first steps (:func:`tokendiff.samplers.loo_corrector.corrector_budget`)."""

    remasks = False

    def __init__(self, kernel: Kernel, settings: SamplingSettings):
        if kernel.name not in ("uniform", "hybrid"):
            raise TokenDiffError(
                f"sampling.strategy=ddim is the posterior step of uniform noise; diffusion.process={kernel.name} has "
                "none: use sampling.strategy=ancestral, confidence, block_refinement or entropy_bound"
            )
        self.kernel = kernel
        self.pure_uniform = kernel.name == "uniform"
        if self.pure_uniform:
            self.log_noise = torch.log(kernel.uniform)  # (K,) the noise distribution (-inf outside its support)
            self.support = int((kernel.uniform > 0).sum())
        self.corrector = None
        self.sweeps = int(settings.corrector_steps)
        if self.sweeps:
            if not self.pure_uniform:
                raise TokenDiffError(
                    f"sampling.corrector_steps={self.sweeps}: the leave-one-out corrector is derived for uniform noise "
                    f"(diffusion.process=uniform), not {kernel.name}; drop sampling.corrector_steps"
                )
            self.corrector = LeaveOneOutCorrector(self.support, settings, model_is_loo=True)

    def step(self, log_p_x0: torch.Tensor, state: StepInput) -> torch.Tensor:
        log_post = posterior_from_loo(self.kernel, log_p_x0, state.x, state.t)  # the model's output is leave-one-out
        x0 = gumbel_argmax(log_post, state.generators)  # (B, L) the drawn clean tokens
        alpha_t, alpha_s = float(state.alpha_t), float(state.alpha_s)
        if self.pure_uniform:
            route_probs = posterior_routes(state.x, x0, alpha_t, alpha_s, self.support)  # (B, L, 3)
            routes = gumbel_argmax(route_probs.log(), state.generators)
            noise = gumbel_argmax(self.log_noise.expand(*state.x.shape, -1), state.generators)
            x_s = take_routes(state.x, x0, routes, noise)
        else:  # hybrid: the kernel's posterior given the drawn x0 (a point mass as the clean-token distribution)
            point = torch.full_like(log_p_x0, float("-inf")).scatter_(-1, x0.unsqueeze(-1), 0.0)
            x_s = gumbel_argmax(self.kernel.reverse_log_probs(point, state.x, state.t, state.s), state.generators)
        return torch.where(state.free, x_s, state.x_start)

    def correct(self, log_p_x0: torch.Tensor, state: StepInput) -> torch.Tensor:
        return self.corrector.sweep(log_p_x0, state)
