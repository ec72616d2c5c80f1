"""Exact quantities of a kernel on a tiny vocabulary, by enumerating every state (DESIGN.md, Tests).

A known joint ``p`` over the ``V**L`` clean sequences; the exact denoiser of the plug-in reverse step is
the leave-one-out law ``p(x0_i | x_t^{-i})`` (processes/interpolating.py). From them, by enumeration:
the expected NELBO integrand at a time (and its integral by quadrature), the reconstruction term, and
the sampler's exact output law (its reverse steps run over all ``K**L`` states at once).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

from tokendiff.samplers.time_grid import time_grid


def forward_matrix(kernel, t: float) -> torch.Tensor:
    """(V, K) ``q_t(. | x0)`` for the V clean tokens, float64."""
    tt = torch.tensor([t], dtype=torch.float64)
    V, K = kernel.vocab_size, kernel.vocab_size + 1
    return kernel.alpha(tt)[0] * torch.eye(K, dtype=torch.float64)[:V] + kernel.noise(tt)[0]


class Toy:
    """A joint ``p`` (tensor of shape (V,)*L) and a kernel: every state enumerated."""

    def __init__(self, kernel, joint: torch.Tensor):
        self.kernel, self.joint = kernel, joint.double()
        self.V, self.L = kernel.vocab_size, joint.dim()
        self.K = self.V + 1
        self.states = torch.tensor(list(itertools.product(range(self.K), repeat=self.L)))  # (K^L, L)
        self.clean = torch.tensor(list(itertools.product(range(self.V), repeat=self.L)))  # (V^L, L)

    def index(self, z: torch.Tensor) -> torch.Tensor:
        """Base-K number of each state (B, L) -> (B,)."""
        return sum(z[:, i] * self.K ** (self.L - 1 - i) for i in range(self.L))

    def loo_log_probs(self, z: torch.Tensor, t, own: bool = False) -> torch.Tensor:
        """(B, L, V) ``log p(x0_i | z^{-i})`` under ``q_t``; ``t`` a float or one time per row (B,). ``own=True``:
        the full posterior ``log p(x0_i | z)`` instead (position i's own likelihood included)."""
        B, L, V = z.shape[0], self.L, self.V
        t = torch.as_tensor(t, dtype=torch.float64).expand(B)  # (B,)
        eye = torch.eye(V + 1, dtype=torch.float64)[:V]  # (V, K)
        Q = self.kernel.alpha(t)[:, None, None] * eye + self.kernel.noise(t)[:, None, :]  # (B, V, K)
        out = torch.empty(B, L, V, dtype=torch.float64)
        for i in range(L):
            w = self.joint.expand(B, *self.joint.shape)  # (B, V, ..., V)
            for j in range(L):  # times q_t(z_j | x_j) for every other position j
                if j != i or own:
                    shape = [B] + [1] * L
                    shape[1 + j] = V
                    qz = Q.gather(2, z[:, j].view(B, 1, 1).expand(B, V, 1)).squeeze(2)  # (B, V): q_t(z_j | v)
                    w = w * qz.reshape(shape)
            mass = w.movedim(1 + i, -1).reshape(B, -1, V).sum(1)  # (B, V)
            out[:, i] = torch.log(mass.clamp_min(1e-300)) - torch.log(mass.sum(-1, keepdim=True))
        return out

    def model(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``model(x_t, t) -> logits``: the exact leave-one-out denoiser (the tokendiff model interface)."""
        return self.loo_log_probs(z, t.double())

    def minus_log_model(self, x0: tuple) -> float:
        """``-log p_theta(x0)`` of the exact denoiser's continuous-time reverse process started from the prior
        (kernels with ``alpha(0) = 1``): ``p(x0) sum_z p_1(z) q_1(z | x0) / q_1(z)``."""
        Q1 = forward_matrix(self.kernel, 1.0)
        cond = self.state_probs(Q1, x0)
        marginal = sum(float(self.joint[tuple(x)]) * self.state_probs(Q1, tuple(x.tolist())) for x in self.clean)
        prior = torch.stack([self.kernel.prior_probs()[self.states[:, i]] for i in range(self.L)]).prod(0)
        keep = cond > 0
        return -math.log(float(self.joint[x0])) - math.log(float((prior[keep] * cond[keep] / marginal[keep]).sum()))

    def state_probs(self, Q: torch.Tensor, x0: tuple) -> torch.Tensor:
        """(K^L,) ``prod_i Q[x0_i, z_i]`` over every state z."""
        return torch.stack([Q[x0[i], self.states[:, i]] for i in range(self.L)]).prod(0)

    def expected_terms(self, x0: tuple, t: float) -> float:
        """``E_{x_t ~ q_t(.|x0)} [sum_i term_i]`` at ``t`` (every reachable state, exact denoiser)."""
        probs = self.state_probs(forward_matrix(self.kernel, t), x0)
        keep = probs > 0
        z = self.states[keep]
        tt = torch.full((len(z),), t, dtype=torch.float64)
        terms = self.kernel.nelbo_terms(self.model(z, tt), torch.tensor([x0] * len(z)), z, tt).double()
        return float((probs[keep] * terms.sum(1)).sum())

    def expected_reconstruction(self, x0: tuple) -> float:
        """``E_{z0 ~ q_0(.|x0)} [-log p(x0 | z0)]`` with the exact denoiser at t = 0."""
        probs = self.state_probs(forward_matrix(self.kernel, 0.0), x0)
        keep = probs > 0
        z = self.states[keep]
        logits = self.model(z, torch.zeros(len(z), dtype=torch.float64))
        terms = self.kernel.reconstruction_terms(logits, torch.tensor([x0] * len(z)), z)
        return float((probs[keep] * terms.sum(1)).sum())

    def prior_gap(self, x0: tuple) -> float:
        """``E_{z ~ q_1(.|x0)} log(q_1(z) / p_1(z))``: the NELBO's gap to ``-log p(x0)`` from the prior alone
        (``q_1`` the data's marginal at t = 1, ``p_1`` the prior, per token)."""
        Q1 = forward_matrix(self.kernel, 1.0)
        cond = self.state_probs(Q1, x0)
        marginal = sum(float(self.joint[tuple(x)]) * self.state_probs(Q1, tuple(x.tolist())) for x in self.clean)
        prior = torch.stack([self.kernel.prior_probs()[self.states[:, i]] for i in range(self.L)]).prod(0)
        keep = cond > 0
        return float((cond[keep] * torch.log(marginal[keep] / prior[keep])).sum())

    def sampler_law(self, steps: int, grid: str = "auto") -> torch.Tensor:
        """(K^L,) the exact law of the ancestral sampler's output after ``steps`` steps on ``grid``."""
        times = time_grid(self.kernel, steps, grid)
        prior = self.kernel.prior_probs()  # (K,)
        law = torch.stack([prior[self.states[:, i]] for i in range(self.L)]).prod(0)  # (S,)
        for k in range(steps):
            t, s = float(times[k]), float(times[k + 1])
            log_p = self.loo_log_probs(self.states, t)  # (S, L, V)
            step = self.kernel.reverse_log_probs(log_p, self.states, t, s).exp()  # (S, L, K)
            T = torch.stack([step[:, i, self.states[:, i]] for i in range(self.L)]).prod(0)  # (S, S')
            undefined = T.isnan().any(1)  # states the chain cannot be in, where the step may divide by zero
            assert float(law[undefined].sum()) < 1e-100, "the sampler reached a state its step is undefined in"
            T[undefined] = 0.0
            law = law @ T
        return law

    def total_variation(self, law: torch.Tensor) -> float:
        """TV between a law over the K^L states and the joint (mass on states with a mask counts as wrong)."""
        target = torch.zeros_like(law)
        target[self.index(self.clean)] = self.joint.flatten()
        return 0.5 * float((law - target).abs().sum())


def tanh_sinh(f, h: float = 0.1) -> float:
    """``int_0^1 f(t) dt`` by tanh-sinh quadrature, ``t = (1 + tanh(pi/2 sinh x)) / 2`` for x in [-3, 3]
    (within 1e-14 of both ends): exponentially accurate for integrands with endpoint singularities
    (GIDD's ``sqrt(t (1 - t))`` at gamma = 1, the log of the uniform-noise mass near t = 0). Not for
    gamma < 1: its ``(1 - t)^(gamma/2 - 1)`` end needs ``1 - t`` below float64's resolution near 1."""
    total = 0.0
    for x in np.arange(-3.0, 3.0 + 1e-9, h):
        s = 0.5 * np.pi * np.sinh(x)
        t = 0.5 * (1.0 + np.tanh(s))
        total += h * 0.25 * np.pi * np.cosh(x) / np.cosh(s) ** 2 * f(float(t))
    return float(total)


def random_joint_tensor(V: int, L: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    p = torch.rand((V,) * L, generator=g, dtype=torch.float64) + 0.05
    return p / p.sum()


def minus_log_p(toy: Toy, x0: tuple) -> float:
    return -math.log(float(toy.joint[x0]))
