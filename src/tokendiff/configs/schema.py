"""Typed configuration: one dataclass per section, checked in ``__post_init__``.

Hydra composes ``config.yaml`` (which starts from :class:`Config`), the chosen ``+experiment=...``
preset and the command-line overrides; :func:`tokendiff.configs.compose_config` then turns the result
into these dataclasses, so every check below runs on the final values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

from tokendiff.errors import TokenDiffError
from tokendiff.samplers.settings import SETTING_KEYS, SamplingSettings

__all__ = [
    "Config",
    "ModelConfig",
    "DiffusionConfig",
    "DataConfig",
    "TrainingConfig",
    "SystemConfig",
    "LoggingConfig",
    "SamplingConfig",
    "EvalConfig",
    "AmbientConfig",
]


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise TokenDiffError(message)


@dataclass
class ModelConfig:
    """The backbone: the text transformer, a Hugging Face transformers model, or an image network."""

    arch: str = "transformer"  # transformer (tokens) | hf (transformers) | image_conv | image_patch (binary images)
    hf_name: Optional[str] = None  # arch=hf: pretrained weights (hub id or save_pretrained folder)
    hf_config: Optional[str] = None  # arch=hf: a config (hub id, folder or config.json) for fresh weights
    patch: int = 4  # image_patch: pixels per patch side (28 = 7 x 4)
    n_layer: int = 4  # transformer blocks
    n_head: int = 4  # attention heads; n_embd / n_head must be even (RoPE)
    n_embd: int = 256  # width
    block_size: int = 256  # sequence length the model is trained on
    dropout: float = 0.0
    causal: bool = False  # true: the autoregressive baseline (next-token loss, causal mask)
    # Any, not Optional[bool]: OmegaConf would refuse the word `auto` before __post_init__ sees it. Config
    # resolves null / auto to a bool, so a checkpoint's config.json always holds true or false.
    time_conditioning: Any = None  # null = auto (default): true iff the kernel needs t (uniform; hybrid, p_uniform>0)
    block_diffusion: bool = False  # true: BD3-LM, block-causal attention over blocks of diffusion.block_size

    def __post_init__(self):
        _check(
            self.arch in ("transformer", "hf", "image_conv", "image_patch"),
            f"model.arch={self.arch!r} is unknown; use transformer, hf, image_conv or image_patch",
        )
        if isinstance(self.time_conditioning, str) and self.time_conditioning.lower() == "auto":  # as Hydra's bools
            self.time_conditioning = None
        _check(
            self.time_conditioning is None or isinstance(self.time_conditioning, bool),
            f"model.time_conditioning={self.time_conditioning!r} is unknown; use true, false or auto (null: what "
            "the kernel needs)",
        )
        if self.arch == "hf":
            _check(
                (self.hf_name is None) != (self.hf_config is None),
                "model.arch=hf needs exactly one of model.hf_name=<hub id or folder> (pretrained weights) or "
                f"model.hf_config=<hub id, folder or config.json> (fresh weights); got hf_name={self.hf_name!r}, "
                f"hf_config={self.hf_config!r}",
            )
        else:
            _check(
                self.hf_name is None and self.hf_config is None,
                f"model.hf_name / model.hf_config apply to model.arch=hf (here model.arch={self.arch}); "
                "add model.arch=hf or drop them",
            )
        for name in ("n_layer", "n_head", "n_embd", "block_size"):
            _check(getattr(self, name) >= 1, f"model.{name}={getattr(self, name)} must be >= 1")
        _check(
            self.n_embd % self.n_head == 0 and (self.n_embd // self.n_head) % 2 == 0,
            f"model.n_embd={self.n_embd} must be a multiple of 2*model.n_head={2 * self.n_head} "
            "(RoPE needs an even head size); e.g. model.n_embd=384 model.n_head=6",
        )
        _check(0.0 <= self.dropout < 1.0, f"model.dropout={self.dropout} must lie in [0, 1)")
        _check(
            not (self.causal and self.time_conditioning),
            "model.causal=true has no diffusion time; set model.time_conditioning=false",
        )


@dataclass
class DiffusionConfig:
    """The forward kernel, its noise schedule and the training objective (ignored by the autoregressive
    baseline). ``scheduler_config.json`` in each checkpoint records the kernel in diffusers' fields."""

    process: str = "absorbing"  # absorbing (MDLM) | uniform (UDLM) | hybrid (GIDD: mask + uniform)
    objective: str = "clean"  # clean | naive (corrupted data as if clean) | ambient (easy + consistency)
    schedule: Optional[str] = None  # log_linear (default) | linear | cosine | geometric; hybrid has its own
    eps: float = 1e-3  # alpha(1) = eps (log_linear; linear and cosine run from 1 - eps to eps)
    sigma_min: float = 1e-4  # geometric: alpha(t) = exp(-sigma_min^(1-t) sigma_max^t)
    sigma_max: float = 20.0
    exclude_mask_from_uniform: bool = True  # uniform: noise tokens are real tokens, never the mask id
    p_uniform: float = 0.1  # hybrid: share of uniform noise at t = 1/2 (0 = masked diffusion)
    gamma: float = 1.0  # hybrid: shape of the uniform share over time, c_t ~ (t (1 - t))^(gamma/2)
    t_min: float = 1e-3  # training times t ~ U[t_min, 1] (see CleanObjective); eval has its own eval.t_min
    # training loss: time (t ~ U[t_min, 1], then the noise) | count (masks only: k ~ U{1..L}, weight L/k) |
    # bound (the whole NELBO as eval estimates it: importance times on (0, 1], t_min unused; the t = 0 term)
    estimator: str = "time"
    antithetic: bool = True  # low-discrepancy times within a batch
    block_size: Optional[int] = None  # model.block_diffusion=true: tokens per block (divides model.block_size)

    def __post_init__(self):
        _check(
            self.process in ("absorbing", "uniform", "hybrid"),
            f"diffusion.process={self.process!r} is unknown; use absorbing, uniform or hybrid",
        )
        _check(0.0 <= self.t_min < 1.0, f"diffusion.t_min={self.t_min} must lie in [0, 1)")
        _check(
            self.estimator in ("time", "count", "bound"),
            f"diffusion.estimator={self.estimator!r} is unknown; use time, count or bound",
        )
        _check(
            self.objective in ("clean", "naive", "ambient"),
            f"diffusion.objective={self.objective!r} is unknown; use clean, naive or ambient",
        )
        _check(
            not (self.process == "hybrid" and self.schedule is not None),
            f"diffusion.schedule={self.schedule!r} does not apply to diffusion.process=hybrid (GIDD has its own "
            "alpha(t), shaped by diffusion.p_uniform and diffusion.gamma); drop diffusion.schedule",
        )
        _check(0.0 <= self.p_uniform < 1.0, f"diffusion.p_uniform={self.p_uniform} must lie in [0, 1), e.g. 0.1")
        _check(self.gamma > 0, f"diffusion.gamma={self.gamma} must be > 0, e.g. 1.0")


