"""Times of the NELBO's integral over t: uniform draws for training (optionally stratified within a batch),
and the importance density that evaluation uses to cover all of [0, 1]."""

from __future__ import annotations

import torch

__all__ = ["stratified_uniform", "sample_times", "sample_counts", "importance_times", "IMPORTANCE_SHARE"]

# share of evaluation's times drawn from the power law packed toward t = 0; measured on trained 15-minute
# Shakespeare models (bench/eval_importance_share.py, docs/kernels.md): the standard error of the hybrid
# bound is lowest near 0.1 (0.5 doubles it, 0.02 lets the t -> 0 tail back in), and for masks 0.1 costs
# ~1.2x the standard error of plain uniform times (whose variance diverges logarithmically at t = 0)
IMPORTANCE_SHARE = 0.1


def stratified_uniform(n: int, generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
    """``n`` antithetic (low-discrepancy) uniforms: draw ``i`` lies in ``[i/n, (i+1)/n)``. Shape (n,)."""
    u = torch.rand(n, generator=generator, device=device)  # (n,)
    return (u / n + torch.arange(n, device=device) / n) % 1.0


def sample_times(
    n: int, t_min: float, antithetic: bool, generator: torch.Generator | None = None, device="cpu"
) -> torch.Tensor:
    """``n`` times uniform in ``[t_min, 1]``, shape (n,); stratified over the batch when ``antithetic``."""
    u = stratified_uniform(n, generator, device) if antithetic else torch.rand(n, generator=generator, device=device)
    return t_min + (1.0 - t_min) * u


def sample_counts(n, antithetic: bool, generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
    """The count estimator's masked counts: ``k`` uniform on ``1..n`` per row, (B,) int64; ``n`` a (B,) tensor of
    positions per row. ``antithetic``: the rows' uniforms stratified over the batch."""
    B = n.shape[0]
    u = stratified_uniform(B, generator, device) if antithetic else torch.rand(B, generator=generator, device=device)
    return (u * n).long().clamp_max(n - 1) + 1


def importance_times(
    n: int, order: float, generator: torch.Generator | None = None, device="cpu", share: float = IMPORTANCE_SHARE
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` times on (0, 1] with their importance weights ``1 / density(t)``, both (n,) float64.

    The density is the mixture ``(1 - share) U[0, 1] + share * law(u^k)`` with ``u ~ U(0, 1)`` and
    ``k = 2 / order``, i.e. ``density(t) = (1 - share) + share t^(1/k - 1) / k``. ``weight * f(t)`` is an
    unbiased estimate of ``int_0^1 f(t) dt`` for any integrand, and of finite variance for the NELBO's:
    a kernel whose corruption probability grows like ``t^order`` near 0 (``kernel.small_time_order``) has
    events of probability ``~t^order`` that score ``~1/t`` (a masked or substituted token) and, for GIDD's
    uniform bump, clean tokens that score ``~t^(order - 1)``; their second moments against this density,
    ``int t^(order - 2) t^(1 - 1/k) dt`` and ``int t^(2 order - 2) t^(1 - 1/k) dt``, converge for
    ``k = 2 / order``, where uniform times (``k = 1``) diverge logarithmically for masks and like
    ``t^-1/2`` for GIDD at gamma = 1. The uniform component keeps the bulk of [0, 1] sampled as before.
    """
    if not order > 0:
        raise ValueError(f"order={order} must be > 0")
    k = 2.0 / order
    pick = torch.rand(n, generator=generator, dtype=torch.float64, device=device) < share  # (n,)
    u = torch.rand(n, generator=generator, dtype=torch.float64, device=device) + 2.0**-54  # (n,) in (0, 1)
    t = torch.where(pick, u.pow(k), u).clamp_min(1e-300)  # (n,)
    density = (1.0 - share) + share * t.pow(1.0 / k - 1.0) / k
    return t, 1.0 / density
