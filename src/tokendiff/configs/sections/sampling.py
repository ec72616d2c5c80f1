"""The ``sampling`` and ``eval`` sections: drawing samples and estimating the bound."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from tokendiff.configs.sections.checks import check
from tokendiff.samplers.settings import SETTING_KEYS, SamplingSettings, check_steps, check_visible

__all__ = ["SamplingConfig", "EvalConfig", "SAMPLING_FIELDS"]


@dataclass
class SamplingConfig:
    steps: int = 128  # reverse steps
    temperature: float = 1.0  # 0 = greedy
    # samplers.settings.STRATEGIES: ancestral | confidence | threshold (parallel) | block_refinement (with editing)
    # | entropy_bound (EB-sampler) | ddim (uniform noise, with the leave-one-out corrector)
    strategy: str = "ancestral"
    threshold: float = 0.9  # strategy=threshold: also reveal every mask whose confidence exceeds this
    confidence: str = "prob"  # strategy=threshold: prob | margin | entropy (1 - H / log V), each in [0, 1]
    block_size: Optional[int] = None  # block-wise (semi-autoregressive): blocks of this many tokens, left to right
    top_p: float = 1.0  # nucleus filtering; 1.0 = off
    top_k: int = 0  # keep the k most likely tokens (before top_p); 0 = off
    remask: str = "none"  # none | cap: revealed tokens may be masked again (ReMDM), ancestral masks only
    remask_eta: float = 0.02  # remask=cap: the cap on the remasking probability per step
    cache: bool = True  # skip the model call when no token changed (identical output)
    kv_cache: str = "auto"  # block-wise: auto (exact for block diffusion) | none | prefix | dual (Fast-dLLM, approx.)
    time_grid: str = "auto"  # where the steps fall: auto (the kernel's: alpha) | linear | alpha | cosine
    editing_threshold: Optional[float] = None  # block_refinement: replace a committed token above this probability
    minimal_topk: int = 1  # block_refinement: commit at least this many masks per step
    entropy_bound: float = 0.1  # entropy_bound: the summed entropy (nats) of the masks revealed together
    temperature_start: Optional[float] = None  # anneal the temperature from this value on a block's first step ...
    temperature_end: Optional[float] = None  # ... to this one on its last (diffusers' t_max, t_min: 0.8, 0.4)
    corrector_steps: int = 0  # ddim: leave-one-out Gibbs sweeps after each step (one model call each)
    corrector_k: int = 1  # positions resampled per sweep
    corrector_selection: str = "lowest_log_margin"  # lowest_log_margin | lowest_maxprob | lowest_current_prob | random
    corrector_tau: float = 1.0  # temperature of the choice of positions (lower: greedier)
    length: Optional[int] = None  # tokens per sample; default model.block_size
    chat: bool = False  # prompt=... is a user turn in the chat template; the answer alone is printed
    batch_size: int = 16  # samples generated at once (the output does not depend on it)
    live: bool = False  # text: watch sample 0 denoise in the terminal (rich, on stderr)
    trajectory: Optional[str] = None  # write the denoising process: text .txt/.html/.gif, images .gif/.png
    output: Optional[str] = None  # text: samples.jsonl (one JSON line per sample); images: the PNG grid (samples.png)
    inpaint: bool = False  # images: complete corrupted test images instead of sampling from scratch

    def __post_init__(self):
        if self.strategy == "stochastic":  # the name the minimal-MDLM seed uses
            self.strategy = "ancestral"
        self.settings()  # the sampler's values are checked where they live (SamplingSettings), once
        check(
            self.length is None or 1 <= self.length <= 1_000_000,
            f"sampling.length={self.length} must lie in [1, 1000000] (or unset for model.block_size)",
        )
        check(self.batch_size >= 1, f"sampling.batch_size={self.batch_size} must be >= 1")

    def settings(self) -> SamplingSettings:
        """The sampler's settings of this section (:class:`tokendiff.samplers.settings.SamplingSettings`)."""
        return SamplingSettings(**{key: getattr(self, key) for key in SETTING_KEYS if key in SAMPLING_FIELDS})


SAMPLING_FIELDS = frozenset(SamplingConfig.__dataclass_fields__)  # the settings it sets (not visible_limit)


@dataclass
class EvalConfig:
    split: Optional[str] = None  # val | train | test; default val for text, test for images
    num_draws: int = 4  # Monte Carlo draws of (t, mask) per sequence
    t_min: float = 1e-3  # the bound's part at t < t_min is printed apart (below_t_min_nats_per_token); never left out
    weights: str = "ema"  # ema: model.safetensors (EMA when training.ema > 0) | raw: the optimizer's weights
    max_windows: Optional[int] = None  # at most this many sequences (default: the whole split; images: 2,000)
    # zero-shot: another corpus, in the checkpoint's tokenizer: a prepared corpus's name, a known dataset,
    # a .txt/.jsonl/.json/.parquet file or folder; default the checkpoint's own corpus
    data: Optional[str] = None
    batch_size: int = 32
    sample_metrics: bool = True  # images: classifier Frechet distance, confidence, coverage, memorization
    num_samples: int = 500  # images: samples drawn for the sample metrics (a study: 2,000 or more)
    sampling_steps: int = 32  # images: reverse steps for those samples and for inpainting
    # images, a training-free check: once more than this share of pixels is known, the model sees a random
    # subset of that many (averaged over visible_subsets draws); e.g. 0.1 for a naive model of 10%-observed data
    visible_limit: Optional[float] = None
    visible_subsets: int = 1

    def __post_init__(self):
        check(
            self.split in (None, "train", "val", "test"),
            f"eval.split={self.split!r} is unknown; use val, test or train",
        )
        # the sampler's rules (tokendiff.samplers.settings), which these values are handed to
        check_visible(self.visible_limit, self.visible_subsets, prefix="eval.")
        for name, high in (("num_draws", 10_000), ("batch_size", 100_000)):
            value = getattr(self, name)
            check(1 <= value <= high, f"eval.{name}={value} must lie in [1, {high}]")
        check_steps(self.sampling_steps, key="eval.sampling_steps")
        check(
            10 <= self.num_samples <= 100_000,
            f"eval.num_samples={self.num_samples} must lie in [10, 100000]: the Frechet distance needs a "
            "covariance of the samples' features",
        )
        check(self.max_windows is None or self.max_windows >= 1, f"eval.max_windows={self.max_windows} must be >= 1")
        check(0.0 <= self.t_min < 1.0, f"eval.t_min={self.t_min} must lie in [0, 1); MDLM uses 1e-3")
        check(self.weights in ("ema", "raw"), f"eval.weights={self.weights!r} is unknown; use ema or raw")
