"""Model selection from corrupted data alone: the clean NELBO estimated on held-out corrupted images.

An ambient user has no clean image, so settings and checkpoints must be chosen on corrupted data (issue
11). :func:`corrupted_nelbo` estimates the clean NELBO of a model on held-out images ``y`` that were
observed at a share ``q`` of their tokens, in two parts (``shared/notes/ambient.md``):

* levels ``t >= t_n`` (``alpha(t_n) = q``): the easy estimator (re-mask the observed tokens, score the
  ones re-masked with ``-alpha'/(q - alpha)``), unbiased for the clean integrand whatever the model;
* levels ``t < t_n``: multiple imputation. The visible set of ``x_t`` is drawn independently of ``y``, its
  unobserved tokens are imputed by the model's own sequential sampler given all of ``y``
  (``impute_rounds`` rounds, observed tokens clamped), and the observed tokens it hides are scored with
  ``-alpha'/((1 - alpha) q)``. With exact imputations this is unbiased for the clean integrand (the
  enumeration test of ``AmbientObjective.imputation_terms``); with the model's own it rewards a model whose
  dense-context predictions agree with real held-out pixels, which is what the levels below ``t_n`` need.

Each part is a Gauss-Legendre quadrature in ``t`` with one draw per image and node (the same draws for
every model given the seed), as ``bench/mnist_levels.py`` does for clean images.
"""

from __future__ import annotations

import numpy as np
import torch

from tokendiff.objectives.ambient import AmbientObjective

__all__ = ["corrupted_nelbo"]


@torch.no_grad()
def corrupted_nelbo(
    model,
    kernel,
    y: torch.Tensor,
    observed_fraction: float,
    *,
    low_nodes: int = 8,
    high_nodes: int = 4,
    impute_rounds: int = 16,
    seed: int = 0,
    batch_size: int = 250,
) -> dict:
    """Estimated clean NELBO (nats per sequence) of ``model`` from corrupted sequences ``y`` (N, L).

    Returns ``below_t_n``, ``above_t_n`` and ``total`` (means over the sequences) with their standard
    errors (``*_stderr``, over sequences), and ``per_sequence`` (N,) totals.
    """
    objective = AmbientObjective(kernel, observed_fraction, descent_steps=impute_rounds, t_min=0.0)
    sides = {"below_t_n": (0.0, objective.t_n, low_nodes), "above_t_n": (objective.t_n, 1.0, high_nodes)}
    per_side = {}
    for side, (a, b, n) in sides.items():
        nodes, weights = np.polynomial.legendre.leggauss(n)
        total = torch.zeros(y.shape[0], dtype=torch.float64)
        for node, weight in zip(a + (b - a) * (nodes + 1) / 2, weights * (b - a) / 2):
            generator = torch.Generator(device=y.device).manual_seed(seed)
            for s in range(0, y.shape[0], batch_size):
                yb = y[s : s + batch_size]
                t = torch.full((yb.shape[0],), float(node), dtype=torch.float64, device=y.device)
                if side == "above_t_n":
                    terms = objective.easy_terms(model, yb, t, generator)
                else:
                    terms = objective.imputation_terms(model, yb, t, generator)
                total[s : s + yb.shape[0]] += weight * terms.double().sum(1).cpu()
        per_side[side] = total
    out = {}
    per_sequence = per_side["below_t_n"] + per_side["above_t_n"]
    for name, values in (*per_side.items(), ("total", per_sequence)):
        out[name] = float(values.mean())
        out[f"{name}_stderr"] = float(values.std() / len(values) ** 0.5) if len(values) > 1 else None
    out["per_sequence"] = per_sequence
    return out
