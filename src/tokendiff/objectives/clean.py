"""The NELBO of clean data under a kernel: the objective of every model trained on uncorrupted data."""

from __future__ import annotations

import torch

from tokendiff.errors import TokenDiffError
from tokendiff.objectives.times import sample_times
from tokendiff.processes.base import Kernel

__all__ = ["CleanObjective"]


class CleanObjective:
    """Draw ``t`` and ``x_t ~ q_t(. | x0)``, score with the kernel's NELBO terms.

    Args:
        kernel: the forward process.
        t_min: times are drawn from ``[t_min, 1]``. The masked weight ``-alpha'/(1 - alpha)`` grows like
            ``1/t`` near 0, which gives the estimator a (log-)divergent variance; MDLM truncates at 1e-3.
            The bias this adds is the NELBO mass below ``t_min``, about ``t_min`` times a per-token
            cross-entropy (under 0.1% here).
        antithetic: draw the ``B`` times of a batch as ``(u + i/B) mod 1`` (low-discrepancy, MDLM
            ``_sample_t``): still uniform marginally, lower variance.

    With ``t ~ U[t_min, 1]``, ``terms.sum(1)`` is an unbiased estimate of ``(1 / (1 - t_min))`` times the
    NELBO integral over ``[t_min, 1]`` (MDLM's convention: the factor adds ~t_min relative, the part
    below t_min is left out, and so is the prior term).
    """

    name = "clean"
    extra_tokens = 0  # a window of L tokens is one training sequence

    def __init__(self, kernel: Kernel, t_min: float = 1e-3, antithetic: bool = True):
        if not 0.0 <= t_min < 1.0:
            raise TokenDiffError(f"diffusion.t_min={t_min} must lie in [0, 1); MDLM uses 1e-3")
        self.kernel = kernel
        self.t_min = t_min
        self.antithetic = antithetic

    def sample_t(self, n: int, generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
        """``n`` training times in ``[t_min, 1]``, shape ``(n,)``."""
        return sample_times(n, self.t_min, self.antithetic, generator, device)

    def loss_terms(self, model, x0: torch.Tensor, generator: torch.Generator | None = None, progress: float = 1.0):
        """Per-token NELBO terms of a batch ``x0`` (B, L); ``model(xt, t) -> logits (B, L, V)``."""
        t = self.sample_t(x0.shape[0], generator, x0.device)  # (B,)
        xt = self.kernel.corrupt(x0, t, generator)  # (B, L)
        return self.kernel.nelbo_terms(model(xt, t), x0, xt, t)  # (B, L)
