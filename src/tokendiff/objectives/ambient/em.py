"""Monte Carlo EM with a persistent imputation buffer (``hard_loss=em``) at levels ``t < t_n``.

Every training sequence keeps one completed copy ``x_hat`` (its observed tokens, the rest imputed): drawn
the first time the sequence is used by a proper sequential sampler (``impute_rounds`` rounds in a random
order, observed tokens clamped) with the imputer (the trainer's EMA weights), then at each later use either
drawn afresh (probability ``refresh``) or improved by a Gibbs sweep (a share ``gibbs_share`` of its imputed
tokens masked and drawn again given the rest). The M-step scores the clean NELBO integrand of ``x_hat`` at
``t < t_n``: its observed tokens with weight 1 and its imputed ones with weight ``imputed_weight`` (1:
classical Monte Carlo EM, whose expected loss with exact posterior draws is the clean NELBO, tested by
enumeration; 0: observed tokens only). The buffer is training state: checkpoints carry it, so a resumed
run continues exactly.
"""

from __future__ import annotations

import torch

from tokendiff.errors import TokenDiffError
from tokendiff.processes.absorbing import scored_nll

__all__ = ["EMLoss"]


class EMLoss:
    """The EM loss and its buffer, a part of :class:`~tokendiff.objectives.ambient.objective.AmbientObjective`
    (it reads the objective's ``kernel``, ``imputer``, ``buffer``, ``refresh``, ``gibbs_share``,
    ``impute_rounds``, ``imputed_weight`` and its ``fill``). It fills the objective's hooks for the imputing
    model and the training state (:class:`~tokendiff.objectives.base.Objective`)."""

    def bind_imputer(self, model) -> None:
        """The model that imputes (``model(x, t) -> logits``); the trainer binds its EMA weights."""
        self.imputer = model

    @staticmethod
    def _key(row: torch.Tensor) -> bytes:
        return row.to(torch.int32).cpu().numpy().tobytes()

    @torch.no_grad()
    def completed(self, y: torch.Tensor, generator) -> torch.Tensor:
        """``x_hat`` (B, L) for the rows of ``y``: drawn afresh (first use, or with probability ``refresh``)
        or improved by a Gibbs sweep; stored back in the buffer."""
        model = self.imputer
        if model is None:
            raise TokenDiffError("ambient.hard_loss=em needs an imputer: call bind_imputer(model) first")
        mask = self.kernel.mask_token_id
        keys = [self._key(row) for row in y]
        stored = [self.buffer.get(k) for k in keys]
        u = torch.rand(len(keys), generator=generator, device=y.device)
        fresh = torch.tensor([s is None for s in stored], device=y.device) | (u < self.refresh)  # (B,)
        out = torch.stack([y[i] if s is None else s.to(y.device) for i, s in enumerate(stored)])  # (B, L)
        missing = y == mask  # (B, L) the tokens to impute
        if fresh.any():  # a proper sequential draw, observed tokens clamped
            out[fresh] = self.fill(model, y[fresh], missing[fresh], generator, rounds=self.impute_rounds)
        if (~fresh).any():  # a Gibbs sweep: a share of the imputed tokens drawn again given the rest
            old, hide = out[~fresh], missing[~fresh]
            pick = hide & (torch.rand(hide.shape, generator=generator, device=y.device) < self.gibbs_share)
            out[~fresh] = self.fill(model, torch.where(pick, mask, old), pick, generator, rounds=1)
        for key, row in zip(keys, out.cpu()):
            self.buffer[key] = row.clone()
        return out

    def em_terms_given(self, logits, x_hat, y, z, t):
        """(B, L) M-step terms: ``w(t) c_i -log p(x_hat_i | z)`` on the tokens masked in ``z``, with
        ``c_i = 1`` where ``y`` observed the token and ``imputed_weight`` where it was imputed."""
        weight = self.kernel.nelbo_weight(t.double()).float()[:, None]  # (B, 1): -alpha'/(1 - alpha)
        mask = self.kernel.mask_token_id
        observed = (y != mask).float()
        share = observed + self.imputed_weight * (1.0 - observed)  # (B, L)
        return scored_nll(logits, x_hat, z == mask, weight * share)

    def em_terms(self, model, y, t, generator):
        """(B, L) M-step terms of rows ``y`` at levels ``t`` (B,) below ``t_n``, from their completed copies."""
        x_hat = self.completed(y, generator)  # (B, L)
        alpha = self.kernel.alpha(t.double()).float()[:, None]  # (B, 1)
        keep = torch.rand(y.shape, generator=generator, device=y.device) < alpha
        z = torch.where(keep, x_hat, torch.full_like(x_hat, self.kernel.mask_token_id))
        return self.em_terms_given(model(z, None), x_hat, y, z, t)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The imputation buffer as tensors (a checkpoint's ``training_state/objective.safetensors``)."""
        if not self.buffer:
            return {}
        keys = torch.stack([torch.frombuffer(bytearray(k), dtype=torch.int32) for k in self.buffer])
        return {"em_observed": keys, "em_completed": torch.stack(list(self.buffer.values())).to(torch.int32)}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """The imputation buffer that :meth:`state_tensors` saved (empty when it saved none)."""
        self.buffer = {}
        if "em_observed" in tensors:
            for key, row in zip(tensors["em_observed"], tensors["em_completed"]):
                self.buffer[self._key(key)] = row.long()
