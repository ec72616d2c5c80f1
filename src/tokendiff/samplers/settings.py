"""The sampler's settings: one validated record of every knob of the reverse loop.

The config's ``sampling`` section builds it once (:meth:`tokendiff.configs.sections.SamplingConfig.settings`),
and the samplers receive it whole. Each value is checked here, once, with the message the CLI prints
(``sampling.<key>=...``); what depends on the model or the kernel (a block size the model refuses, a
strategy the kernel cannot follow) is checked by :class:`tokendiff.samplers.diffusion.DiffusionSampler`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal, Optional, get_args

from tokendiff.errors import TokenDiffError
from tokendiff.samplers.time_grid import TIME_GRIDS

__all__ = [
    "SamplingSettings",
    "STRATEGIES",
    "CONFIDENCES",
    "KV_CACHES",
    "REMASKS",
    "SELECTIONS",
    "SETTING_KEYS",
    "check_steps",
    "check_visible",
]

# the one list of step rules (tokendiff.samplers.rules maps each name to its class); the schema and the demo
# read it from here
Strategy = Literal["ancestral", "confidence", "threshold", "block_refinement", "entropy_bound", "ddim"]
Confidence = Literal["prob", "margin", "entropy"]
KVCacheMode = Literal["auto", "none", "prefix", "dual"]
Remask = Literal["none", "cap"]
TimeGrid = Literal["auto", "linear", "alpha", "cosine"]
Selection = Literal["lowest_log_margin", "lowest_maxprob", "lowest_current_prob", "random"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)
CONFIDENCES: tuple[str, ...] = get_args(Confidence)
KV_CACHES: tuple[str, ...] = get_args(KVCacheMode)
REMASKS: tuple[str, ...] = get_args(Remask)
SELECTIONS: tuple[str, ...] = get_args(Selection)
assert get_args(TimeGrid) == TIME_GRIDS  # the time grids are defined with their math


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise TokenDiffError(message)


# the rules of values that another config section also hands the sampler (eval.sampling_steps,
# eval.visible_limit, eval.visible_subsets): the message names the key the value came from
def check_steps(steps: int, key: str = "sampling.steps") -> None:
    """Reverse steps of one sample."""
    _check(isinstance(steps, int) and 1 <= steps <= 100_000, f"{key}={steps} must lie in [1, 100000], e.g. {key}=128")


def check_visible(limit: Optional[float], subsets: int, prefix: str = "") -> None:
    """Visible-subset averaging (:mod:`tokendiff.samplers.visible`); ``prefix``: the keys' section, e.g. ``eval.``."""
    _check(
        limit is None or 0.0 < limit <= 1.0,
        f"{prefix}visible_limit={limit} must lie in (0, 1], e.g. 0.1 (or unset)",
    )
    _check(
        isinstance(subsets, int) and 1 <= subsets <= 64,
        f"{prefix}visible_subsets={subsets} must lie in [1, 64]",
    )