@dataclass
class DataConfig:
    """Which corpus, how it is tokenized, and where raw files live."""

    # shakespeare_char | shakespeare (BPE) | mnist | hf (datasets.load_dataset of data.hf_path) | a name given
    # to a corpus by `tokendiff prepare data.input=... data.dataset=NAME`
    dataset: str = "shakespeare_char"
    input: Optional[str] = None  # .txt | .jsonl | .json | .parquet file, or a folder of them
    text_column: str = "text"  # the text field of .jsonl / .json / .parquet rows and of hf datasets
    hf_path: Optional[str] = None  # data.dataset=hf: the datasets name, e.g. wikitext
    hf_name: Optional[str] = None  # data.dataset=hf: its configuration, e.g. wikitext-2-raw-v1
    num_proc: Optional[int] = None  # processes for tokenizing with datasets.map (default: up to 4)
    tokenizer: str = "char"  # char | bpe (trained here) | hf (pretrained: tokenizer_name); known datasets fix theirs
    tokenizer_name: Optional[str] = None  # tokenizer=hf: gpt2 (offline files), a hub id, a folder or tokenizer.json
    vocab_size: int = 2048  # BPE vocabulary size
    val_fraction: float = 0.1  # the last 10% of the text is the validation split
    data_dir: Optional[str] = None  # raw data; default $TOKENDIFF_DATA, else the user cache dir
    binarization: str = "static"  # mnist: static (Larochelle & Murray) | dynamic | threshold
    observed_fraction: float = 0.1  # naive/ambient objectives: fraction of each image's pixels observed
    corruption_seed: int = 0  # seeds the fixed observation mask of every training image
    clean_fraction: float = 0.0  # diffusion.objective=naive: this share of the training images kept clean (a control)
    limit: Optional[int] = None  # mnist: use only the first N training images (quick experiments, tests)

    def __post_init__(self):
        _check(
            self.binarization in ("static", "dynamic", "threshold"),
            f"data.binarization={self.binarization!r} is unknown; use static, dynamic or threshold",
        )
        _check(self.limit is None or self.limit >= 1, f"data.limit={self.limit} must be >= 1")
        _check(
            0.0 < self.observed_fraction <= 1.0,
            f"data.observed_fraction={self.observed_fraction} must lie in (0, 1], e.g. 0.1",
        )
        _check(
            0.0 <= self.clean_fraction < 1.0,
            f"data.clean_fraction={self.clean_fraction} must lie in [0, 1), e.g. 0.01",
        )
        _check(
            self.tokenizer in ("char", "bpe", "hf"),
            f"data.tokenizer={self.tokenizer!r} is unknown; use char, bpe or hf (with data.tokenizer_name=...)",
        )
        _check(
            (self.tokenizer == "hf") == (self.tokenizer_name is not None),
            "data.tokenizer=hf goes with data.tokenizer_name=<gpt2, hub id, folder or tokenizer.json> and only "
            f"with it (here data.tokenizer={self.tokenizer!r}, data.tokenizer_name={self.tokenizer_name!r})",
        )
        _check(
            (self.dataset == "hf") == (self.hf_path is not None),
            "data.dataset=hf goes with data.hf_path=<datasets name, e.g. wikitext> and only with it "
            f"(here data.dataset={self.dataset!r}, data.hf_path={self.hf_path!r})",
        )
        _check(
            self.num_proc is None or 1 <= self.num_proc <= 256,
            f"data.num_proc={self.num_proc} must lie in [1, 256] (or unset)",
        )
        _check(0.0 < self.val_fraction < 1.0, f"data.val_fraction={self.val_fraction} must lie in (0, 1)")


