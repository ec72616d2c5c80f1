"""Block scheduling for block-wise (semi-autoregressive) sampling, as LLaDA and BD3-LM.

Blocks of ``size`` positions are denoised left to right, each within one context window of the model, with
the earlier blocks fixed and (for an ordinary model) the later ones still masked. A block diffusion model's
blocks are its own, counted from position 0, and its window holds the finished blocks that fit in the
context; an ordinary model's blocks start at the first position to generate, and its window is the context
that ends with the block (the whole sequence if it fits).
"""

from __future__ import annotations

import torch

from tokendiff.errors import TokenDiffError

__all__ = ["block_spans", "block_window", "block_steps"]


def block_spans(free: torch.Tensor, size: int, context: int, aligned: bool) -> list[tuple[int, int]]:
    """The blocks ``[(a, end), ...]`` of ``free`` (B, L), left to right, those with nothing to generate left
    out. ``aligned``: blocks counted from position 0 (a block diffusion model's), else from the first free
    position. A block wider than the model's ``context`` is refused (the model cannot see it whole)."""
    L = free.shape[1]
    columns = free.any(0).nonzero().flatten()
    if len(columns) == 0:
        return []
    first = int(columns[0]) // size * size if aligned else int(columns[0])
    blocks = [(a, min(a + size, L)) for a in range(first, L, size)]
    blocks = [(a, e) for a, e in blocks if free[:, a:e].any()]
    widest = max(e - a for a, e in blocks)
    if widest > context:
        raise TokenDiffError(
            f"sampling.block_size={size} is larger than the model's context of {context} tokens, and this "
            f"{L}-token text needs a block of {widest}; use sampling.block_size<={context}"
        )
    return blocks


def block_window(a: int, end: int, L: int, size: int, context: int, aligned: bool) -> tuple[int, int]:
    """The window ``(lo, hi)`` the model sees while it denoises the block ``a:end`` of an ``L``-token text."""
    if aligned:  # block diffusion: the finished blocks that fit in the context, then this block
        return max(0, a - (context - size)), end
    hi = max(end, min(L, context))  # the context window that ends with this block
    return hi - min(L, context), hi


def block_steps(steps: int, n_blocks: int, b: int) -> int:
    """Steps of block ``b``: ``steps`` split evenly across the blocks (the first ones get the remainder)."""
    return max(1, steps // n_blocks + (b < steps % n_blocks))
