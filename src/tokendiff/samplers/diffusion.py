"""The reverse loop of every kernel: ancestral steps, and confidence-ordered unmasking for masks.

Start: the positions to generate (those holding the mask id in the initial sequence) are drawn from
the kernel's prior ``p(x_1)``; the other positions (a prompt, a template's text) are held fixed at
every step. With an absorbing kernel holding them is what the reverse step does anyway; with uniform or
hybrid noise it conditions the sampler by replacement.

Noise: every random draw is float64 (float32 Gumbel noise measurably lowers sample diversity, because
its tail is cut at ~-log(-log(1 - 2^-24)) ~ 16.6) and comes from one seeded generator per sample
(:func:`row_generators`), so that sample ``i`` of seed ``s`` is the same whatever the batch size.

Cache: a time-agnostic denoiser (the masked default) gives the same logits for the same input. A step in
which no token was revealed leaves ``x`` unchanged, so the next step reuses the logits instead of
calling the model. With many steps most steps reveal nothing; the output is identical to the uncached
loop because both draw exactly the same noise.

Length: block-wise sampling writes texts longer than the model's context, and its memory grows only with
``B x L`` token ids (the prior's noise is drawn a chunk of positions at a time, and a step's logits cover
one context window), so ``L`` is bounded by time, not memory: one model call or more per block.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from tokendiff.errors import TokenDiffError
from tokendiff.processes.base import Kernel
from tokendiff.samplers.time_grid import TIME_GRIDS, time_grid

__all__ = ["DiffusionSampler", "row_generators", "row_uniform", "process_log_probs", "gumbel_argmax"]

STRATEGIES = ("ancestral", "confidence", "threshold")
CONFIDENCES = ("prob", "margin", "entropy")
KV_CACHES = ("auto", "none", "prefix", "dual")
SUBSET_STREAM = 0x5EED5  # offsets a row's seed for visible_limit's subsets
PRIOR_CHUNK = 1 << 20  # float64 noise values of the prior drawn at once: 8 MiB a copy, whatever the length


def row_generators(seed: int, n: int, start: int = 0) -> list[torch.Generator]:
    """One CPU generator per sample; sample ``i`` is seeded from ``(seed, start + i)`` only."""
    gens = []
    for i in range(start, start + n):
        state = int(np.random.SeedSequence([seed, i]).generate_state(1, dtype=np.uint64)[0] >> 1)
        gens.append(torch.Generator().manual_seed(state))
    return gens


def row_uniform(generators: list[torch.Generator], shape: tuple, device) -> torch.Tensor:
    """Float64 uniforms in (0, 1), shape (B, *shape), row ``b`` drawn from ``generators[b]``."""
    u = torch.stack([torch.rand(shape, generator=g, dtype=torch.float64) for g in generators])
    tiny = torch.finfo(torch.float64).tiny
    return u.clamp_(min=tiny, max=1.0 - 2**-53).to(device)


def gumbel_argmax(log_probs: torch.Tensor, generators) -> torch.Tensor:
    """Exact categorical draw ``argmax(log p + Gumbel)`` in float64. log_probs: (B, L, K) -> (B, L)."""
    u = row_uniform(generators, tuple(log_probs.shape[1:]), log_probs.device)  # (B, L, K)
    gumbel = -torch.log(-torch.log(u))  # (B, L, K)
    return torch.argmax(log_probs.double() + gumbel, dim=-1)


def process_log_probs(logits: torch.Tensor, temperature: float, top_p: float, top_k: int = 0) -> torch.Tensor:
    """Float64 log-probabilities after temperature, top-k and nucleus (top-p) filtering, (B, L, V).

    ``temperature == 0`` is greedy: a point mass on the most likely token. ``top_k`` keeps the ``k`` most
    likely tokens (and any tied with the k-th; 0 = off), then ``top_p`` the smallest nucleus of the rest.
    """
    logits = logits.double()
    if temperature == 0.0:
        greedy = torch.full_like(logits, float("-inf"))
        return greedy.scatter_(-1, logits.argmax(-1, keepdim=True), 0.0)
    log_probs = torch.log_softmax(logits / temperature, dim=-1)  # (B, L, V)
    if 0 < top_k < log_probs.shape[-1]:
        kth = log_probs.topk(top_k, dim=-1).values[..., -1:]  # (B, L, 1)
        log_probs = torch.log_softmax(log_probs.masked_fill(log_probs < kth, float("-inf")), dim=-1)
    if top_p < 1.0:
        sorted_lp, order = log_probs.sort(dim=-1, descending=True)  # (B, L, V)
        mass_before = sorted_lp.exp().cumsum(-1) - sorted_lp.exp()  # mass of strictly better tokens
        drop_sorted = mass_before >= top_p  # always keeps the top token
        drop = torch.zeros_like(drop_sorted).scatter_(-1, order, drop_sorted)
        log_probs = torch.log_softmax(log_probs.masked_fill(drop, float("-inf")), dim=-1)
    return log_probs


class DiffusionSampler:
    """Reverse loop from prior draws (at the positions to generate) to clean sequences.

    Args:
        model: ``model(x, t) -> logits (B, L, V)``; ``model.time_conditioning`` tells whether it uses t.
        kernel: the forward kernel it was trained with.
        steps: number of reverse steps ``N``; times ``1 = t_0 > t_1 > ... > t_N = 0`` on ``time_grid``.
        temperature: divides the logits (0 = greedy).
        strategy: ``ancestral`` (the kernel's reverse step; for masks the exact MDLM step: each masked
            token is revealed with probability ``(alpha_s - alpha_t) / (1 - alpha_t)``) or ``confidence``
            (kernels whose reveals are final: reveal, at each step, the masked tokens whose sampled
            value is most probable; the number revealed follows the schedule so that none remain
            after the last step), or ``threshold`` (parallel decoding, as Fast-dLLM: each step also reveals
            every masked token whose confidence exceeds ``threshold``, so confident stretches are written
            in one model call; ``steps`` still bounds the number of steps, and the loop ends once no mask
            is left).
        top_p: nucleus filtering of the clean-token distribution (1.0 = off); ``top_k`` keeps its k most
            likely tokens first (0 = off).
        cache: reuse the logits when ``x`` did not change (time-agnostic models only).
        threshold: ``threshold`` strategy: reveal where the confidence exceeds this value, in [0, 1].
        confidence: its measure: ``prob`` (the probability of the sampled token), ``margin`` (top-1 minus
            top-2 probability) or ``entropy`` (1 - entropy / log V), each in [0, 1].
        remask: ``cap`` lets revealed tokens be masked again (ReMDM, Wang et al. 2025, its "cap" schedule):
            from t to s each revealed token is remasked with probability
            ``sigma = min(remask_eta, (1 - alpha_s) / alpha_t)`` and each masked one revealed with probability
            ``(alpha_s - (1 - sigma) alpha_t) / (1 - alpha_t)``, which keeps every marginal ``q(z_s | x)`` of
            the forward process, so more steps can fix early mistakes; ``none`` is MDLM's step.
        block_size: semi-autoregressive (block-wise) sampling, as LLaDA and BD3-LM: blocks of this many
            positions, from the first one to generate, are denoised left to right, each by ``strategy``
            with the earlier blocks fixed and the later ones masked; ``steps`` are split evenly across the
            blocks. None: the whole sequence at once. A block diffusion model (``model.block_diffusion``)
            always samples block by block, with its own block size. A block is denoised within one
            context window, so a block wider than the model's context (``block_size`` larger than both
            the context and the text) is refused.
        kv_cache: block-wise sampling only. ``auto``: the exact cache for a block diffusion model, none for
            others. ``none``: every step runs the model over the context window. ``prefix`` / ``dual``: the
            keys and values of the positions before the block (``prefix``), or before and after it (``dual``),
            are computed once per block and reused by its steps (Fast-dLLM's approximation for ordinary
            bidirectional models; for block diffusion models both mean the exact cache).
        visible_limit: a training-free check for models that only ever saw a share ``q`` of each sequence
            (naive training on corrupted data): once more than ``visible_limit * L`` tokens of a row are
            known, the model is shown a random subset of that many of them, and its probabilities are
            averaged over ``visible_subsets`` such subsets. None: the model sees every known token.
        time_grid: where the steps fall (:mod:`tokendiff.samplers.time_grid`): ``auto`` (the kernel's
            default, first order in ``steps``), ``linear``, ``alpha`` or ``cosine``.
    """

    def __init__(
        self,
        model,
        kernel: Kernel,
        steps: int = 128,
        temperature: float = 1.0,
        strategy: str = "ancestral",
        top_p: float = 1.0,
        cache: bool = True,
        threshold: float = 0.9,
        confidence: str = "prob",
        block_size: int | None = None,
        top_k: int = 0,
        remask: str = "none",
        remask_eta: float = 0.02,
        kv_cache: str = "auto",
        visible_limit: float | None = None,
        visible_subsets: int = 1,
        time_grid: str = "auto",
    ):
        if not isinstance(steps, int) or steps < 1:
            raise TokenDiffError(f"sampling.steps={steps} must be an integer >= 1, e.g. sampling.steps=128")
        if temperature < 0:
            raise TokenDiffError(
                f"sampling.temperature={temperature} is negative; use 0 (greedy) or a positive value like 0.8"
            )
        if strategy not in STRATEGIES:
            raise TokenDiffError(f"sampling.strategy={strategy!r} is unknown; use one of {list(STRATEGIES)}")
        if not isinstance(top_k, int) or top_k < 0:
            raise TokenDiffError(f"sampling.top_k={top_k} must be an integer >= 0 (0 turns it off)")
        if not 0.0 < top_p <= 1.0:
            raise TokenDiffError(f"sampling.top_p={top_p} must lie in (0, 1]; 1.0 turns it off")
        if strategy in ("confidence", "threshold") and not kernel.reveals_are_final:
            raise TokenDiffError(
                f"sampling.strategy={strategy} reveals masks for good, which diffusion.process={kernel.name} "
                "does not do; use sampling.strategy=ancestral"
            )
        if block_size is not None and (block_size < 1 or not kernel.reveals_are_final):
            raise TokenDiffError(
                f"sampling.block_size={block_size}: block-wise sampling needs a block size >= 1 and masks that "
                f"stay revealed (diffusion.process={kernel.name}); drop sampling.block_size"
            )
        block_model = getattr(model, "block_diffusion", None)
        if block_model and block_size not in (None, block_model):
            raise TokenDiffError(
                f"sampling.block_size={block_size}: this block diffusion model samples its own blocks of "
                f"diffusion.block_size={block_model}; drop sampling.block_size"
            )
        if visible_limit is not None and not (0.0 < visible_limit <= 1.0 and visible_subsets >= 1):
            raise TokenDiffError(
                f"visible_limit={visible_limit} must lie in (0, 1] and visible_subsets={visible_subsets} be >= 1"
            )
        if kv_cache not in KV_CACHES:
            raise TokenDiffError(f"sampling.kv_cache={kv_cache!r} is unknown; use one of {list(KV_CACHES)}")
        if kv_cache in ("prefix", "dual") and not block_model:
            if block_size is None or not getattr(model, "supports_kv_cache", False):
                raise TokenDiffError(
                    f"sampling.kv_cache={kv_cache} caches keys and values across the steps of a block: it needs "
                    "sampling.block_size (e.g. 32) and the tokendiff transformer (model.arch=transformer)"
                )
        if remask not in ("none", "cap"):
            raise TokenDiffError(f"sampling.remask={remask!r} is unknown; use none or cap")
        if remask != "none" and (kernel.name != "absorbing" or strategy != "ancestral"):
            raise TokenDiffError(
                "sampling.remask=cap is ReMDM's ancestral step for masks: it needs diffusion.process=absorbing "
                f"and sampling.strategy=ancestral (here {kernel.name}, {strategy})"
            )
        if not 0.0 <= remask_eta <= 1.0:
            raise TokenDiffError(f"sampling.remask_eta={remask_eta} must lie in [0, 1], e.g. 0.02")
        if not 0.0 <= threshold <= 1.0:
            raise TokenDiffError(f"sampling.threshold={threshold} must lie in [0, 1], e.g. 0.9")
        if confidence not in CONFIDENCES:
            raise TokenDiffError(f"sampling.confidence={confidence!r} is unknown; use one of {list(CONFIDENCES)}")
        if time_grid not in TIME_GRIDS:
            raise TokenDiffError(f"sampling.time_grid={time_grid!r} is unknown; use one of {list(TIME_GRIDS)}")
        self.time_grid = time_grid
        self.model = model
        self.kernel = kernel
        self.steps = steps
        self.temperature = float(temperature)
        self.strategy = strategy
        self.top_p = float(top_p)
        self.top_k = top_k
        self.cache = cache and not model.time_conditioning
        self.threshold = float(threshold)
        self.block_size = block_size
        self.remask = remask
        self.remask_eta = float(remask_eta)
        self.confidence = confidence
        self.kv_cache = "none" if kv_cache == "auto" and not block_model else kv_cache
        self.blockwise = block_size is not None or bool(block_model)
        self.visible_limit, self.visible_subsets = visible_limit, visible_subsets
        self._subset_generators: list[torch.Generator] = []
        self.model_calls = 0  # counted for the benchmark and the cache test

    def _logits(self, x: torch.Tensor, t: float) -> torch.Tensor:
        times = torch.full((x.shape[0],), t, device=x.device)
        mask_id = self.kernel.mask_token_id
        cap = None if self.visible_limit is None else int(self.visible_limit * x.shape[1])
        known = x != mask_id  # (B, L)
        if cap is None or not bool((known.sum(1) > cap).any()):
            self.model_calls += 1
            return self.model(x, times)  # (B, L, V)
        probs = 0.0
        for _ in range(self.visible_subsets):  # the model sees cap known tokens of each row, drawn uniformly
            scores = row_uniform(self._subset_generators, (x.shape[1],), x.device).masked_fill(~known, 2.0)
            shown = scores.argsort(1).argsort(1) < cap  # (B, L)
            self.model_calls += 1
            logits = self.model(torch.where(shown | ~known, x, mask_id), times)
            probs = probs + torch.softmax(logits.double(), dim=-1) / self.visible_subsets
        return torch.log(probs.clamp_min(1e-300))  # (B, L, V) log of the averaged probabilities

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
        mask_id = self.kernel.mask_token_id
        if self.visible_limit is not None:  # subsets from streams of their own, per row (batch-invariant)
            seeds = [(g.initial_seed() + SUBSET_STREAM) % 2**63 for g in generators]
            self._subset_generators = [torch.Generator().manual_seed(s) for s in seeds]
        free = x_init == mask_id  # (B, L) the positions to generate
        blocks = self.blocks(free) if self.blockwise else []  # checked before any work
        x = torch.where(free, self._draw_prior(x_init, generators), x_init)  # (B, L) x_1 ~ p(x_1) where free
        if not self.blockwise:
            return self._denoise(x, free, self.steps, generators, callback, 0, last=True)
        # semi-autoregressive: blocks left to right; a block's steps see the earlier blocks as fixed text (and,
        # for an ordinary model, the later ones still masked). Each block is written into x in place: the work
        # per block is that of its window, not of the whole sequence, so a long text costs linear time.
        L = x.shape[1]
        block_model = getattr(self.model, "block_diffusion", None)
        size = self.block_size or block_model
        context = getattr(self.model, "block_size", L)  # the model's context
        cache = _BlockCache(self, block_model)
        ended = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)  # rows that wrote stop_id
        offset = 0
        for b, (a, end) in enumerate(blocks):
            steps = max(1, self.steps // len(blocks) + (b < self.steps % len(blocks)))  # steps split evenly
            if block_model:  # the window: the finished blocks that fit in the context, then this block
                lo, hi = max(0, a - (context - size)), end
            else:  # the context window that ends with this block (the whole sequence if it fits)
                hi = max(end, min(L, context))
                lo = hi - min(L, context)
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
                cache.finish_block(x, lo, a, end, next_lo=max(0, blocks[b + 1][0] - (context - size)))
        return x

    def blocks(self, free: torch.Tensor) -> list[tuple[int, int]]:
        """Block-wise sampling's blocks ``[(a, end), ...]`` of ``free`` (B, L), left to right, those with nothing
        to generate left out. A block diffusion model's blocks are its own, counted from position 0; otherwise
        they start at the first free position. A block wider than the model's context is refused (the model
        cannot see it whole)."""
        L = free.shape[1]
        block_model = getattr(self.model, "block_diffusion", None)
        size = self.block_size or block_model
        columns = free.any(0).nonzero().flatten()
        if len(columns) == 0:
            return []
        first = int(columns[0]) // size * size if block_model else int(columns[0])
        blocks = [(a, min(a + size, L)) for a in range(first, L, size)]
        blocks = [(a, e) for a, e in blocks if free[:, a:e].any()]
        context = getattr(self.model, "block_size", L)
        widest = max(e - a for a, e in blocks)
        if widest > context:
            raise TokenDiffError(
                f"sampling.block_size={size} is larger than the model's context of {context} tokens, and this "
                f"{L}-token text needs a block of {widest}; use sampling.block_size<={context}"
            )
        return blocks

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

    def _denoise(self, x_start, free, steps, generators, callback, offset, last, logits_fn=None):
        """``steps`` reverse steps from t = 1 to 0 of the positions ``free`` (B, L); the others keep their
        values in ``x_start``. ``callback(offset + i, x)`` after step ``i``. ``logits_fn(x, t)``: the model's
        logits of ``x`` (default: a call of the model on ``x``; block-wise sampling with a KV cache passes its own).

        Only the ``last`` call may stop early once nothing is masked: before another block, every step
        must draw its noise, so that each row's generator is where it would be in any batch (a complete
        step reuses the cached logits instead of calling the model)."""
        mask_id = self.kernel.mask_token_id
        times = time_grid(self.kernel, steps, self.time_grid)  # (N+1,) from 1 to 0
        alphas = self.kernel.alpha(times)  # (N+1,), alpha(0) = 1 reveals all remaining masks
        alphas[-1] = 1.0
        x = x_start
        masked0 = ((x == mask_id) & free).sum(-1)  # (B,) masks to fill
        logits, logits_input = None, None
        for i in range(steps):
            final = last and self.kernel.reveals_are_final and self.remask == "none"
            if final and not ((x == mask_id) & free).any():
                break  # every position is known; later steps could change nothing
            if logits is None or not self.cache or not torch.equal(x, logits_input):
                logits = (logits_fn or self._logits)(x, float(times[i]))  # (B, L, V)
                logits_input = x.clone()
            log_p_x0 = process_log_probs(logits, self.temperature, self.top_p, self.top_k)  # (B, L, V)
            if self.remask != "none":
                x = self._remask_step(x, log_p_x0, alphas[i].item(), alphas[i + 1].item(), free, generators)
            elif self.strategy == "ancestral":
                log_q = self.kernel.reverse_log_probs(log_p_x0, x, float(times[i]), float(times[i + 1]))  # (B, L, K)
                x = torch.where(free, gumbel_argmax(log_q, generators), x_start)  # (B, L)
            else:  # confidence or threshold
                x = self._confidence_step(x, log_p_x0, masked0, alphas[0], alphas[i + 1], generators, free)
            if callback is not None:
                callback(offset + i, x)
        return x

    def _remask_step(self, x, log_p_x0, alpha_t, alpha_s, free, generators):
        """ReMDM's step from t to s (``remask``): reveal masks, and remask revealed tokens, of ``free``."""
        mask_id = self.kernel.mask_token_id
        sigma = min(self.remask_eta, (1.0 - alpha_s) / alpha_t) if alpha_t > 0 else 0.0
        masked = (x == mask_id) & free  # (B, L)
        p_reveal = (alpha_s - (1.0 - sigma) * alpha_t) / (1.0 - alpha_t) if alpha_t < 1 else 1.0
        u = row_uniform(generators, (x.shape[1],), x.device)  # (B, L)
        candidates = gumbel_argmax(log_p_x0, generators)  # (B, L)
        x = torch.where(masked & (u < p_reveal), candidates, x)
        return torch.where(free & ~masked & (u < sigma), mask_id, x)

    def _confidence_step(self, x, log_p_x0, masked0, alpha_start, alpha_s, generators, free):
        """Reveal the most confident masked tokens so that ``round(M0 (1-a_s)/(1-a_1))`` stay masked."""
        mask_id = self.kernel.mask_token_id
        masked = (x == mask_id) & free  # (B, L)
        candidates = gumbel_argmax(log_p_x0, generators)  # (B, L) a sampled value per position
        confidence = log_p_x0.gather(-1, candidates.unsqueeze(-1)).squeeze(-1)  # (B, L)
        confidence = confidence.masked_fill(~masked, float("-inf"))
        keep_masked = torch.round(masked0 * (1.0 - alpha_s) / (1.0 - alpha_start)).long()  # (B,)
        n_reveal = (masked.sum(-1) - keep_masked).clamp(min=0)  # (B,)
        if self.strategy == "threshold":
            n_reveal = n_reveal.clamp(min=1)  # at least one per step: the loop always advances
        rank = confidence.argsort(dim=-1, descending=True).argsort(dim=-1)  # (B, L) 0 = most confident
        reveal = masked & (rank < n_reveal[:, None])  # (B, L)
        if self.strategy == "threshold":
            reveal |= masked & (self._confidence(log_p_x0, confidence) > self.threshold)
        return torch.where(reveal, candidates, x)

    def _confidence(self, log_p_x0: torch.Tensor, log_p_candidate: torch.Tensor) -> torch.Tensor:
        """The ``threshold`` strategy's confidence of each position, (B, L) in [0, 1]."""
        if self.confidence == "prob":
            return log_p_candidate.exp()
        p = log_p_x0.exp()  # (B, L, V)
        if self.confidence == "margin":
            top2 = p.topk(2, dim=-1).values if p.shape[-1] > 1 else torch.cat([p, torch.zeros_like(p)], -1)
            return top2[..., 0] - top2[..., 1]
        plogp = torch.where(p > 0, p * log_p_x0, torch.zeros_like(p))
        return 1.0 + plogp.sum(-1) / math.log(max(p.shape[-1], 2))  # 1 - H / log V