@dataclass(frozen=True)
class SamplingSettings:
    """How :class:`~tokendiff.samplers.diffusion.DiffusionSampler` runs its reverse loop.

    Attributes:
        steps: reverse steps ``N``; times ``1 = t_0 > ... > t_N = 0`` on ``time_grid``.
        temperature: divides the logits (0 = greedy).
        strategy: the step rule (:mod:`tokendiff.samplers.rules`): ``ancestral`` (the kernel's reverse step),
            ``confidence`` (reveal the most confident masks, as many as the schedule says), ``threshold``
            (also every mask whose confidence exceeds ``threshold``, as Fast-dLLM), ``block_refinement``
            (diffusers' BlockRefinementScheduler: commit by confidence, and edit committed tokens above
            ``editing_threshold``, LLaDA2.1), ``entropy_bound`` (the EB-sampler: reveal the lowest-entropy masks
            while their summed entropy stays under ``entropy_bound``) or ``ddim`` (the uniform kernel's D3PM
            posterior step from a drawn ``x0``, diffusers' DiscreteDDIMScheduler, with ``corrector_steps``).
        top_p: nucleus filtering of the clean-token distribution (1.0 = off).
        top_k: keep the k most likely tokens, before ``top_p`` (0 = off).
        cache: reuse the logits when ``x`` did not change (time-agnostic models only; identical output).
        threshold: ``threshold`` strategy: reveal where the confidence exceeds this value, in [0, 1].
        confidence: its measure: ``prob``, ``margin`` (top-1 minus top-2) or ``entropy`` (1 - H / log V).
        block_size: block-wise (semi-autoregressive) sampling in blocks of this many positions; None: the
            whole sequence at once (a block diffusion model always samples its own blocks).
        remask: ``cap`` lets revealed tokens be masked again (ReMDM's "cap" schedule); ``none``: MDLM's step.
        remask_eta: ``remask=cap``: the cap on the remasking probability per step, in [0, 1].
        kv_cache: block-wise only: ``auto`` | ``none`` | ``prefix`` | ``dual`` (:mod:`tokendiff.samplers.kv_cache`).
        visible_limit: show the model at most this share of the known tokens of a row (averaged over
            ``visible_subsets`` random subsets); None: every known token (:mod:`tokendiff.samplers.visible`).
        time_grid: where the steps fall (:mod:`tokendiff.samplers.time_grid`).
        editing_threshold: ``block_refinement``: a committed token is replaced by the model's sample when that
            differs and its probability exceeds this value (LLaDA2.1's editing); None: no editing.
        minimal_topk: ``block_refinement``: commit at least this many masks per step (while any are left).
        entropy_bound: ``entropy_bound``: the largest summed entropy (nats) of the masks revealed together,
            not counting the largest one (so the most certain mask is always revealed).
        temperature_start, temperature_end: anneal the temperature linearly over each block's steps, from
            ``temperature_start`` on the first to near ``temperature_end`` on the last, as diffusers'
            EntropyBoundScheduler does (its ``t_max``, ``t_min``); None: ``temperature`` throughout.
        corrector_steps: ``ddim``: leave-one-out Gibbs sweeps after each step (:mod:`tokendiff.samplers.loo_corrector`),
            each one more model call; 0: none.
        corrector_k: positions resampled per sweep.
        corrector_selection: how they are chosen: ``lowest_log_margin``, ``lowest_maxprob``,
            ``lowest_current_prob`` or ``random``.
        corrector_tau: temperature of the Gumbel top-k choice of positions (lower: greedier).
    """

    steps: int = 128
    temperature: float = 1.0
    strategy: Strategy = "ancestral"
    top_p: float = 1.0
    top_k: int = 0
    cache: bool = True
    threshold: float = 0.9
    confidence: Confidence = "prob"
    block_size: Optional[int] = None
    remask: Remask = "none"
    remask_eta: float = 0.02
    kv_cache: KVCacheMode = "auto"
    visible_limit: Optional[float] = None
    visible_subsets: int = 1
    time_grid: TimeGrid = "auto"
    editing_threshold: Optional[float] = None
    minimal_topk: int = 1
    entropy_bound: float = 0.1
    temperature_start: Optional[float] = None
    temperature_end: Optional[float] = None
    corrector_steps: int = 0
    corrector_k: int = 1
    corrector_selection: Selection = "lowest_log_margin"
    corrector_tau: float = 1.0

    def __post_init__(self):
        check_steps(self.steps)
        _check(
            0 <= self.temperature < float("inf"),
            f"sampling.temperature={self.temperature} must be a finite number >= 0; use 0 (greedy) or a positive "
            "value such as 0.8",
        )
        _check(
            self.strategy in STRATEGIES,
            f"sampling.strategy={self.strategy!r} is unknown; use one of {', '.join(STRATEGIES)} (ancestral's alias: "
            "stochastic)",
        )
        _check(
            self.block_size is None or self.block_size >= 1,
            f"sampling.block_size={self.block_size} must be >= 1 (or unset for the whole sequence at once)",
        )
        _check(0.0 <= self.threshold <= 1.0, f"sampling.threshold={self.threshold} must lie in [0, 1], e.g. 0.9")
        _check(
            self.confidence in CONFIDENCES,
            f"sampling.confidence={self.confidence!r} is unknown; use prob, margin or entropy",
        )
        _check(0.0 < self.top_p <= 1.0, f"sampling.top_p={self.top_p} must lie in (0, 1]")
        _check(self.remask in REMASKS, f"sampling.remask={self.remask!r} is unknown; use none or cap")
        _check(0.0 <= self.remask_eta <= 1.0, f"sampling.remask_eta={self.remask_eta} must lie in [0, 1], e.g. 0.02")
        _check(
            self.kv_cache in KV_CACHES,
            f"sampling.kv_cache={self.kv_cache!r} is unknown; use auto, none, prefix or dual",
        )
        _check(
            isinstance(self.top_k, int) and self.top_k >= 0,
            f"sampling.top_k={self.top_k} must be >= 0 (0 turns it off)",
        )
        _check(
            self.time_grid in TIME_GRIDS,
            f"sampling.time_grid={self.time_grid!r} is unknown; use auto, linear, alpha or cosine",
        )
        check_visible(self.visible_limit, self.visible_subsets)
        _check(
            self.editing_threshold is None or 0.0 <= self.editing_threshold <= 1.0,
            f"sampling.editing_threshold={self.editing_threshold} must lie in [0, 1], e.g. 0.9 (or unset: no editing)",
        )
        _check(
            isinstance(self.minimal_topk, int) and self.minimal_topk >= 0,
            f"sampling.minimal_topk={self.minimal_topk} must be an integer >= 0, e.g. 1",
        )
        _check(
            0.0 < self.entropy_bound < float("inf"),
            f"sampling.entropy_bound={self.entropy_bound} must be a finite number > 0 (nats), e.g. 0.1",
        )
        ends = (self.temperature_start, self.temperature_end)
        _check(
            (ends[0] is None) == (ends[1] is None) and all(v is None or 0.0 < v < float("inf") for v in ends),
            f"sampling.temperature_start={ends[0]} and sampling.temperature_end={ends[1]} must both be set to "
            "numbers > 0 (e.g. 0.8 and 0.4, as diffusers' EntropyBoundScheduler) or both unset",
        )
        _check(
            isinstance(self.corrector_steps, int) and 0 <= self.corrector_steps <= 100,
            f"sampling.corrector_steps={self.corrector_steps} must lie in [0, 100] (0 turns the corrector off)",
        )
        _check(
            isinstance(self.corrector_k, int) and self.corrector_k >= 1,
            f"sampling.corrector_k={self.corrector_k} must be an integer >= 1",
        )
        _check(
            self.corrector_selection in SELECTIONS,
            f"sampling.corrector_selection={self.corrector_selection!r} is unknown; use {', '.join(SELECTIONS)}",
        )
        _check(
            0.0 < self.corrector_tau < float("inf"),
            f"sampling.corrector_tau={self.corrector_tau} must be a finite number > 0, e.g. 1.0",
        )
        _check(
            self.corrector_steps == 0 or self.strategy == "ddim",
            f"sampling.corrector_steps={self.corrector_steps}: the leave-one-out corrector follows the ddim step; "
            "add sampling.strategy=ddim (uniform noise) or drop sampling.corrector_steps",
        )


SETTING_KEYS: tuple[str, ...] = tuple(f.name for f in fields(SamplingSettings))
