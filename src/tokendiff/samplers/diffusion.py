"""The reverse loop of every kernel: from prior draws at the positions to generate to clean sequences.

Start: the positions to generate (those holding the mask id in the initial sequence) are drawn from
the kernel's prior ``p(x_1)``; the other positions (a prompt, a template's text) are held fixed at
every step. With an absorbing kernel holding them is what the reverse step does anyway; with uniform or
hybrid noise it conditions the sampler by replacement.

Steps: each step calls the model (or reuses its logits), filters them (:mod:`tokendiff.samplers.noise`) and
hands them to the step rule of ``sampling.strategy`` (:mod:`tokendiff.samplers.rules`); the loop owns the
model calls, the blocks (:mod:`tokendiff.samplers.blocks`) and the KV caches (:mod:`tokendiff.samplers.kv_cache`).

Cache: a time-agnostic denoiser (the masked default) gives the same logits for the same input. A step in
which no token was revealed leaves ``x`` unchanged, so the next step reuses the logits instead of
calling the model. With many steps most steps reveal nothing; the output is identical to the uncached
loop because both draw exactly the same noise.

Length: block-wise sampling writes texts longer than the model's context, and its memory grows only with
``B x L`` token ids (the prior's noise is drawn a chunk of positions at a time, and a step's logits cover
one context window), so ``L`` is bounded by time, not memory: one model call or more per block.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import torch

from tokendiff.errors import TokenDiffError
from tokendiff.models.base import Backbone
from tokendiff.processes.base import Kernel
from tokendiff.samplers.blocks import block_spans, block_steps, block_window
from tokendiff.samplers.kv_cache import BlockCache
from tokendiff.samplers.loo_corrector import corrector_budget
from tokendiff.samplers.noise import gumbel_argmax, process_log_probs, row_generators, row_uniform
from tokendiff.samplers.rules import step_rule
from tokendiff.samplers.settings import SamplingSettings
from tokendiff.samplers.step import StepInput
from tokendiff.samplers.time_grid import time_grid
from tokendiff.samplers.visible import VisibleSubsets

__all__ = [
    "DiffusionSampler",
    "row_generators",
    "row_uniform",
    "process_log_probs",
    "gumbel_argmax",
    "step_temperature",
]

PRIOR_CHUNK = 1 << 20  # float64 noise values of the prior drawn at once: 8 MiB a copy, whatever the length


def step_temperature(settings: SamplingSettings, index: int, steps: int) -> float:
    """The temperature of step ``index`` of ``steps``: ``sampling.temperature``, or with
    ``temperature_start``/``temperature_end`` the linear anneal of diffusers' EntropyBoundScheduler,
    ``end + (start - end) (steps - index) / steps``: ``start`` on the first step, one step short of ``end``
    on the last."""
    if settings.temperature_start is None:
        return float(settings.temperature)
    start, end = float(settings.temperature_start), float(settings.temperature_end)
    return end + (start - end) * (steps - index) / steps


class DiffusionSampler:
    """Reverse loop from prior draws (at the positions to generate) to clean sequences.

    Args:
        model: a backbone (:class:`tokendiff.models.base.Backbone`): ``model(x, t) -> logits (B, L, V)``, with
            its declared capabilities (``time_conditioning``, ``block_diffusion``, ``supports_kv_cache``,
            ``block_size`` = its context).
        kernel: the forward kernel it was trained with.
        settings: every knob of the loop (:class:`~tokendiff.samplers.settings.SamplingSettings`).
        **options: settings fields by name, a shorthand for ``SamplingSettings(**options)`` (or, with
            ``settings``, overrides of it).

    Block-wise sampling (``settings.block_size``, or always for a block diffusion model, with the model's
    own block size) denoises blocks left to right, each by the step rule, the earlier blocks fixed and the
    later ones masked; ``steps`` are split evenly across the blocks. A block is denoised within one context
    window, so a block wider than the model's context is refused. An ordinary model needs masks for it (its
    later blocks are held masked); a block diffusion model never sees later blocks, so with uniform noise each
    block starts from the prior and runs the step rule from t = 1 to 0, given the clean earlier blocks at t = 0.
    """

    def __init__(self, model: Backbone, kernel: Kernel, settings: SamplingSettings | None = None, **options):
        settings = replace(settings, **options) if settings is not None else SamplingSettings(**options)
        block_model = model.block_diffusion
        self.rule = step_rule(kernel, settings)  # refuses a strategy the kernel cannot follow
        # an ordinary model's blocks hold later blocks masked, which only masks can do; a block diffusion model
        # never sees later blocks, and each of its blocks starts from the prior, whatever the kernel
        if settings.block_size is not None and not kernel.reveals_are_final and not block_model:
            raise TokenDiffError(
                f"sampling.block_size={settings.block_size}: block-wise sampling needs a block size >= 1 and masks "
                f"that stay revealed (diffusion.process={kernel.name}); drop sampling.block_size"
            )
        if block_model and settings.block_size not in (None, block_model):
            raise TokenDiffError(
                f"sampling.block_size={settings.block_size}: this block diffusion model samples its own blocks of "
                f"diffusion.block_size={block_model}; drop sampling.block_size"
            )
        if settings.kv_cache in ("prefix", "dual") and not block_model:
            if settings.block_size is None or not model.supports_kv_cache:
                raise TokenDiffError(
                    f"sampling.kv_cache={settings.kv_cache} caches keys and values across the steps of a block: it "
                    "needs sampling.block_size (e.g. 32) and a model with a KV cache: the tokendiff transformer "
                    "(model.arch=transformer) without model.logit_shift"
                )
        self.model, self.kernel, self.settings = model, kernel, settings
        self.steps = settings.steps
        # the logits cache reuses a call for the same input, which a self-conditioned model's are not (its previous
        # estimate changes every step)
        self.cache = settings.cache and not model.time_conditioning and not model.self_conditioning
        self.kv_cache = "none" if settings.kv_cache == "auto" and not block_model else settings.kv_cache
        self.block_size = settings.block_size or block_model  # None: the whole sequence at once
        self.blockwise = self.block_size is not None
        self.visible = None
        if settings.visible_limit is not None:
            self.visible = VisibleSubsets(settings.visible_limit, settings.visible_subsets, kernel.mask_token_id)
        self.model_calls = 0  # counted for the benchmark and the cache test

    def model_logits(
        self, x: torch.Tensor, t: float, previous: torch.Tensor | None = None, clean: int = 0
    ) -> torch.Tensor:
        """The model's logits of ``x`` (B, L) at time ``t``, (B, L, V) (or, past ``visible_limit``, the log of
        its probabilities averaged over visible subsets). ``previous``: a self-conditioned model's previous
        estimate of the clean tokens (B, L, V). ``clean``: the first positions are a block diffusion model's
        finished blocks, which a time-conditioned model is told are at ``t = 0`` (as its training's clean half)."""
        times = torch.full((x.shape[0],), t, device=x.device)  # (B,)
        if clean and self.model.time_conditioning:
            times = torch.full(x.shape, t, device=x.device)  # (B, L) one time per position
            times[:, :clean] = 0.0

        def call(z):
            self.model_calls += 1
            if previous is not None:
                return self.model(z, times, previous=previous)
            return self.model(z, times)  # (B, L, V)

        if self.visible is None or not self.visible.needed(x):
            return call(x)
        return self.visible.log_probs(call, x)

    @torch.no_grad()
    def sample(
        self,
        x_init: torch.Tensor,
        generators: list[torch.Generator],
        callback: Callable[[int, torch.Tensor], None] | None = None,
        stop_id: int | None = None,
        progress: Callable[[int], object] | None = None,
    ) -> torch.Tensor:
        """Generate the positions of ``x_init`` (B, L) that hold the mask id; the others never change.
        Returns (B, L) ids.

        ``generators``: one per row (see :func:`row_generators`). ``callback(step, x)`` is called
        after each step, e.g. to record the denoising trajectory. Block-wise only: ``L`` may exceed the
        model's context (each block is denoised in the window of the context that ends with it), and once
        every row has written ``stop_id`` (an EOS) the remaining positions are filled with it, and
        ``progress(n)`` is called as each block is done (``n`` = 1, or the blocks an EOS made unnecessary).
        """
        if len(generators) != x_init.shape[0]:
            raise TokenDiffError(f"got {len(generators)} generators for a batch of {x_init.shape[0]}")
        if self.visible is not None:  # subsets from streams of their own, per row (batch-invariant)
            self.visible.start(generators)
        free = x_init == self.kernel.mask_token_id  # (B, L) the positions to generate
        blocks = self.blocks(free) if self.blockwise else []  # checked before any work
        x = torch.where(free, self._draw_prior(x_init, generators), x_init)  # (B, L) x_1 ~ p(x_1) where free
        if not self.blockwise:
            return self._denoise(x, free, self.steps, generators, callback, 0, last=True)
        return self._sample_blocks(x, free, blocks, generators, callback, stop_id, progress)

    def _sample_blocks(self, x, free, blocks, generators, callback, stop_id, progress) -> torch.Tensor:
        """Semi-autoregressive: ``blocks`` left to right; a block's steps see the earlier blocks as fixed text
        (and, for an ordinary model, the later ones still masked). Each block is written into ``x`` in place:
        the work per block is that of its window, not of the whole sequence, so a long text costs linear time."""
        L = x.shape[1]
        aligned, context = bool(self.model.block_diffusion), self.model.block_size
        cache = BlockCache(self)
        ended = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)  # rows that wrote stop_id
        offset = 0
        for b, (a, end) in enumerate(blocks):
            steps = block_steps(self.steps, len(blocks), b)
            lo, hi = block_window(a, end, L, self.block_size, context, aligned)
            p0, p1, logits_fn = cache.prepare(x, lo, a, end, hi)  # denoise x[:, p0:p1], this block free in it
            cb = None
            if callback is not None:  # callbacks see the whole sequence
                cb = lambda i, xp, x=x, p0=p0, p1=p1: callback(i, torch.cat([x[:, :p0], xp, x[:, p1:]], 1))  # noqa: E731
            last = b == len(blocks) - 1
            block_free = free[:, p0:p1].clone()  # this block's free positions; the rest of the window is held
            block_free[:, : a - p0] = False
            block_free[:, end - p0 :] = False
            x[:, p0:p1] = self._denoise(x[:, p0:p1], block_free, steps, generators, cb, offset, last, logits_fn)
            offset += steps
            if progress is not None:
                progress(1)
            if stop_id is not None and not last:  # a row's EOS can only be in a finished block
                ended |= ((x[:, a:end] == stop_id) & free[:, a:end]).any(1)
                if bool(ended.all()):  # every row has ended its text
                    x[:, end:] = torch.where(free[:, end:], stop_id, x[:, end:])
                    if progress is not None:
                        progress(len(blocks) - b - 1)
                    return x
            if not last:
                next_lo = block_window(*blocks[b + 1], L, self.block_size, context, aligned)[0]
                cache.finish_block(x, lo, a, end, next_lo=next_lo)
        return x

    def blocks(self, free: torch.Tensor) -> list[tuple[int, int]]:
        """Block-wise sampling's blocks ``[(a, end), ...]`` of ``free`` (B, L) (:func:`block_spans`)."""
        return block_spans(free, self.block_size, self.model.block_size, aligned=bool(self.model.block_diffusion))

    def _draw_prior(self, x_init: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
        """``x_1 ~ p(x_1)`` at every position, (B, L), drawn a chunk of positions at a time: a long block-wise
        text never holds the (B, L, K) float64 noise at once. Each row's CPU generator yields the same numbers
        in the same order however its draws are split, so the tokens are those of one (B, L, K) draw."""
        B, L = x_init.shape
        log_prior = self.kernel.prior_log_probs().to(x_init.device)  # (K,)
        chunk = max(1, PRIOR_CHUNK // (B * log_prior.shape[-1]))
        # one output written chunk by chunk: a list of small parts kept alive between the large temporaries
        # fragments the heap (measured: +1 GB of resident memory at L = 128000 with 66 tokens, instead of 40 MB)
        x1 = torch.empty_like(x_init)
        for i in range(0, L, chunk):
            x1[:, i : i + chunk] = gumbel_argmax(log_prior.expand(B, min(chunk, L - i), -1), generators)
        return x1

    def _logits(self, x, t, logits_fn, last_logits):
        """This step's logits of ``x``: ``logits_fn``'s (a KV cache's), or :meth:`model_logits`'s, a
        self-conditioned model given the previous step's estimate (softmax of ``last_logits``; the block's first
        step: None, the model's own first pass)."""
        if logits_fn is not None:
            return logits_fn(x, t)
        if self.model.self_conditioning and last_logits is not None:
            return self.model_logits(x, t, previous=torch.softmax(last_logits.float(), dim=-1))
        return self.model_logits(x, t)

    def _denoise(self, x_start, free, steps, generators, callback, offset, last, logits_fn=None):
        """``steps`` reverse steps from t = 1 to 0 of the positions ``free`` (B, L); the others keep their
        values in ``x_start``. ``callback(offset + i, x)`` after step ``i``. ``logits_fn(x, t)``: the model's
        logits of ``x`` (default :meth:`model_logits`; block-wise sampling with a KV cache passes its own).

        Only the ``last`` call may stop early once nothing is masked: before another block, every step
        must draw its noise, so that each row's generator is where it would be in any batch (a complete
        step reuses the cached logits instead of calling the model)."""
        s = self.settings
        mask_id = self.kernel.mask_token_id
        steps, corrected = corrector_budget(steps, self.rule.sweeps)  # predictor steps; the first corrected ones
        times = time_grid(self.kernel, steps, s.time_grid)  # (N+1,) from 1 to 0
        alphas = self.kernel.alpha(times)  # (N+1,), alpha(0) = 1 reveals all remaining masks
        alphas[-1] = 1.0
        x = x_start
        masked0 = ((x == mask_id) & free).sum(-1)  # (B,) masks to fill
        final = last and self.kernel.reveals_are_final and not self.rule.remasks  # a known token stays known
        logits, logits_input = None, None
        for i in range(steps):
            if final and not ((x == mask_id) & free).any():
                break  # every position is known; later steps could change nothing
            if logits is None or not self.cache or not torch.equal(x, logits_input):
                logits = self._logits(x, float(times[i]), logits_fn, logits)  # (B, L, V)
                logits_input = x.clone()
            temperature = step_temperature(s, i, steps)
            log_p_x0 = process_log_probs(logits, temperature, float(s.top_p), s.top_k)  # (B, L, V)
            state = StepInput(
                x, x_start, free, float(times[i]), float(times[i + 1]), alphas[i], alphas[i + 1], alphas[0], masked0,
                generators, i, steps, logits, temperature,
            )  # fmt: skip
            x = self.rule.step(log_p_x0, state)  # (B, L)
            for _ in range(self.rule.sweeps if i < corrected else 0):  # corrector sweeps at time s, on x_s
                logits = self._logits(x, float(times[i + 1]), logits_fn, logits)  # (B, L, V)
                logits_input = x.clone()
                log_p_x0 = process_log_probs(logits, temperature, float(s.top_p), s.top_k)
                x = self.rule.correct(log_p_x0, replace(state, x=x, logits=logits))
            if callback is not None:
                callback(offset + i, x)
        return x