@dataclass
class TrainingConfig:
    """The optimization loop."""

    max_iters: int = 2000  # optimizer steps
    n_epochs: Optional[int] = None  # if set: train this many passes over the data (sets max_iters)
    epochs_per_checkpoint: int = 5  # with n_epochs: a checkpoint every this many epochs
    batch_size: int = 32  # sequences per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    learning_rate: float = 1e-3  # peak learning rate
    min_lr: float = 1e-4  # floor of the cosine decay
    warmup_iters: int = 100  # linear warmup steps
    lr_decay_iters: Optional[int] = None  # end of the cosine decay; default max_iters
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # max global gradient norm; 0 disables
    ema: float = 0.999  # EMA decay of the weights used for sampling and eval; 0 disables
    eval_interval: int = 250  # steps between evaluations (0: only at the end)
    eval_iters: int = 20  # validation batches per evaluation
    sample_interval: int = 500  # steps between logged samples (0: only at the end)
    checkpoint_interval: int = 500  # steps between checkpoints (the final one is always written)
    log_interval: int = 10
    max_minutes: Optional[float] = None  # stop (with a checkpoint) after this wall-clock time
    init_from: Optional[str] = None  # start from this checkpoint's weights (fresh optimizer), e.g. MDLM -> BD3-LM
    seed: int = 1337

    def __post_init__(self):
        _check(self.n_epochs is None or self.n_epochs >= 1, f"training.n_epochs={self.n_epochs} must be >= 1")
        for name in ("max_iters", "batch_size", "grad_accum", "eval_iters", "log_interval", "epochs_per_checkpoint"):
            _check(getattr(self, name) >= 1, f"training.{name}={getattr(self, name)} must be >= 1")
        _check(self.batch_size <= 100_000, f"training.batch_size={self.batch_size} must lie in [1, 100000]")
        for name in ("eval_interval", "sample_interval", "checkpoint_interval", "warmup_iters"):
            _check(getattr(self, name) >= 0, f"training.{name}={getattr(self, name)} must be >= 0")
        _check(self.learning_rate > 0, f"training.learning_rate={self.learning_rate} must be > 0, e.g. 6e-4")
        _check(
            0 <= self.min_lr <= self.learning_rate,
            f"training.min_lr={self.min_lr} must lie in [0, training.learning_rate={self.learning_rate}]",
        )
        _check(0.0 <= self.ema < 1.0, f"training.ema={self.ema} must lie in [0, 1); 0 turns EMA off")
        _check(self.grad_clip >= 0, f"training.grad_clip={self.grad_clip} must be >= 0 (0 turns it off)")
        _check(0 <= self.seed < 2**63, f"training.seed={self.seed} must lie in [0, 2^63), e.g. 1337")
        _check(
            self.max_minutes is None or self.max_minutes > 0,
            f"training.max_minutes={self.max_minutes} must be > 0 (or unset)",
        )

    def apply_epochs(self, sequences_per_epoch: int) -> str | None:
        """With ``n_epochs`` set, derive ``max_iters`` and ``checkpoint_interval`` from the epoch size.

        Returns a line saying what was derived (for the user), or None when ``n_epochs`` is unset.
        """
        if not self.n_epochs:
            return None
        per_step = self.batch_size * self.grad_accum
        steps_per_epoch = -(-sequences_per_epoch // per_step)
        self.max_iters = self.n_epochs * steps_per_epoch
        self.checkpoint_interval = self.epochs_per_checkpoint * steps_per_epoch
        return (
            f"{self.n_epochs} epochs of {steps_per_epoch} steps = {self.max_iters} steps; "
            f"a checkpoint every {self.epochs_per_checkpoint} epochs"
        )


@dataclass
class SystemConfig:
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    dtype: str = "auto"  # auto (bfloat16 where bf16 matmul is native, else float32) | float32 | bfloat16 | float16
    # torch.compile the model: null (auto) compiles on a GPU, and on a CPU for runs of >= 1000 steps, where
    # the measured 1.18x step speed repays the ~30-50 s of compilation (docs/benchmarks.md); true | false
    compile: Optional[bool] = None
    threads: Optional[int] = None  # CPU threads; default torch's choice
    # gloo on CPUs, one GPU each with CUDA; torchrun / accelerate launch set their own count instead
    num_processes: int = 1  # train: start this many data-parallel processes from one command (1: this one)

    def __post_init__(self):
        _check(
            1 <= self.num_processes <= 1024,
            f"system.num_processes={self.num_processes} must lie in [1, 1024], e.g. system.num_processes=2",
        )
        _check(
            self.threads is None or 1 <= self.threads <= 1024,
            f"system.threads={self.threads} must lie in [1, 1024] (or unset for torch's choice)",
        )
        _check(
            self.dtype in ("auto", "float32", "bfloat16", "float16"),
            f"system.dtype={self.dtype!r} is unknown; use auto, float32, bfloat16 or float16",
        )


@dataclass
class LoggingConfig:
    wandb: bool = False  # log to Weights & Biases (pip install 'tokendiff[wandb]')
    project: str = "tokendiff"
    name: Optional[str] = None
    tags: List[str] = field(default_factory=list)


@dataclass
class SamplingConfig:
    steps: int = 128  # reverse steps
    temperature: float = 1.0  # 0 = greedy
    strategy: str = "ancestral"  # samplers.settings.STRATEGIES: ancestral | confidence | threshold (parallel)
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
    length: Optional[int] = None  # tokens per sample; default model.block_size
    batch_size: int = 16  # samples generated at once (the output does not depend on it)
    live: bool = False  # text: watch sample 0 denoise in the terminal (rich, on stderr)
    trajectory: Optional[str] = None  # write the denoising process: text .txt/.html/.gif, images .gif/.png
    output: Optional[str] = None  # text: samples.jsonl (one JSON line per sample); images: the PNG grid (samples.png)
    inpaint: bool = False  # images: complete corrupted test images instead of sampling from scratch

    def __post_init__(self):
        if self.strategy == "stochastic":  # the name the minimal-MDLM seed uses
            self.strategy = "ancestral"
        self.settings()  # the sampler's values are checked where they live (SamplingSettings), once
        _check(
            self.length is None or 1 <= self.length <= 1_000_000,
            f"sampling.length={self.length} must lie in [1, 1000000] (or unset for model.block_size)",
        )
        _check(self.batch_size >= 1, f"sampling.batch_size={self.batch_size} must be >= 1")

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
        _check(
            self.split in (None, "train", "val", "test"),
            f"eval.split={self.split!r} is unknown; use val, test or train",
        )
        _check(
            self.visible_limit is None or 0.0 < self.visible_limit <= 1.0,
            f"eval.visible_limit={self.visible_limit} must lie in (0, 1], e.g. 0.1 (or unset)",
        )
        for name, high in (
            ("num_draws", 10_000), ("batch_size", 100_000), ("sampling_steps", 100_000), ("visible_subsets", 64),
        ):  # fmt: skip
            value = getattr(self, name)
            _check(1 <= value <= high, f"eval.{name}={value} must lie in [1, {high}]")
        _check(
            10 <= self.num_samples <= 100_000,
            f"eval.num_samples={self.num_samples} must lie in [10, 100000]: the Frechet distance needs a "
            "covariance of the samples' features",
        )
        _check(self.max_windows is None or self.max_windows >= 1, f"eval.max_windows={self.max_windows} must be >= 1")
        _check(0.0 <= self.t_min < 1.0, f"eval.t_min={self.t_min} must lie in [0, 1); MDLM uses 1e-3")
        _check(self.weights in ("ema", "raw"), f"eval.weights={self.weights!r} is unknown; use ema or raw")


@dataclass
class AmbientConfig:
    """Ambient training from corrupted data (diffusion.objective=ambient)."""

    consistency_weight: float = 1.0  # weight of the hard loss below the corruption level (0: easy loss only)
    descent_steps: int = 2  # model passes that reach the consistency anchor or draw the imputations
    easy_fraction: float = 0.5  # share of each batch on the easy loss; the rest on the hard loss
    hard_loss: str = "consistency"  # below the corruption level: consistency (tower) | imputation (EM)
    divergence: str = "kl"  # consistency: kl | squared (probabilities)
    hard_start: float = 0.0  # share of the training steps on the easy loss alone, before the hard loss
    hard_batch: float = 0.0  # > 0: easy loss on every row, the hard loss on this share of rows on top
    imputed_weight: float = 1.0  # em: weight of imputed tokens in the M-step (0: observed only, 1: Monte Carlo EM)
    impute_rounds: int = 16  # em: rounds (model passes) of the sequential draw that fills a buffer entry
    refresh: float = 0.25  # em: chance that a buffer entry is drawn afresh when used (else a Gibbs sweep)
    gibbs_share: float = 0.1  # em: share of an entry's imputed tokens a Gibbs sweep draws again
    consistency_reveal: float = 0.0  # consistency: > 0 reveals this share, two draws, product of residuals
    consistency_max_masked: float = 1.0  # consistency: anchors with at most this share masked (1: all below t_n)

    def __post_init__(self):
        _check(self.consistency_weight >= 0, f"ambient.consistency_weight={self.consistency_weight} must be >= 0")
        _check(self.descent_steps >= 1, f"ambient.descent_steps={self.descent_steps} must be >= 1")
        _check(0.0 <= self.hard_start < 1.0, f"ambient.hard_start={self.hard_start} must lie in [0, 1), e.g. 0.3")
        _check(0.0 < self.easy_fraction <= 1.0, f"ambient.easy_fraction={self.easy_fraction} must lie in (0, 1]")
        _check(
            self.hard_loss in ("consistency", "imputation", "em"),
            f"ambient.hard_loss={self.hard_loss!r} is unknown; use consistency, imputation or em",
        )
        for name in ("hard_batch", "imputed_weight", "refresh"):
            value = getattr(self, name)
            _check(0.0 <= value <= 1.0, f"ambient.{name}={value} must lie in [0, 1]")
        _check(self.impute_rounds >= 1, f"ambient.impute_rounds={self.impute_rounds} must be >= 1, e.g. 16")
        _check(0.0 < self.gibbs_share <= 1.0, f"ambient.gibbs_share={self.gibbs_share} must lie in (0, 1]")
        _check(
            0.0 <= self.consistency_reveal < 1.0,
            f"ambient.consistency_reveal={self.consistency_reveal} must lie in [0, 1), e.g. 0.25",
        )
        _check(
            self.divergence in ("squared", "kl"),
            f"ambient.divergence={self.divergence!r} is unknown; use squared or kl",
        )
        _check(
            0.0 < self.consistency_max_masked <= 1.0,
            f"ambient.consistency_max_masked={self.consistency_max_masked} must lie in (0, 1], e.g. 0.5",
        )


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    system: SystemConfig = field(default_factory=SystemConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    ambient: AmbientConfig = field(default_factory=AmbientConfig)
    output_dir: str = "out"  # the run directory (made absolute when the run is created)
    overwrite: bool = False  # train: move the old run in output_dir aside; sample: replace a file not tokendiff's
    resume: Optional[str] = None  # a run or checkpoint directory to continue from
    checkpoint: Optional[str] = None  # for sample / eval: a run or checkpoint directory
    samples: Optional[str] = None  # for score: a .jsonl file written by `tokendiff sample sampling.output=...`
    reference: Optional[str] = None  # for score: an autoregressive run or checkpoint that scores the samples
    prompt: Optional[str] = None  # sample: a prefix every sample starts with
    template: Optional[str] = None  # sample: text with [MASK] or [MASK:N] placeholders to infill
    num_samples: int = 4
    seed: int = 0  # seed of sampling and evaluation

    def __post_init__(self):
        _check(1 <= self.num_samples <= 1_000_000, f"num_samples={self.num_samples} must lie in [1, 1000000]")
        _check(0 <= self.seed < 2**63, f"seed={self.seed} must lie in [0, 2^63), e.g. 0")
        d, m = self.diffusion, self.model
        _check(
            m.causal or d.objective == "clean" or d.process == "absorbing",
            f"diffusion.objective={d.objective} learns from masked observations and needs diffusion.process=absorbing",
        )
        if m.arch != "transformer":  # transformers backbones and the image networks take no time
            self._check_time_agnostic_backbone()
        if m.time_conditioning is None:  # auto: what the kernel needs, where the model may be told t at all
            m.time_conditioning = (
                _kernel_needs_time(d)
                and m.arch == "transformer"
                and not (m.causal or m.block_diffusion)
                and d.objective == "clean"
                and d.estimator != "count"
            )  # elsewhere a kernel that needs t is refused below, by the rule that names the real conflict
        if m.block_diffusion:
            _check(
                m.arch == "transformer" and not m.causal and not m.time_conditioning,
                "model.block_diffusion=true needs the time-agnostic tokendiff transformer (model.arch=transformer, "
                f"model.causal=false, model.time_conditioning=false); here arch={m.arch}, causal={m.causal}, "
                f"time_conditioning={m.time_conditioning}",
            )
            _check(
                d.process == "absorbing" and d.objective == "clean" and d.estimator == "time",
                "model.block_diffusion=true masks tokens within blocks: it needs diffusion.process=absorbing "
                f"diffusion.objective=clean diffusion.estimator=time (here {d.process}, {d.objective}, {d.estimator})",
            )
            _check(
                d.block_size is not None and d.block_size >= 1 and m.block_size % d.block_size == 0,
                f"model.block_diffusion=true needs diffusion.block_size dividing model.block_size={m.block_size} "
                f"(got {d.block_size}), e.g. diffusion.block_size=16",
            )
        else:
            _check(
                d.block_size is None,
                f"diffusion.block_size={d.block_size} applies to block diffusion; add model.block_diffusion=true "
                "(or, to sample a model block by block, use sampling.block_size)",
            )
        if d.estimator == "count":
            _check(
                not m.causal and d.process == "absorbing" and d.objective == "clean" and not m.time_conditioning,
                "diffusion.estimator=count applies to masked diffusion of clean data with a time-agnostic model "
                f"(here model.causal={m.causal}, diffusion.process={d.process}, diffusion.objective={d.objective}, "
                f"model.time_conditioning={m.time_conditioning}); use diffusion.estimator=time",
            )
        if d.estimator == "bound":
            _check(
                not m.causal and d.objective == "clean",
                "diffusion.estimator=bound trains on the NELBO of clean data (here model.causal="
                f"{m.causal}, diffusion.objective={d.objective}); use diffusion.estimator=time",
            )
        if m.causal:
            _check(
                d.process == "absorbing" and d.objective == "clean",
                f"model.causal=true trains the autoregressive yardstick, which has no diffusion kernel; drop "
                f"diffusion.process={d.process} / diffusion.objective={d.objective}",
            )
            return
        _check(
            d.objective != "ambient" or not m.time_conditioning,
            "diffusion.objective=ambient needs a time-agnostic model; set model.time_conditioning=false",
        )
        _check(
            m.time_conditioning or not _kernel_needs_time(d),
            f"{_kernel_words(d)} replaces tokens by other real tokens, so the denoiser must know t; set "
            "model.time_conditioning=true (or auto)",
        )
        _check(
            self.data.clean_fraction == 0 or d.objective == "naive",
            f"data.clean_fraction={self.data.clean_fraction} mixes clean images into the corrupted ones for "
            f"diffusion.objective=naive only (here {d.objective}: the ambient losses assume every image observed "
            "at data.observed_fraction); set data.clean_fraction=0",
        )
        if d.objective != "clean":
            self._check_corrupted_data()

    def _check_time_agnostic_backbone(self) -> None:
        """A transformers backbone or an image network is never told t: refuse a kernel that needs it by
        naming the backbone (not model.time_conditioning=true, which the backbone would then refuse)."""
        d, m = self.diffusion, self.model
        backbone = "a Hugging Face backbone (model.arch=hf)" if m.arch == "hf" else f"model.arch={m.arch}"
        _check(
            m.causal or not _kernel_needs_time(d),
            f"{_kernel_words(d)} replaces tokens by other real tokens, so the denoiser must know t, but {backbone} "
            "is time-agnostic: it can only use diffusion.process=absorbing (or hybrid with diffusion.p_uniform=0)"
            + ("; or use model.arch=transformer" if m.arch == "hf" else ""),
        )
        _check(
            not m.time_conditioning,
            f"model.arch={m.arch} is a time-agnostic denoiser; set model.time_conditioning=false",
        )

    def _check_corrupted_data(self) -> None:
        """The naive and ambient objectives learn from partly observed data: tokendiff corrupts only images
        (``data.observed_fraction``, :mod:`tokendiff.data.corruption`), so text, or images observed whole,
        would train with a corruption level that is not in the data."""
        from tokendiff.data.images import IMAGE_DATASETS  # here: the data package imports torch

        d, data = self.diffusion, self.data
        what = f"diffusion.objective={d.objective}"
        if d.objective == "ambient" and self.ambient.hard_loss != "consistency":
            what += f" (ambient.hard_loss={self.ambient.hard_loss})"
        _check(
            data.dataset in IMAGE_DATASETS,
            f"{what} learns from partly observed data, but text corpora are used whole, never corrupted (here "
            f"data.dataset={data.dataset}; data.observed_fraction applies to images: data.dataset=mnist); use "
            "diffusion.objective=clean",
        )
        _check(
            data.observed_fraction < 1,
            f"{what} learns from partly observed data, but data.observed_fraction={data.observed_fraction} observes "
            "every pixel; set data.observed_fraction below 1, e.g. 0.1, or use diffusion.objective=clean",
        )


def _kernel_words(d: DiffusionConfig) -> str:
    """``diffusion.process=...`` for a message, with the uniform share of a hybrid kernel."""
    share = f" with diffusion.p_uniform={d.p_uniform}" if d.process == "hybrid" else ""
    return f"diffusion.process={d.process}{share}"


def _kernel_needs_time(d: DiffusionConfig) -> bool:
    """Whether the kernel of ``diffusion.*`` makes noise that looks like data, so that the denoiser must be told
    t (its ``time_conditioned``): uniform noise, and hybrid noise with a uniform share."""
    return d.process == "uniform" or (d.process == "hybrid" and d.p_uniform > 0)
