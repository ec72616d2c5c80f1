"""Masked diffusion learned from corrupted data (ambient training), and the naive baseline.

Setting (``shared/notes/ambient.md``): each training sequence ``x`` was observed only partly, as
``y``: each token kept with probability ``q`` (``observed_fraction``), else the mask. Since masking is
independent of values, ``y`` has exactly the law of ``x_{t_n}`` with ``alpha(t_n) = q``.

A share of each batch (``easy_fraction``) gets the easy loss, the rest the hard loss:

* ``t >= t_n``, the **easy loss** (exact). Mask each observed token of ``y`` again with probability
  ``r = 1 - alpha(t)/q``: the result ``z`` has the law of ``x_t``. Let ``N`` be the tokens observed in
  ``y`` and masked in ``z``; given ``z`` each masked token is in ``N`` with probability
  ``(q - alpha)/(1 - alpha)`` independently of the values, so::

      L_easy = w(t) sum_{i in N} -log p_theta(y_i | z),     w(t) = -alpha'(t) / (q - alpha(t))

  is an unbiased estimate of the clean-data NELBO integrand at ``t`` (``tests/test_ambient.py``).

* ``t < t_n``, no data exists: ``hard_loss`` picks one of two estimators.

  ``imputation``: draw the visible set of ``x_t`` independently of ``y``,
  fill its unobserved tokens with the model's own draws given all of ``y`` (no gradient), and score
  the observed tokens it hides, with weight ``-alpha'/((1 - alpha) q)``. With exact imputations this is
  an unbiased estimate of the clean NELBO integrand (tested by enumeration): Monte Carlo EM, whose
  fixed points include the data distribution. Its gradient is a likelihood gradient on real pixels.

  ``consistency`` (the default): the tower property of the true conditionals: for any partly masked ``z`` and
  masked token ``j``, ``p(x_i | z) = sum_v p(x_j = v | z) p(x_i | z, x_j = v)`` for every other
  masked ``i``. With a one-token reveal the expectation is exact in ``V`` forward passes, so::

      L_cons = m sum_{i masked, i != j} D( g_i, sum_v g_j(v) f^v_i ),   D = KL or squared error
      g = p_theta(. | z) (stop-gradient: the anchor),  f^v = p_theta(. | z, x_j = v) (gradient),
      m = number of masked tokens of z

  The gradient goes through the lower-noise side, the levels no data constrains. To reach levels
  far below ``t_n``, ``z`` is reached from ``y`` by the model's own reverse sampler (no gradient),
  revealing tokens until a fraction ``1 - alpha(t)`` remains masked. The loss is zero for the exact
  conditionals of any distribution and not for others (tested). The factor ``m``: a one-token reveal
  links two levels one token apart, so without it the term is tiny; on MNIST its gradient was ~300x
  below the data term's and it taught the low-noise levels nothing (docs/mnist_ambient.md).

  ``em``: Monte Carlo EM with a persistent imputation buffer. Every training sequence keeps one completed
  copy ``x_hat`` (its observed tokens, the rest imputed): drawn the first time the sequence is used by a
  proper sequential sampler (``impute_rounds`` rounds in a random order, observed tokens clamped) with the
  imputer (the trainer's EMA weights), then at each later use either drawn afresh (probability
  ``refresh``) or improved by a Gibbs sweep (a share ``gibbs_share`` of its imputed tokens masked and drawn
  again given the rest). The M-step scores the clean NELBO integrand of ``x_hat`` at ``t < t_n``: its
  observed tokens with weight 1 and its imputed ones with weight ``imputed_weight`` (1: classical Monte
  Carlo EM, whose expected loss with exact posterior draws is the clean NELBO, tested by enumeration;
  0: observed tokens only). The buffer is training state: checkpoints carry it, so a resumed run
  continues exactly.

``hard_batch > 0`` keeps the easy loss on the whole batch every step and adds the hard loss on a sub-batch
of that share of the rows, so the data levels never lose rows to the hard loss.

The naive baseline (:mod:`tokendiff.objectives.naive`) treats ``y`` as clean data whose masked tokens
are simply not scored.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tokendiff.errors import TokenDiffError
from tokendiff.objectives.times import stratified_uniform
from tokendiff.processes.absorbing import AbsorbingKernel

__all__ = ["AmbientObjective", "level_of_alpha", "scored_nll"]

HARD_LOSSES = ("consistency", "imputation", "em")


def level_of_alpha(schedule, q: float, iters: int = 80) -> float:
    """The time ``t_n`` with ``alpha(t_n) = q``, by bisection (alpha decreases in t)."""
    lo, hi = 0.0, 1.0
    if not float(schedule.alpha(torch.tensor(1.0, dtype=torch.float64))) <= q <= 1.0:
        raise TokenDiffError(f"data.observed_fraction={q} is below alpha(1) of the schedule; use a larger value")
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if float(schedule.alpha(torch.tensor(mid, dtype=torch.float64))) > q:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def scored_nll(logits: torch.Tensor, target: torch.Tensor, scored: torch.Tensor) -> torch.Tensor:
    """``-log p(target)`` where ``scored``, 0 elsewhere (target may hold the mask id there). (B, L)."""
    V = logits.shape[-1]
    nll = F.cross_entropy(logits.float().transpose(1, 2), target.clamp(max=V - 1), reduction="none")
    return torch.where(scored, nll, torch.zeros_like(nll))


class AmbientObjective:
    """Easy loss above the corruption level ``t_n``, consistency loss below it.

    Args:
        kernel: the clean :class:`AbsorbingKernel` (schedule, mask id); also used for evaluation.
        observed_fraction: ``q``, the probability that a token of the data was observed.
        consistency_weight: weight of the hard loss below ``t_n`` (0 = easy loss only).
        descent_steps: forward passes (no gradient) that reach the anchor from ``y`` (consistency) or
            draw the imputations (imputation).
        easy_fraction: share of each batch trained with the easy loss (the rest: the hard loss).
        hard_loss: below ``t_n``, ``consistency`` (tower property) or ``imputation`` (Monte Carlo EM).
        divergence: of the consistency loss, ``squared`` (probabilities) or ``kl``.
        hard_start: share of training (``progress``) with the easy loss alone, before the hard loss.
        t_min: truncation of the weights that diverge at ``t_n`` and at 0 (see :class:`CleanObjective`).
        hard_batch: > 0: the easy loss on every row and the hard loss on this share of the rows on top
            (0: ``easy_fraction`` splits the rows between the two).
        imputed_weight, impute_rounds, refresh, gibbs_share: of ``hard_loss=em`` (module docstring).
        consistency_reveal: > 0: the consistency loss reveals this share of the anchor's masked tokens (drawn by
            the model's sequential sampler, ``descent_steps`` rounds) twice independently and scores the
            product of the two residuals (:meth:`residual_terms`); 0: the exact one-token reveal.
        consistency_max_masked: the consistency anchors are drawn at levels with at most this share of the
            tokens masked (1: every level below ``t_n``). Every state it scores then lies at or below that
            share, so the noisy levels, which decide a sample's global shape, keep the easy loss alone. The
            minimizers are unchanged (the true conditionals make every term zero).
    """

    name = "ambient"
    extra_tokens = 0

    def __init__(
        self,
        kernel: AbsorbingKernel,
        observed_fraction: float,
        consistency_weight: float = 1.0,
        descent_steps: int = 2,
        easy_fraction: float = 0.5,
        hard_loss: str = "consistency",
        divergence: str = "kl",
        hard_start: float = 0.0,
        t_min: float = 1e-3,
        hard_batch: float = 0.0,
        imputed_weight: float = 1.0,
        impute_rounds: int = 16,
        refresh: float = 0.25,
        gibbs_share: float = 0.1,
        consistency_reveal: float = 0.0,
        consistency_max_masked: float = 1.0,
    ):
        if not 0.0 < observed_fraction <= 1.0:
            raise TokenDiffError(f"data.observed_fraction={observed_fraction} must lie in (0, 1], e.g. 0.1")
        if consistency_weight < 0:
            raise TokenDiffError(f"ambient.consistency_weight={consistency_weight} must be >= 0")
        self.kernel = kernel
        self.schedule = kernel.schedule
        self.vocab_size = kernel.vocab_size
        self.mask_token_id = kernel.mask_token_id
        self.t_min = t_min
        self.q = observed_fraction
        self.t_n = level_of_alpha(kernel.schedule, observed_fraction)
        self.consistency_weight = consistency_weight
        self.descent_steps = descent_steps
        if not 0.0 < easy_fraction <= 1.0:
            raise TokenDiffError(f"ambient.easy_fraction={easy_fraction} must lie in (0, 1], e.g. 0.5")
        self.easy_fraction = easy_fraction
        if hard_loss not in HARD_LOSSES:
            raise TokenDiffError(f"ambient.hard_loss={hard_loss!r} is unknown; use one of {list(HARD_LOSSES)}")
        if divergence not in ("squared", "kl"):
            raise TokenDiffError(f"ambient.divergence={divergence!r} is unknown; use squared or kl")
        self.hard_loss = hard_loss
        self.divergence = divergence
        if not 0.0 <= hard_start < 1.0:
            raise TokenDiffError(f"ambient.hard_start={hard_start} must lie in [0, 1), e.g. 0.3")
        self.hard_start = hard_start
        for name, value in (("hard_batch", hard_batch), ("imputed_weight", imputed_weight), ("refresh", refresh)):
            if not 0.0 <= value <= 1.0:
                raise TokenDiffError(f"ambient.{name}={value} must lie in [0, 1]")
        if not 0.0 < gibbs_share <= 1.0 or impute_rounds < 1:
            raise TokenDiffError(
                f"ambient.gibbs_share={gibbs_share} must lie in (0, 1] and ambient.impute_rounds={impute_rounds} "
                "be >= 1"
            )
        if not 0.0 <= consistency_reveal < 1.0:
            raise TokenDiffError(f"ambient.consistency_reveal={consistency_reveal} must lie in [0, 1), e.g. 0.25")
        self.consistency_reveal = consistency_reveal
        if not 0.0 < consistency_max_masked <= 1.0:
            raise TokenDiffError(
                f"ambient.consistency_max_masked={consistency_max_masked} must lie in (0, 1], e.g. 0.5"
            )
        if consistency_max_masked < 1.0 and hard_loss != "consistency":
            raise TokenDiffError(
                f"ambient.consistency_max_masked={consistency_max_masked} is for ambient.hard_loss=consistency; "
                f"{hard_loss} estimates the NELBO over every level below t_n, so leave it at 1"
            )
        # the highest anchor level: 1 - alpha(t) = consistency_max_masked, and never above t_n
        self.t_consistency = level_of_alpha(kernel.schedule, max(observed_fraction, 1.0 - consistency_max_masked))
        self.hard_batch = hard_batch
        self.imputed_weight = imputed_weight
        self.impute_rounds = impute_rounds
        self.refresh = refresh
        self.gibbs_share = gibbs_share
        self.buffer: dict[bytes, torch.Tensor] = {}  # em: completed copy of each training sequence, by its y
        self.imputer = None  # em: the model that imputes (the trainer binds its EMA weights)

    # ------------------------------------------------------------------ easy
    def easy_terms_given(self, logits, y, z, t):
        """Deterministic part of the easy loss: (B, L) terms for given ``y``, ``z`` and ``t`` (B,)."""
        alpha, alpha_prime = self.schedule.alpha(t.double()), self.schedule.alpha_prime(t.double())
        weight = (-alpha_prime / (self.q - alpha)).float()[:, None]  # (B, 1)
        newly_masked = (y != self.mask_token_id) & (z == self.mask_token_id)  # N: (B, L)
        return weight * scored_nll(logits, y, newly_masked)

    def remask(self, y, t, generator):
        """``z``: each observed token of ``y`` masked again with probability ``1 - alpha(t)/q``."""
        keep = (self.schedule.alpha(t.double()) / self.q).float()[:, None]  # (B, 1)
        u = torch.rand(y.shape, generator=generator, device=y.device)
        return torch.where(u < keep, y, torch.full_like(y, self.mask_token_id))

    def easy_terms(self, model, y, t, generator):
        z = self.remask(y, t, generator)
        return self.easy_terms_given(model(z, t), y, z, t)

    # ------------------------------------------------------------------ consistency
    @torch.no_grad()
    def fill(self, model, z, positions, generator, rounds: int | None = None):
        """Reveal the masked tokens ``positions`` (B, L) of ``z`` with the model's own draws, in a
        uniformly random order split into ``rounds`` (default ``descent_steps``) rounds of one forward pass
        each (one token per round is the exact sequential draw; more per round draw them independently
        given ``z``)."""
        steps = rounds or self.descent_steps
        n = positions.sum(1, keepdim=True)  # (B, 1)
        scores = torch.rand(z.shape, generator=generator, device=z.device).masked_fill(~positions, 2.0)
        rank = scores.argsort(1).argsort(1)  # (B, L): order of reveal among the positions
        for k in range(steps):
            reveal = positions & (rank >= n * k // steps) & (rank < n * (k + 1) // steps)
            if not reveal.any():
                continue
            log_p = torch.log_softmax(model(z, None).double(), dim=-1)  # (B, L, V)
            z = torch.where(reveal, _gumbel_argmax_g(log_p, generator), z)
        return z

    @torch.no_grad()
    def descend(self, model, y, t, generator):
        """Reveal tokens of ``y`` with the model's own predictions until ~``1 - alpha(t)`` stay masked."""
        L = y.shape[1]
        masked = y == self.mask_token_id
        target = torch.round(L * (1.0 - self.schedule.alpha(t.double()))).long()  # (B,) masks to keep
        n_reveal = (masked.sum(1) - target).clamp(min=0)  # (B,)
        scores = torch.rand(y.shape, generator=generator, device=y.device).masked_fill(~masked, 2.0)
        chosen = masked & (scores.argsort(1).argsort(1) < n_reveal[:, None])  # a uniform subset
        return self.fill(model, y, chosen, generator)

    def consistency_terms_given(self, model, z, j):
        """(B, L) consistency terms for anchors ``z`` (B, L) and revealed positions ``j`` (B,)."""
        mask = self.mask_token_id
        B, L = z.shape
        with torch.no_grad():
            g = torch.softmax(model(z, None).float(), dim=-1)  # (B, L, V) anchor, stop-gradient
        rows = torch.arange(B, device=z.device)
        expected = torch.zeros_like(g)  # (B, L, V): sum_v g_j(v) f^v
        for v in range(self.vocab_size):
            z_v = z.clone()
            z_v[rows, j] = v
            f_v = torch.softmax(model(z_v, None).float(), dim=-1)  # (B, L, V) with gradient
            expected = expected + g[rows, j, v][:, None, None] * f_v
        scored = z == mask  # (B, L)
        scored[rows, j] = False
        if self.divergence == "kl":  # KL(g || expected): both sides exact, so no sampling bias
            log_g = torch.log(g.clamp(min=1e-12))
            div = (g * (log_g - torch.log(expected.clamp(min=1e-12)))).sum(-1)  # (B, L)
        else:
            div = ((expected - g) ** 2).sum(-1)  # (B, L)
        return torch.where(scored, div, torch.zeros_like(div))

    def residual_terms(self, model, z, generator):
        """(B, L) multi-token consistency terms of anchors ``z``: reveal a uniformly drawn share
        ``consistency_reveal`` of the masked tokens (k of m), twice, with independent draws of the model's
        sampler (no gradient), and score ``m/k (f' - g) . (f'' - g)`` on the tokens still masked: an
        unbiased estimate of ``m/k ||E[f] - g||^2`` (independent draws), zero in expectation for the exact
        conditionals of any distribution (tower property), with the gradient through both ``f``."""
        mask = self.mask_token_id
        masked = z == mask  # (B, L)
        m = masked.sum(1, keepdim=True)  # (B, 1)
        k = (m.double() * self.consistency_reveal).round().long().clamp(min=1)
        k = torch.minimum(k, (m - 1).clamp(min=0))  # leave at least one token to score
        scores = torch.rand(z.shape, generator=generator, device=z.device).masked_fill(~masked, 2.0)
        reveal = masked & (scores.argsort(1).argsort(1) < k)  # (B, L)
        with torch.no_grad():
            g = torch.softmax(model(z, None).float(), dim=-1)  # (B, L, V) anchor, stop-gradient
            first = self.fill(model, z, reveal, generator)
            second = self.fill(model, z, reveal, generator)
        f1 = torch.softmax(model(first, None).float(), dim=-1)  # (B, L, V) with gradient
        f2 = torch.softmax(model(second, None).float(), dim=-1)
        product = ((f1 - g) * (f2 - g)).sum(-1)  # (B, L)
        scale = (m.float() / k.clamp(min=1).float()) * (k > 0)  # a k-of-m reveal moves k/m of the way
        return torch.where(masked & ~reveal, product, torch.zeros_like(product)) * scale

    def consistency_terms(self, model, y, t, generator):
        z = self.descend(model, y, t, generator)  # (B, L) anchors below t_n
        if self.consistency_reveal > 0:
            return self.residual_terms(model, z, generator)
        masked = z == self.mask_token_id
        # one masked position per row, uniformly (rows with fewer than two masks contribute nothing)
        scores = torch.rand(z.shape, generator=generator, device=z.device).masked_fill(~masked, -1.0)
        j = scores.argmax(1)  # (B,)
        terms = self.consistency_terms_given(model, z, j)
        # A one-token reveal moves 1/m of the way through the m masked tokens, so the violation it
        # shows is small: scale by m (violation per unit of masking), which puts the gradient of
        # consistency_weight=1 on the scale of the data term's (bench/mnist_loss_scale.py). A positive
        # weight per state: the minimizers (the conditionals of a distribution) are unchanged.
        m = masked.sum(1, keepdim=True)  # (B, 1)
        return terms * m * (m >= 2)

    # ------------------------------------------------------------------ imputation
    def imputation_terms_given(self, logits, y, z, t):
        """(B, L) imputation terms: ``w(t) / q * -log p(y_i | z)`` on the observed tokens masked in ``z``."""
        alpha, alpha_prime = self.schedule.alpha(t.double()), self.schedule.alpha_prime(t.double())
        weight = (-alpha_prime / ((1.0 - alpha) * self.q)).float()[:, None]  # (B, 1)
        targets = (y != self.mask_token_id) & (z == self.mask_token_id)
        return weight * scored_nll(logits, y, targets)

    def imputation_terms(self, model, y, t, generator):
        """The clean NELBO integrand at ``t < t_n`` with the missing data imputed by the model.

        Draw the visible set of ``x_t`` (each token w.p. ``alpha(t)``, independently of ``y``); fill its
        unobserved tokens with the model's own draws given all of ``y`` (no gradient); score the observed
        tokens it hides. Each masked token of ``z`` was observed w.p. ``q`` independently of the values,
        so with exact imputations (draws from ``p(x_missing | y)``) this is an unbiased estimate of the
        clean NELBO integrand (tested by enumeration): Monte Carlo EM, whose fixed points include the
        data distribution.
        """
        mask = self.mask_token_id
        visible = (
            torch.rand(y.shape, generator=generator, device=y.device) < self.schedule.alpha(t.double()).float()[:, None]
        )
        observed = y != mask
        filled = self.fill(model, y, visible & ~observed, generator)
        z = torch.where(visible, filled, torch.full_like(y, mask))
        return self.imputation_terms_given(model(z, None), y, z, t)

    # ------------------------------------------------------------------ EM with an imputation buffer
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
        mask = self.mask_token_id
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
        weight = self.schedule.weight(t.double()).float()[:, None]  # (B, 1): -alpha'/(1 - alpha)
        masked = z == self.mask_token_id
        observed = (y != self.mask_token_id).float()
        share = observed + self.imputed_weight * (1.0 - observed)  # (B, L)
        return weight * share * scored_nll(logits, x_hat, masked)

    def em_terms(self, model, y, t, generator):
        x_hat = self.completed(y, generator)  # (B, L)
        alpha = self.schedule.alpha(t.double()).float()[:, None]  # (B, 1)
        keep = torch.rand(y.shape, generator=generator, device=y.device) < alpha
        z = torch.where(keep, x_hat, torch.full_like(x_hat, self.mask_token_id))
        return self.em_terms_given(model(z, None), x_hat, y, z, t)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The imputation buffer as tensors (a checkpoint's ``training_state/objective.safetensors``)."""
        if not self.buffer:
            return {}
        keys = torch.stack([torch.frombuffer(bytearray(k), dtype=torch.int32) for k in self.buffer])
        return {"em_observed": keys, "em_completed": torch.stack(list(self.buffer.values())).to(torch.int32)}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.buffer = {}
        if "em_observed" in tensors:
            for key, row in zip(tensors["em_observed"], tensors["em_completed"]):
                self.buffer[self._key(key)] = row.long()

    # ------------------------------------------------------------------ training entry point
    def loss_terms(self, model, y, generator=None, progress: float = 1.0):
        """(B, L) terms: a share ``easy_fraction`` of the rows gets the easy loss at a time drawn
        uniformly in ``[t_n, 1]``, the others the weighted hard loss at a level uniform in ``[0, t_n)``.
        Drawing ``t ~ U[0, 1]`` instead would give the easy loss only ``1 - t_n`` = 10% of the rows at
        q = 0.1, and with it almost all of the data's signal. With ``hard_batch > 0`` every row gets the
        easy loss and a share ``hard_batch`` of them the hard loss as well."""
        B = y.shape[0]
        u = stratified_uniform(B, generator, y.device)  # antithetic over [0, 1)
        # the hard loss needs a model that already knows the data level: off for the first hard_start
        hard_on = self.consistency_weight > 0 and progress >= self.hard_start
        on_top = self.hard_batch > 0
        p = 1.0 if on_top or not hard_on else self.easy_fraction
        high = u < p
        terms = torch.zeros(y.shape, device=y.device)
        if high.any():
            t_high = self.t_n + (1.0 - self.t_n) * (u[high] / p)
            # the weight -alpha'/(q - alpha) diverges at t_n like 1/t at 0 for clean data: truncate the
            # same way (CleanObjective.t_min), a bias below 0.1%
            t_high = t_high.clamp(min=self.t_n + self.t_min * (1 - self.t_n))
            terms[high] = self.easy_terms(model, y[high], t_high, generator)
        if on_top and hard_on:  # a sub-batch with the hard loss too, at levels stratified over [0, t_n)
            k = max(1, round(self.hard_batch * B))
            rows = torch.randperm(B, generator=generator, device=y.device)[:k]
            levels = stratified_uniform(k, generator, y.device)
            terms[rows] += self.consistency_weight * self._hard(model, y[rows], levels, generator)
        elif (~high).any():
            terms[~high] = self.consistency_weight * self._hard(model, y[~high], (u[~high] - p) / (1.0 - p), generator)
        return terms

    def _hard(self, model, y, u, generator):
        """The hard loss of rows ``y`` at levels ``t = t_n u`` (``u`` in [0, 1); consistency: up to the level
        of ``consistency_max_masked``)."""
        if self.hard_loss == "consistency":
            return self.consistency_terms(model, y, self.t_consistency * u, generator)
        t_low = self.t_n * u
        # the weight -alpha'/((1 - alpha) q) diverges at t = 0 like 1/t: the same truncation
        t_low = t_low.clamp(min=self.t_min * self.t_n)
        if self.hard_loss == "imputation":
            return self.imputation_terms(model, y, t_low, generator)
        return self.em_terms(model, y, t_low, generator)


def _gumbel_argmax_g(log_probs, generator):
    """Categorical draw from one generator for the whole batch (training-time, not the sampler's rule)."""
    u = torch.rand(log_probs.shape, generator=generator, device=log_probs.device, dtype=torch.float64)
    u = u.clamp(min=torch.finfo(torch.float64).tiny, max=1 - 2**-53)
    return torch.argmax(log_probs - torch.log(-torch.log(u)), dim=-1)
