"""The KV caches of block-wise sampling: what the model sees, and what it recomputes, at each step of a block.

``sampling.kv_cache``: ``auto`` is the exact cache for a block diffusion model and none for others; ``none``
runs the model over the window at every step; ``prefix`` / ``dual`` keep the keys and values of the positions
before the block (``prefix``), or before and after it (``dual``), computed once per block (Fast-dLLM's
approximation for ordinary bidirectional models; for block diffusion models both mean the exact cache).
A model declares that it can (``supports_kv_cache``, :mod:`tokendiff.models.base`) and provides
``forward_cached(x, t, start, cache) -> (logits, cache)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from tokendiff.samplers.diffusion import DiffusionSampler

__all__ = ["BlockCache"]


class BlockCache:
    """What the model sees while block-wise sampling denoises one block: which part of ``x`` the steps run
    on, and how its logits are computed (``sampling.kv_cache``).

    Block diffusion model (exact): the keys and values of the finished blocks in the window are computed
    once (extended by each finished block, rebuilt when the window slides) and a step runs the block alone.
    ``kv_cache=none`` runs the window from its first finished block to this block at every step instead.
    Ordinary bidirectional model: ``none`` runs the whole window every step; ``prefix`` and ``dual`` (the
    approximate caches of Fast-dLLM, Wu et al. 2025) run the whole window once at the start of the block,
    keep its keys and values, and then run only the block and what follows it (``prefix``) or only the
    block (``dual``), against keys and values that are stale once tokens change elsewhere.
    """

    def __init__(self, sampler: "DiffusionSampler"):
        self.sampler, self.model, self.block_model = sampler, sampler.model, sampler.model.block_diffusion
        self.mode = sampler.kv_cache  # auto: the exact cache here (an ordinary model's auto is none already)
        self.cache = None  # block diffusion: the KVCache of the window's finished blocks x[:, lo:a]
        self.span = (0, 0)
        # the time of finished (clean) blocks: 0 for a time-conditioned block model, as the clean half of its
        # training call (Transformer.forward_block_diffusion); none for a time-agnostic one
        self.clean_time = 0.0 if self.model.time_conditioning else None

    def _call(self, x, t, start=0, cache=None):
        self.sampler.model_calls += 1
        times = None if t is None else torch.full((x.shape[0],), t, device=x.device)
        return self.model.forward_cached(x, times, start, cache)

    def prepare(self, x, lo: int, a: int, end: int, hi: int):
        """``(p0, p1, logits_fn)`` for the block ``a:end`` in the window ``lo:hi``."""
        if self.block_model:
            if self.mode == "none":  # uncached: the window's finished blocks and this block, every step
                prefix = x[:, lo:a]  # (B, a - lo) finished blocks, at t = 0 for a time-conditioned model

                def window_logits(xp, t):  # (B, end - a, V) of the block, run after its finished blocks
                    return self.sampler.model_logits(torch.cat([prefix, xp], 1), t, clean=a - lo)[:, a - lo :]

                return a, end, window_logits
            if self.span != (lo, a):  # first block, or the window slid: compute the finished blocks once
                self.cache = self._call(x[:, lo:a], self.clean_time)[1] if a > lo else None
                self.span = (lo, a)
            state = {"cache": self.cache}

            def block_logits(xp, t):  # the block alone, against the finished blocks' keys and values
                logits, state["cache"] = self._call(xp, t, a - lo, state["cache"])
                self.cache = state["cache"]
                return logits

            return a, end, block_logits
        if self.mode == "none":
            return lo, hi, None
        state = {}

        def logits_fn(xp, t):
            if "cache" not in state:  # the block's first step: the whole window, keeping its keys and values
                window = x[:, lo:hi] if self.mode == "dual" else torch.cat([x[:, lo:a], xp], 1)
                logits, state["cache"] = self._call(window, t)
                if self.mode == "prefix":
                    state["cache"].length = a - lo  # keep the positions before the block only
                return logits[:, a - lo : a - lo + xp.shape[1]]
            return self._call(xp, t, a - lo, state["cache"])[0]

        return (a, end, logits_fn) if self.mode == "dual" else (a, hi, logits_fn)

    def finish_block(self, x, lo: int, a: int, end: int, next_lo: int):
        """Block diffusion: write the finished block's keys and values into the cache (over the noisy block's),
        unless the next window starts elsewhere."""
        if not self.block_model or self.mode == "none" or next_lo != lo:
            return
        self.cache = self._call(x[:, a:end], self.clean_time, a - lo, self.cache)[1]
        self.span = (lo, end)
