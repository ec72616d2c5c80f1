"""Interpolating kernels (GIDD, von Rütte et al. 2025): the math shared by uniform and hybrid noise.

Every kernel here has token-wise marginals that interpolate between the clean token and a noise
distribution that may change with time::

    q_t(. | x0) = alpha_t e_{x0} + m_t,         m_t = beta_t pi_t  (a vector over the K = V + 1 ids, sum 1 - alpha_t)

A subclass gives ``alpha_t``, ``m_t`` and their time derivatives. Absorbing noise is ``m_t = (1 - alpha_t)
e_mask``, uniform noise ``m_t = (1 - alpha_t) u``, GIDD's hybrid a time-varying mix of the two.

**Reverse model** (the mean parameterization of D3PM, UDLM and GIDD, also diffusers'): the denoiser's
distribution ``x_theta`` over the V real tokens is plugged into the forward posterior,
``p(x_s | x_t) = q_{t|s}(x_t | x_s) q_s(x_s | x_theta) / q_t(x_t | x_theta)`` with
``q_s(. | x_theta) = alpha_s x_theta + m_s`` and the conditional transition
``q_{t|s}(z | y) = alpha_{t|s} [y = z] + g(z)``, ``alpha_{t|s} = alpha_t / alpha_s``,
``g = m_t - alpha_{t|s} m_s``. It is exact when ``x_theta`` at position i is the clean token's law given
the *other* positions of ``x_t``, ``p(x0_i | x_t^{-i})`` (the tests plug that in and recover ``-log p``).

**NELBO** (GIDD's ELBO; for uniform noise it is UDLM's, Schiff et al. 2025): as ``s -> t`` the forward
jump rate into ``z`` is ``r_t(z) = m_t'(z) - (alpha_t' / alpha_t) m_t(z)``, and the KL of the reverse
jump processes gives, per token, with ``q = q_t(. | x0)``, ``p = q_t(. | x_theta)`` and ``z = x_t``::

    term = r_t(z) / q(z) * [ KL(q || p) + q(z)/p(z) - log(q(z)/p(z)) - 1 ]

(the last three terms are the Itakura-Saito divergence of ``q(z)`` and ``p(z)``). Its expectation over
``t ~ U[0, 1]`` and ``x_t ~ q_t`` plus the prior term ``KL(q_1(. | x0) || p(x_1))`` bounds ``-log p(x0)``.

**Prior**: ``p(x_1) = alpha_1 u_V + m_1``, the marginal at ``t = 1`` of data uniform over the V real
tokens: the samplers draw their starting tokens from it, and it makes the prior term finite even
when ``alpha_1 > 0``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["InterpolatingKernel"]


def _times(t) -> torch.Tensor:
    """``t`` as a float64 tensor (a python float becomes shape (1,))."""
    t = torch.as_tensor(t, dtype=torch.float64)
    return t.reshape(1) if t.dim() == 0 else t


class InterpolatingKernel:
    """Base class: subclasses define :meth:`alpha`, :meth:`alpha_prime`, :meth:`noise`, :meth:`noise_prime`.

    ``noise(t)``: ``m_t`` of shape ``(*t.shape, K)``; ``noise_prime(t)`` its derivative in t.
    """

    name = "interpolating"
    time_conditioned = True
    reveals_are_final = False  # a real token may be noise that a later step replaces
    small_time_order = 1.0  # the corruption probability grows like t near 0 (alpha'(0) finite)
    default_time_grid = "alpha"  # uniform in alpha: first order in the steps for every kernel (docs/kernels.md)
    masked_diffusion = False  # only AbsorbingKernel is MDLM's masked diffusion

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size
        self.mask_token_id = vocab_size

    @property
    def num_ids(self) -> int:
        """``K = V + 1``: the real tokens and the mask."""
        return self.vocab_size + 1

    # ------------------------------------------------------------------ to be defined
    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def alpha_prime(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def noise(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def noise_prime(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def nelbo_weight(self, t: torch.Tensor) -> torch.Tensor:
        """``-alpha'(t) / (1 - alpha(t))``, same shape and dtype as ``t`` (infinite only where ``alpha = 1``): the
        weight of a masked token's cross-entropy in the NELBO of a masking kernel."""
        return -self.alpha_prime(t) / (1.0 - self.alpha(t))

    # ------------------------------------------------------------------ forward
    def corrupt(self, x0: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``x_t ~ q_t(. | x0)``: keep a token with probability ``alpha_t``, else draw it from ``pi_t``.

        ``x0``: (B, L), ``t``: (B,). Returns (B, L).
        """
        B, L = x0.shape
        t = t.double()
        alpha = self.alpha(t)[:, None]  # (B, 1)
        pi = self.noise(t)  # (B, K), rows sum to 1 - alpha
        keep = torch.rand(x0.shape, generator=generator, device=x0.device, dtype=torch.float64) < alpha  # (B, L)
        noise = torch.multinomial(pi.float(), L, replacement=True, generator=generator)  # (B, L)
        return torch.where(keep, x0, noise.to(x0.device))

    # ------------------------------------------------------------------ loss
    def rate(self, t: torch.Tensor) -> torch.Tensor:
        """Forward jump rate into each id, ``r_t = m_t' - (alpha_t'/alpha_t) m_t``: (*t.shape, K), >= 0."""
        return self.noise_prime(t) - (self.alpha_prime(t) / self.alpha(t))[..., None] * self.noise(t)

    def nelbo_terms(self, logits: torch.Tensor, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Per-token GIDD NELBO integrand (module docstring), (B, L, V) logits -> (B, L).

        The (B, L, K) work is float64 when the logits are float64 (tests), else float32 (bf16 loses digits).
        The time factors (``alpha_t``, ``m_t``, the jump rate and ``q_t(z | x0)``) are always float64, and
        the result is float64 when ``t`` is: evaluation draws times down to ~1e-60, where ``r_t(z) / q_t(z)``
        leaves float32's range (the rate of GIDD's uniform bump grows like ``t^(gamma/2 - 1)``).
        """
        dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
        t64 = t.double()
        alpha, m, rate = self.alpha(t64), self.noise(t64), self.rate(t64)  # (B,), (B, K), (B, K) float64
        x_theta = torch.softmax(logits.to(dtype), dim=-1)  # (B, L, V)
        p = alpha.to(dtype)[:, None, None] * F.pad(x_theta, (0, 1)) + m.to(dtype)[:, None, :]  # q_t(. | x_theta)
        q = alpha.to(dtype)[:, None, None] * F.one_hot(x0, self.num_ids).to(dtype) + m.to(dtype)[:, None, :]
        tiny = torch.finfo(dtype).tiny
        log_ratio = torch.log(q.clamp_min(tiny)) - torch.log(p.clamp_min(tiny))  # (B, L, K)
        kl = torch.where(q > 0, q * log_ratio, torch.zeros_like(q)).sum(-1)  # (B, L)
        q_z = alpha[:, None] * (xt == x0) + m.gather(-1, xt)  # (B, L) float64: q_t(x_t | x0)
        p_z = p.gather(-1, xt.unsqueeze(-1)).squeeze(-1).double()  # (B, L)
        ratio_z = q_z / p_z.clamp_min(torch.finfo(torch.float64).tiny)  # (B, L)
        r_z = rate.gather(-1, xt)  # (B, L) float64
        itakura_saito = ratio_z - torch.log(ratio_z.clamp_min(torch.finfo(torch.float64).tiny)) - 1.0  # (B, L)
        term = r_z / q_z.clamp_min(torch.finfo(torch.float64).tiny) * (kl.double() + itakura_saito)
        term = torch.where(r_z > 0, term, torch.zeros_like(term))
        return term if t.dtype == torch.float64 else term.float()

    def reconstruction_terms(self, logits: torch.Tensor, x0: torch.Tensor, z0: torch.Tensor) -> torch.Tensor:
        """``-log p(x0_i | z0)`` per token, (B, L) float64, for ``z0 ~ q_0(. | x0)``: the NELBO's t = 0 term.

        A schedule with ``alpha(0) < 1`` (diffusers' ``linear`` and ``cosine``, ``geometric``) has already
        corrupted a share ``1 - alpha(0)`` of the tokens at t = 0, so the continuous-time integral bounds
        ``-log p(z0)``, not ``-log p(x0)``: the bound adds this decoder term. The decoder is the denoiser's
        posterior at t = 0, ``p(x0 = v | z) ~ q_0(z | v) x_theta(v)`` (for masks: the cross-entropy at a
        masked position, 0 elsewhere). It is 0 when ``alpha(0) = 1``.
        """
        t0 = torch.zeros(1, dtype=torch.float64, device=logits.device)
        a0, m0 = self.alpha(t0)[0], self.noise(t0)[0]  # (), (K,)
        log_x = torch.log_softmax(logits.float() if logits.dtype != torch.float64 else logits, dim=-1)  # (B, L, V)
        log_x_x0 = log_x.gather(-1, x0.unsqueeze(-1)).squeeze(-1).double()  # (B, L) log x_theta(x0)
        real = z0 < self.vocab_size  # the mask is never a clean token: x_theta(mask) = 0
        log_x_z = log_x.gather(-1, z0.clamp_max(self.vocab_size - 1).unsqueeze(-1)).squeeze(-1).double()
        log_x_z = torch.where(real, log_x_z, torch.full_like(log_x_z, float("-inf")))  # (B, L) log x_theta(z)
        m_z = m0[z0]  # (B, L)
        log_num = torch.log(a0 * (z0 == x0) + m_z) + log_x_x0  # log q_0(z | x0) x_theta(x0)
        log_den = torch.logaddexp(torch.log(a0) + log_x_z, torch.log(m_z))  # log sum_v q_0(z | v) x_theta(v)
        return log_den - log_num

    # ------------------------------------------------------------------ reverse
    def _alpha_noise(self, s: float, device) -> tuple[torch.Tensor, torch.Tensor]:
        """``alpha_s`` (1,) and ``m_s`` (1, K) in float64; ``s = 0`` is exactly clean."""
        if s <= 0.0:
            m = torch.zeros(1, self.num_ids, dtype=torch.float64)
            return torch.ones(1, dtype=torch.float64).to(device), m.to(device)
        s = _times(s)
        return self.alpha(s).to(device), self.noise(s).to(device)

    def reverse_log_probs(self, log_p_x0: torch.Tensor, xt: torch.Tensor, t: float, s: float) -> torch.Tensor:
        """``log p(x_s | x_t)`` of one reverse step ``t -> s < t`` (module docstring), (B, L, K) float64."""
        device = log_p_x0.device
        alpha_t, m_t = self._alpha_noise(t, device)  # (1,), (1, K)
        alpha_s, m_s = self._alpha_noise(s, device)
        alpha_ts = alpha_t / alpha_s  # (1,)
        g = (m_t - alpha_ts[:, None] * m_s).clamp_min(0.0)  # (1, K): jump mass into each id over (s, t]
        q_ts = alpha_ts * F.one_hot(xt, self.num_ids).double() + g[0, xt].unsqueeze(-1)  # (B, L, K): q(x_t | x_s=y)
        q_s = alpha_s * F.pad(log_p_x0.double().exp(), (0, 1)) + m_s  # (B, L, K): q_s(y | x_theta)
        # the floor keeps a row whose only reachable value lost all model mass (top-p) on its current token
        q_s = q_s.clamp_min(torch.finfo(torch.float64).tiny)
        log_joint = torch.log(q_ts) + torch.log(q_s)  # (B, L, K)
        return torch.log_softmax(log_joint, dim=-1)

    # ------------------------------------------------------------------ prior
    def prior_probs(self) -> torch.Tensor:
        """``p(x_1) = alpha_1 u_V + m_1``, (K,) float64."""
        one = torch.ones(1, dtype=torch.float64)
        uniform = F.pad(torch.full((self.vocab_size,), 1.0 / self.vocab_size, dtype=torch.float64), (0, 1))
        return self.alpha(one)[0] * uniform + self.noise(one)[0]

    def prior_log_probs(self) -> torch.Tensor:
        return torch.log(self.prior_probs())

    def prior_terms(self, x0: torch.Tensor) -> torch.Tensor:
        """``KL(q_1(. | x0_i) || p(x_1))`` per token, (B, L) float32.

        ``q_1(. | v) = alpha_1 e_v + m_1`` differs from the noise ``m_1`` only at ``v``, so the KL of every
        value ``v`` is one sum over the K ids plus a correction at ``v``: O(K) memory, not a V x K table
        (which is 20 GB for GPT-2's vocabulary).
        """
        one = torch.ones(1, dtype=torch.float64)
        a, m, prior = self.alpha(one)[0], self.noise(one)[0], self.prior_probs()  # (), (K,), (K,)

        def plogp(q, p):  # q log(q / p), 0 where q = 0
            return torch.where(q > 0, q * (torch.log(q.clamp_min(1e-300)) - torch.log(p)), torch.zeros_like(q))

        V = self.vocab_size
        kl = plogp(m, prior).sum() - plogp(m[:V], prior[:V]) + plogp(a + m[:V], prior[:V])  # (V,)
        return kl.float().to(x0.device)[x0]  # (B, L)
