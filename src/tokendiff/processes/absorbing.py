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
from tokendiff.processes.base import NUM_TRAIN_TIMESTEPS, check_vocab, diffusers_vocab, schedule_settings
from tokendiff.processes.interpolating import InterpolatingKernel
from tokendiff.schedules import Schedule, schedule_from_dict

__all__ = ["AbsorbingKernel", "scored_nll"]


def scored_nll(
    logits: torch.Tensor, target: torch.Tensor, scored: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """``weight * -log p_theta(target)`` where ``scored``, 0 elsewhere: (B, L, V) logits -> (B, L).

    The masked NELBO's integrand (``weight = w(t)``, ``scored`` = the masked tokens), and every loss on
    corrupted data built from it with its own weight and scored set (:mod:`tokendiff.objectives`).
    ``target`` (B, L) may hold the mask id where nothing is scored. ``weight`` broadcasts to (B, L); its dtype
    joins the cross-entropy's in the result's (float64 weights for evaluation's times, whose ``w(t) ~ 1/t``
    leaves float32's range). The cross-entropy is float32 whatever the autocast dtype (bf16 log-softmax loses
    ~2 digits); float64 logits (exact test models) stay float64.
    """
    V = logits.shape[-1]
    work = logits if logits.dtype == torch.float64 else logits.float()
    nll = F.cross_entropy(work.transpose(1, 2), target.clamp(max=V - 1), reduction="none")  # (B, L)
    weighted = nll if weight is None else weight * nll
    # where, not a product with the mask: an unscored term stays 0 where the weight is infinite (t = 0)
    return torch.where(scored, weighted, torch.zeros_like(weighted))


class AbsorbingKernel(InterpolatingKernel):
    """Masked diffusion over a vocabulary of ``vocab_size`` tokens plus one mask token.

    An interpolating kernel with ``m_t = (1 - alpha_t) e_mask`` (its prior and the generic GIDD math
    apply); corruption, NELBO and reverse step have the closed forms above, which are cheaper.

    Args:
        vocab_size: number of real tokens ``V``; the mask token id is ``V``.
        schedule: the noise schedule.
    """

    name = "absorbing"
    time_conditioned = False  # a masked token says nothing about t that the count of masks does not
    reveals_are_final = True  # a revealed token is clean: the reverse process never changes it again
    masked_diffusion = True

    def __init__(self, vocab_size: int, schedule: Schedule):
        if vocab_size < 1:
            raise TokenDiffError(f"vocab_size={vocab_size} must be >= 1")
        super().__init__(vocab_size)
        self.schedule = schedule

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return self.schedule.alpha(t)

    def alpha_prime(self, t: torch.Tensor) -> torch.Tensor:
        return self.schedule.alpha_prime(t)

    def noise(self, t: torch.Tensor) -> torch.Tensor:
        return (1.0 - self.alpha(t))[..., None] * F.one_hot(torch.tensor(self.vocab_size), self.num_ids).to(t)

    def noise_prime(self, t: torch.Tensor) -> torch.Tensor:
        return -self.alpha_prime(t)[..., None] * F.one_hot(torch.tensor(self.vocab_size), self.num_ids).to(t)

    # ------------------------------------------------------------------ forward
    def corrupt(self, x0: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None = None):
        """Sample ``x_t ~ q(x_t | x0)``: mask each token with probability ``1 - alpha(t)``.

        ``x0``: (B, L) token ids; ``t``: (B,). Returns ``x_t``: (B, L).
        """
        alpha_t = self.schedule.alpha(t)[:, None]  # (B, 1)
        # float64 times get float64 uniforms: float32 ones cannot mask anything at t < 2^-24 (evaluation's times)
        u = torch.rand(x0.shape, generator=generator, device=x0.device, dtype=t.dtype)  # (B, L)
        return torch.where(u < alpha_t, x0, torch.full_like(x0, self.mask_token_id))

    # ------------------------------------------------------------------ loss
    def nelbo_terms(self, logits: torch.Tensor, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor):
        """Per-token NELBO terms ``w(t) * -log p_theta(x0 | x_t)`` at masked positions, 0 elsewhere.

        ``logits``: (B, L, V) over real tokens; ``x0``, ``xt``: (B, L); ``t``: (B,).
        Returns (B, L): float64 when ``t`` is (evaluation's times reach ~1e-60, where the weight ~1/t leaves
        float32's range), else float32. With ``t ~ U[0, 1]``, ``terms.sum(1)`` is an unbiased estimate of the
        NELBO without its prior term (and without the t = 0 term when ``alpha(0) < 1``).
        """
        masked = xt == self.mask_token_id  # (B, L)
        weight = self.nelbo_weight(t.double())[:, None]  # (B, 1); float64: 1 - alpha loses t < 6e-8 in float32
        weight = weight if t.dtype == torch.float64 else weight.float()  # float64 terms for float64 times only
        return scored_nll(logits, x0, masked, weight)

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

    def reverse_log_probs(self, log_p_x0: torch.Tensor, xt: torch.Tensor, t: float, s: float) -> torch.Tensor:
        """``log p(x_s | x_t)`` for one reverse step ``t -> s < t``, shape (B, L, V + 1) in float64.

        ``log_p_x0``: (B, L, V) log-probabilities of the clean token at masked positions (after any
        temperature or top-p). ``s = 0`` reveals every remaining mask (``alpha(0) = 1`` exactly).
        """
        alpha_t = self.alpha(torch.tensor(float(t), dtype=torch.float64)).to(log_p_x0.device)
        alpha_s = self.alpha(torch.tensor(float(s), dtype=torch.float64)).to(log_p_x0.device) if s > 0 else 1.0
        alpha_s = torch.as_tensor(alpha_s, dtype=torch.float64, device=log_p_x0.device)
        log_unmask = torch.log((alpha_s - alpha_t) / (1.0 - alpha_t))  # chance to reveal now
        log_stay = torch.log((1.0 - alpha_s) / (1.0 - alpha_t))  # chance to stay masked
        masked = torch.cat(
            [log_p_x0.double() + log_unmask, log_stay.expand(*log_p_x0.shape[:-1], 1)], dim=-1
        )  # (B, L, V+1)
        carried = torch.full_like(masked, float("-inf"))
        carried.scatter_(-1, xt.unsqueeze(-1), 0.0)
        return torch.where((xt == self.mask_token_id).unsqueeze(-1), masked, carried)

    def diffusion_settings(self) -> dict:
        """``diffusion.process=absorbing`` and the schedule (``exclude_mask_from_uniform`` does not apply)."""
        return {"process": self.name, **schedule_settings(self.schedule)}

    def describe(self) -> str:
        return f"forward_process={self.name}"

    def to_config(self) -> dict:
        """diffusers' ``TokenDiffusionScheduler`` with ``forward_process="absorbing"``."""
        return {
            "_class_name": "TokenDiffusionScheduler",
            **diffusers_vocab(self),
            "num_train_timesteps": NUM_TRAIN_TIMESTEPS,
            **self.schedule.to_dict(),
            "forward_process": self.name,
            "exclude_mask_from_uniform": True,  # unused by masking; diffusers' default
        }

    @classmethod
    def from_config(cls, config: dict, source: str = "scheduler_config.json") -> "AbsorbingKernel":
        return cls(check_vocab(config, source), schedule_from_dict(config))
