"""The two denoisers of a noise kernel without masks, and the exact map between them.

A model of uniform (or hybrid) noise predicts, per position ``i``, a law over the clean token. Two laws are in
use, and they differ only by the likelihood of the position's own noisy token:

* the **full posterior** ``p(x0_i | x_t)``, which sees ``x_t^i``: what a model trained with cross-entropy on
  every position learns (DiffusionGemma, D3PM-style training; what diffusers' ``DiscreteDDIMScheduler`` reads);
* the **leave-one-out** law ``p(x0_i | x_t^{-i})``: the exact denoiser of the plug-in NELBO that tokendiff's
  uniform and hybrid models are trained on (:mod:`tokendiff.processes.interpolating`), and what that NELBO
  (``kernel.nelbo_terms``) expects.

By Bayes' rule over the one position, ``p(x0_i | x_t) ∝ p(x0_i | x_t^{-i}) q_t(x_t^i | x0_i)`` with
``q_t(z | v) = alpha_t 1[z = v] + m_t(z)`` (``m_t`` the kernel's noise part), so each is the other times or
divided by that likelihood, renormalized. Both maps are exact inverses (``tests/test_denoisers.py``, by
enumeration against a known joint).
"""

from __future__ import annotations

import torch

from tokendiff.processes.base import Kernel

__all__ = ["loo_from_posterior", "posterior_from_loo", "own_token_log_likelihood"]

# the noise part's floor: at t -> 0 a float64 ``1 - alpha_t`` reaches 0 (t ~ 1e-17 for the linear schedule),
# where the likelihood of any other token is 0 and the leave-one-out law is not determined by the posterior;
# the floor keeps the map finite there (the result is still a law, so a bound computed from it stays a bound)
_FLOOR = 1e-300


def own_token_log_likelihood(kernel: Kernel, x: torch.Tensor, t: torch.Tensor, V: int) -> torch.Tensor:
    """``log q_t(x_t^i | x0_i = v)`` (B, L, V) float64 for every clean token ``v``: ``x`` (B, L) the noisy tokens,
    ``t`` (B,) one time per row (or a float for all rows)."""
    t = torch.as_tensor(t, dtype=torch.float64, device=x.device).expand(x.shape[0])  # (B,)
    alpha, m = kernel.alpha(t), kernel.noise(t).to(x.device)  # (B,), (B, K)
    noise = m.gather(1, x).clamp_min(_FLOOR)  # (B, L) m_t(x_t^i), the same for every v
    likelihood = noise.unsqueeze(-1).expand(*x.shape, V).clone()  # (B, L, V)
    real = x < V  # a mask (hybrid noise) is never a clean token
    own = torch.nn.functional.one_hot(x.clamp_max(V - 1), V).double() * real.unsqueeze(-1)  # (B, L, V)
    likelihood += alpha[:, None, None] * own
    return torch.log(likelihood)


def posterior_from_loo(kernel: Kernel, log_loo: torch.Tensor, x: torch.Tensor, t) -> torch.Tensor:
    """``log p(x0 | x_t)`` (B, L, V) float64 from the leave-one-out ``log p(x0 | x_t^{-i})`` (B, L, V) of ``x_t = x``
    (B, L) at time ``t`` (a float, or (B,) one per row)."""
    V = log_loo.shape[-1]
    return torch.log_softmax(log_loo.double() + own_token_log_likelihood(kernel, x, t, V), dim=-1)


def loo_from_posterior(kernel: Kernel, posterior_logits: torch.Tensor, x: torch.Tensor, t) -> torch.Tensor:
    """``log p(x0 | x_t^{-i})`` (B, L, V) float64 from the full posterior's logits (B, L, V) of ``x_t = x`` (B, L) at
    time ``t`` (a float, or (B,) one per row): the inverse of :func:`posterior_from_loo`."""
    V = posterior_logits.shape[-1]
    log_post = torch.log_softmax(posterior_logits.double(), dim=-1)
    return torch.log_softmax(log_post - own_token_log_likelihood(kernel, x, t, V), dim=-1)
