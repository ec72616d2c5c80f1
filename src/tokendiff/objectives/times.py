"""Training times: uniform draws, optionally stratified (antithetic) within a batch."""

from __future__ import annotations

import torch

__all__ = ["stratified_uniform", "sample_times"]


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
