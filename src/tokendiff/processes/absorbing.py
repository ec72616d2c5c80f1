"""The absorbing (mask) process of masked diffusion language models (MDLM, Sahoo et al. 2024).

Forward: each token of ``x0`` is independently replaced by the mask token (id ``vocab_size``) with
probability ``1 - alpha(t)``; once masked it stays masked (the mask "absorbs").

Reverse (SUBS parameterization, MDLM sec. 3.2): the network outputs a distribution over the ``V`` real
tokens only (the mask is never predicted), and unmasked positions of ``x_t`` are carried over unchanged.

NELBO (MDLM eq. 10): with ``w(t) = -alpha'(t) / (1 - alpha(t))``::

    NELBO(x0) = E_{t ~ U[0,1], x_t ~ q(.|x0)} [ w(t) * sum_{i : x_t^i = mask} -log p_theta(x0^i | x_t) ]

For the exact conditionals of a distribution this integral equals ``-log p(x0)`` when ``alpha(1) = 0``
(the any-order autoregressive identity; see ``tests/test_absorbing.py``).

Reverse step from ``t`` to ``s < t`` (MDLM eq. 7) for a masked position::

    p(x_s = v   | x_t = mask) = (alpha_s - alpha_t) / (1 - alpha_t) * p_theta(v | x_t)
    p(x_s = mask | x_t = mask) = (1 - alpha_s) / (1 - alpha_t)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tokendiff.errors import TokenDiffError
from tokendiff.schedules import Schedule

__all__ = ["AbsorbingProcess", "stratified_uniform"]


def stratified_uniform(n: int, generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
    """``n`` antithetic (low-discrepancy) uniforms: draw ``i`` lies in ``[i/n, (i+1)/n)``. Shape (n,)."""
    u = torch.rand(n, generator=generator, device=device)  # (n,)
    return (u / n + torch.arange(n, device=device) / n) % 1.0


class AbsorbingProcess:
    """Masked diffusion over a vocabulary of ``vocab_size`` tokens plus one mask token.

    Args:
        vocab_size: number of real tokens ``V``; the mask token id is ``V``.
        schedule: the noise schedule.
        t_min: training times are drawn from ``[t_min, 1]``. The weight ``w(t)`` grows like ``1/t``
            near 0, which gives the estimator a (log-)divergent variance; MDLM truncates at 1e-3.
            The bias this adds is the NELBO mass below ``t_min``, about ``t_min`` times a per-token
            cross-entropy (under 0.1% here).
        antithetic: draw the ``B`` times of a batch as ``(u + i/B) mod 1`` (low-discrepancy, MDLM
            ``_sample_t``): still uniform marginally, lower variance.
    """

    name = "absorbing"
    extra_tokens = 0  # a window of L tokens is one training sequence

    def __init__(self, vocab_size: int, schedule: Schedule, t_min: float = 1e-3, antithetic: bool = True):
        if vocab_size < 1:
            raise TokenDiffError(f"vocab_size={vocab_size} must be >= 1")
        if not 0.0 <= t_min < 1.0:
            raise TokenDiffError(f"diffusion.t_min={t_min} must lie in [0, 1); MDLM uses 1e-3")
        self.vocab_size = vocab_size
        self.mask_token_id = vocab_size
        self.schedule = schedule
        self.t_min = t_min
        self.antithetic = antithetic

    # ------------------------------------------------------------------ forward
    def sample_t(self, n: int, generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
        """``n`` training times in ``[t_min, 1]``, shape ``(n,)``."""
        if self.antithetic:
            u = stratified_uniform(n, generator, device)
        else:
            u = torch.rand(n, generator=generator, device=device)  # (n,)
        return self.t_min + (1.0 - self.t_min) * u

    def corrupt(self, x0: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None = None):
        """Sample ``x_t ~ q(x_t | x0)``: mask each token with probability ``1 - alpha(t)``.

        ``x0``: (B, L) token ids; ``t``: (B,). Returns ``x_t``: (B, L).
        """
        alpha_t = self.schedule.alpha(t)[:, None]  # (B, 1)
        u = torch.rand(x0.shape, generator=generator, device=x0.device)  # (B, L)
        return torch.where(u < alpha_t, x0, torch.full_like(x0, self.mask_token_id))

    # ------------------------------------------------------------------ loss
    def nelbo_terms(self, logits: torch.Tensor, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor):
        """Per-token NELBO terms ``w(t) * -log p_theta(x0 | x_t)`` at masked positions, 0 elsewhere.

        ``logits``: (B, L, V) over real tokens; ``x0``, ``xt``: (B, L); ``t``: (B,).
        Returns (B, L) float32. With ``t ~ U[t_min, 1]``, ``terms.sum(1)`` is an unbiased estimate of
        ``(1 / (1 - t_min)) * integral_{t_min}^1`` of the NELBO integrand (MDLM's convention: the factor
        adds ~t_min relative, the part below t_min is left out, and so is the prior term at t = 1, where
        a token is still clean with probability alpha(1) = eps).
        """
        # Cross-entropy in float32 whatever the autocast dtype: bf16 log-softmax loses ~2 digits.
        nll = F.cross_entropy(logits.float().transpose(1, 2), x0, reduction="none")  # (B, L)
        masked = xt == self.mask_token_id  # (B, L)
        weight = self.schedule.weight(t.float())[:, None]  # (B, 1)
        return torch.where(masked, weight * nll, torch.zeros_like(nll))

    def loss_terms(self, denoiser, x0: torch.Tensor, generator: torch.Generator | None = None):
        """Draw ``t`` and ``x_t`` for a batch and return the per-token NELBO terms, shape (B, L).

        ``denoiser(xt, t) -> logits (B, L, V)``.
        """
        t = self.sample_t(x0.shape[0], generator, x0.device)  # (B,)
        xt = self.corrupt(x0, t, generator)  # (B, L)
        logits = denoiser(xt, t)  # (B, L, V)
        return self.nelbo_terms(logits, x0, xt, t)

    # ------------------------------------------------------------------ reverse
    def subs_log_probs(self, logits: torch.Tensor, xt: torch.Tensor) -> torch.Tensor:
        """SUBS parameterization: ``log p_theta(x0 | x_t)`` over ``V + 1`` ids, shape (B, L, V + 1).

        Masked positions get ``log_softmax(logits)`` and ``-inf`` on the mask id (never predicted);
        unmasked positions are a point mass on their current token (carried over).
        """
        B, L, V = logits.shape
        log_probs = torch.log_softmax(logits.double(), dim=-1)  # (B, L, V)
        log_probs = F.pad(log_probs, (0, 1), value=float("-inf"))  # (B, L, V+1)
        keep = xt != self.mask_token_id  # (B, L)
        carried = torch.full_like(log_probs, float("-inf"))
        carried.scatter_(-1, xt.unsqueeze(-1), 0.0)
        return torch.where(keep.unsqueeze(-1), carried, log_probs)

    def reverse_log_probs(self, log_p_x0: torch.Tensor, xt: torch.Tensor, alpha_t, alpha_s) -> torch.Tensor:
        """``log p(x_s | x_t)`` for one reverse step, shape (B, L, V + 1) in float64.

        ``log_p_x0``: (B, L, V) log-probabilities of the clean token at masked positions (after any
        temperature or top-p); ``alpha_t < alpha_s`` are python floats or 0-d tensors.
        """
        alpha_t = torch.as_tensor(alpha_t, dtype=torch.float64, device=log_p_x0.device)
        alpha_s = torch.as_tensor(alpha_s, dtype=torch.float64, device=log_p_x0.device)
        log_unmask = torch.log((alpha_s - alpha_t) / (1.0 - alpha_t))  # chance to reveal now
        log_stay = torch.log((1.0 - alpha_s) / (1.0 - alpha_t))  # chance to stay masked
        masked = torch.cat(
            [log_p_x0.double() + log_unmask, log_stay.expand(*log_p_x0.shape[:-1], 1)], dim=-1
        )  # (B, L, V+1)
        carried = torch.full_like(masked, float("-inf"))
        carried.scatter_(-1, xt.unsqueeze(-1), 0.0)
        return torch.where((xt == self.mask_token_id).unsqueeze(-1), masked, carried)

    def to_dict(self) -> dict:
        return {
            "forward_process": self.name,
            "vocab_size": self.vocab_size,
            "mask_token_id": self.mask_token_id,
            "t_min": self.t_min,
            "antithetic": self.antithetic,
            **self.schedule.to_dict(),
        }
