"""The kernel interface every forward process satisfies (absorbing, uniform, hybrid).

A *kernel* is the math of one token-wise corruption ``q_t(x_t | x0)`` and of its reverse: no weights,
no loops, no training-time choices (how times are drawn, what is scored). Those belong to an
*objective* (:mod:`tokendiff.objectives`), which wraps a kernel.

Shapes: ``B`` batch, ``L`` length, ``V`` real tokens (the width of the denoiser's logits), ``K = V + 1``
ids the model embeds (the last, ``mask_token_id = V``, is the mask). Times are floats in [0, 1] with
the convention of :mod:`tokendiff.schedules` (``t = 0`` clean).
"""

from __future__ import annotations

from typing import Protocol

import torch

from tokendiff.errors import TokenDiffError

__all__ = ["Kernel", "NUM_TRAIN_TIMESTEPS", "diffusers_vocab", "check_vocab", "schedule_settings"]

NUM_TRAIN_TIMESTEPS = 1000  # tokendiff's time is continuous; this is the grid diffusers maps to [0, 1]


def diffusers_vocab(kernel) -> dict:
    """``vocab_size`` and ``mask_token_id`` as diffusers counts them: the mask is inside the vocabulary
    (``0 <= mask_token_id < vocab_size``), so its ``vocab_size`` is our ``V + 1``."""
    return {"vocab_size": kernel.vocab_size + 1, "mask_token_id": kernel.mask_token_id}


def check_vocab(config: dict, source: str) -> int:
    """Our ``V`` from a scheduler config, checking that its mask is the last id (tokendiff's convention)."""
    vocab_size, mask = config.get("vocab_size"), config.get("mask_token_id")
    integers = all(isinstance(v, int) and not isinstance(v, bool) for v in (vocab_size, mask))
    if not integers or vocab_size < 2 or mask != vocab_size - 1:
        raise TokenDiffError(
            f"{source}: vocab_size={vocab_size!r} and mask_token_id={mask!r} must be integers with the mask as "
            "the last id (mask_token_id = vocab_size - 1 >= 1); put back the file saved with the checkpoint"
        )
    return vocab_size - 1


def schedule_settings(schedule) -> dict:
    """The ``diffusion.*`` config values of a schedule (:mod:`tokendiff.schedules`): its name and parameters."""
    return {
        "schedule": schedule.name,
        "eps": schedule.eps,
        "sigma_min": schedule.sigma_min,
        "sigma_max": schedule.sigma_max,
    }


class Kernel(Protocol):
    name: str  # the forward_process name written to scheduler_config.json
    vocab_size: int  # V real tokens
    mask_token_id: int  # = V: the mask, and the placeholder of the positions a sampler writes
    time_conditioned: bool  # whether the denoiser must see t (it can tell noise from data only through t)
    reveals_are_final: bool  # a real token in x_t is always clean (masking only): reveals are never undone
    # the corruption probability grows like t^small_time_order near t = 0 (1 for masks and uniform noise,
    # gamma/2 for GIDD's uniform bump): evaluation draws its times densely enough there to keep the NELBO's
    # estimator of finite variance (tokendiff.objectives.times.importance_times)
    small_time_order: float
    default_time_grid: str  # the sampler's time grid when sampling.time_grid=auto (tokendiff.samplers.time_grid)
    # MDLM's masked diffusion (forward_process=absorbing): the one kernel that diffusion.objective other than
    # clean, model.block_diffusion and diffusion.estimator=count are defined for (not hybrid noise, even without
    # its uniform share, which training refuses for them too)
    masked_diffusion: bool

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        """Probability that a token is still clean at ``t``, same shape as ``t``."""

    def alpha_prime(self, t: torch.Tensor) -> torch.Tensor:
        """``d alpha / dt`` (<= 0), same shape and dtype as ``t``."""

    def nelbo_weight(self, t: torch.Tensor) -> torch.Tensor:
        """``w(t) = -alpha'(t) / (1 - alpha(t))``, same shape and dtype as ``t``: for a masking kernel
        (``reveals_are_final``) the NELBO integrand is ``w(t)`` times the cross-entropy of the masked tokens
        (:func:`tokendiff.processes.absorbing.scored_nll`), which the objectives on corrupted data reweight."""

    def corrupt(self, x0: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw ``x_t ~ q_t(. | x0)``: ``x0`` (B, L), ``t`` (B,) -> ``x_t`` (B, L)."""

    def nelbo_terms(self, logits: torch.Tensor, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Per-token integrand of the continuous-time NELBO at ``t``: (B, L, V) logits -> (B, L).

        For ``t ~ U[0, 1]`` and ``x_t ~ q_t``, ``terms.sum(1)`` is an unbiased estimate of the NELBO of
        ``x0`` without its prior term (:meth:`prior_terms`).
        """

    def reconstruction_terms(self, logits: torch.Tensor, x0: torch.Tensor, z0: torch.Tensor) -> torch.Tensor:
        """``-log p(x0_i | z0)`` per token, (B, L) float64: the NELBO's t = 0 term for ``z0 ~ q_0(. | x0)``
        when ``alpha(0) < 1`` (the clean token's posterior under ``q_0`` with the denoiser's prior at t = 0)."""

    def reverse_log_probs(self, log_p_x0: torch.Tensor, xt: torch.Tensor, t: float, s: float) -> torch.Tensor:
        """``log p(x_s | x_t)`` of one reverse step ``t -> s < t`` (``s = 0``: clean), (B, L, K) float64.

        ``log_p_x0``: (B, L, V) log-probabilities of the clean token (after temperature or top-p).
        """

    def prior_log_probs(self) -> torch.Tensor:
        """``log p(x_1)`` per token, (K,) float64: what a sampler draws its starting tokens from."""

    def prior_terms(self, x0: torch.Tensor) -> torch.Tensor:
        """``KL(q_1(. | x0_i) || p(x_1))`` per token, (B, L): the NELBO's prior term."""

    def diffusion_settings(self) -> dict:
        """The ``diffusion.*`` config values this kernel is built from (``process`` and its schedule's or its own
        parameters): a checkpoint's config takes them (:func:`tokendiff.configs.record_kernel`), so that it says
        what the kernel of ``scheduler_config.json`` is."""

    def describe(self) -> str:
        """What ``scheduler_config.json`` says this kernel is, in its own fields, for messages
        (``forward_process=uniform``)."""

    def to_config(self) -> dict:
        """``scheduler_config.json``: the fields of the matching diffusers scheduler (``_class_name``)."""

    @classmethod
    def from_config(cls, config: dict, source: str = "scheduler_config.json") -> "Kernel":
        """The kernel a :meth:`to_config` dict describes (see :func:`tokendiff.processes.kernel_from_config`,
        which checks the values first); ``source`` names the file in errors."""