class _BlockCache:
    """What the model sees while block-wise sampling denoises one block: which part of ``x`` the steps run
    on, and how its logits are computed (``DiffusionSampler.kv_cache``).

    Block diffusion model (exact): the keys and values of the finished blocks in the window are computed
    once (extended by each finished block, rebuilt when the window slides) and a step runs the block alone.
    ``kv_cache=none`` runs the window from its first finished block to this block at every step instead.
    Ordinary bidirectional model: ``none`` runs the whole window every step; ``prefix`` and ``dual`` (the
    approximate caches of Fast-dLLM, Wu et al. 2025) run the whole window once at the start of the block,
    keep its keys and values, and then run only the block and what follows it (``prefix``) or only the
    block (``dual``), against keys and values that are stale once tokens change elsewhere.
    """

    def __init__(self, sampler: "DiffusionSampler", block_model: int | None):
        self.sampler, self.model, self.block_model = sampler, sampler.model, block_model
        self.mode = sampler.kv_cache
        self.cache = None  # block diffusion: the KVCache of the window's finished blocks x[:, lo:a]
        self.span = (0, 0)

    def _call(self, x, t, start=0, cache=None):
        self.sampler.model_calls += 1
        times = None if t is None else torch.full((x.shape[0],), t, device=x.device)
        return self.model.forward_cached(x, times, start, cache)

    def prepare(self, x, lo: int, a: int, end: int, hi: int):
        """``(p0, p1, logits_fn)`` for the block ``a:end`` in the window ``lo:hi``."""
        if self.block_model:
            if self.mode == "none":  # uncached: the window's finished blocks and this block, every step
                prefix = x[:, lo:a]
                return a, end, lambda xp, t: self.sampler._logits(torch.cat([prefix, xp], 1), t)[:, a - lo :]
            if self.span != (lo, a):  # first block, or the window slid: compute the finished blocks once
                self.cache = self._call(x[:, lo:a], None)[1] if a > lo else None
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
        self.cache = self._call(x[:, a:end], None, a - lo, self.cache)[1]
        self.span = (lo, end)
