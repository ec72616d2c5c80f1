"""Typed configuration: one dataclass per section, checked in ``__post_init__``, and :class:`Config`, which
holds them and checks the rules across sections.

Hydra composes ``config.yaml`` (which starts from :class:`Config`), the chosen ``+experiment=...``
preset and the command-line overrides; :func:`tokendiff.configs.compose_config` then turns the result
into these dataclasses, so every check below runs on the final values. The sections live in
:mod:`tokendiff.configs.sections` (each field documented beside it); they are importable from here too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from tokendiff.configs.sections import (
    SAMPLING_FIELDS,
    AmbientConfig,
    DataConfig,
    DiffusionConfig,
    EvalConfig,
    LoggingConfig,
    ModelConfig,
    SamplingConfig,
    SystemConfig,
    TrainingConfig,
)
from tokendiff.configs.sections.checks import check
from tokendiff.configs.sections.model import kernel_needs_time, kernel_words
from tokendiff.models import transformer as transformer_rules
from tokendiff.objectives.rules import check_block_kernel, check_block_size, check_count_kernel

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
    "SAMPLING_FIELDS",
]


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
        check(1 <= self.num_samples <= 1_000_000, f"num_samples={self.num_samples} must lie in [1, 1000000]")
        check(0 <= self.seed < 2**63, f"seed={self.seed} must lie in [0, 2^63), e.g. 0")
        d, m = self.diffusion, self.model
        check(
            m.causal or d.objective == "clean" or d.process == "absorbing",
            f"diffusion.objective={d.objective} learns from masked observations and needs diffusion.process=absorbing",
        )
        self._check_lora()
        self._check_adaptation()
        if self.system.fsdp:
            self.check_fsdp()
        if self.data.format == "chat":  # fine-tuning on responses (tokendiff.objectives.response)
            check(
                not m.causal and not m.block_diffusion and d.objective == "clean" and d.estimator != "bound",
                "data.format=chat fine-tunes a diffusion LM on its responses (diffusion.objective=clean, "
                "diffusion.estimator=time or count, no block diffusion); here model.causal="
                f"{m.causal}, model.block_diffusion={m.block_diffusion}, diffusion.objective={d.objective}, "
                f"diffusion.estimator={d.estimator}",
            )
        if m.arch != "transformer":  # transformers backbones and the image networks take no time
            self._check_time_agnostic_backbone()
        if m.time_conditioning is None:  # auto: what the kernel needs, where the model may be told t at all
            m.time_conditioning = (
                kernel_needs_time(d)
                and m.arch == "transformer"
                and not m.causal
                and d.objective == "clean"
                and d.estimator != "count"
            )  # elsewhere a kernel that needs t is refused below, by the rule that names the real conflict
        if m.block_diffusion:
            check_block_kernel(d.process)  # the block objective's rule, on the kernel: absorbing or uniform
            # masks: a time-agnostic model; uniform noise: told each block's time (a uniform block model without it
            # is refused below, by the rule that every uniform-noise denoiser must know t)
            check(
                m.arch == "transformer" and not m.causal and (kernel_needs_time(d) or not m.time_conditioning),
                "model.block_diffusion=true needs the tokendiff transformer (model.arch=transformer, "
                "model.causal=false), time-agnostic for masks (model.time_conditioning=false or auto); here "
                f"arch={m.arch}, causal={m.causal}, time_conditioning={m.time_conditioning}",
            )
            check(
                d.objective == "clean" and d.estimator == "time",
                "model.block_diffusion=true trains on clean data with the time estimator: it needs "
                f"diffusion.objective=clean diffusion.estimator=time (here {d.objective}, {d.estimator})",
            )
            if d.block_size is not None:
                check_block_size(d.block_size)  # the block objective's rule
            transformer_rules.check_block_diffusion(d.block_size, m.block_size)  # blocks tile the context
        else:
            check(
                d.block_size is None,
                f"diffusion.block_size={d.block_size} applies to block diffusion; add model.block_diffusion=true "
                "(or, to sample a model block by block, use sampling.block_size)",
            )
        if d.estimator == "count":
            check(
                not m.causal and d.objective == "clean" and not m.time_conditioning,
                "diffusion.estimator=count applies to masked diffusion of clean data with a time-agnostic model "
                f"(here model.causal={m.causal}, diffusion.objective={d.objective}, "
                f"model.time_conditioning={m.time_conditioning}); use diffusion.estimator=time",
            )
            check_count_kernel(d.process == "absorbing", d.process)  # CleanObjective's rule, on the kernel
        if d.estimator == "bound":
            check(
                not m.causal and d.objective == "clean",
                "diffusion.estimator=bound trains on the NELBO of clean data (here model.causal="
                f"{m.causal}, diffusion.objective={d.objective}); use diffusion.estimator=time",
            )
        if m.causal:
            check(
                d.process == "absorbing" and d.objective == "clean",
                f"model.causal=true trains the autoregressive yardstick, which has no diffusion kernel; drop "
                f"diffusion.process={d.process} / diffusion.objective={d.objective}",
            )
            return
        check(
            d.objective != "ambient" or not m.time_conditioning,
            "diffusion.objective=ambient needs a time-agnostic model; set model.time_conditioning=false",
        )
        check(
            m.time_conditioning or not kernel_needs_time(d),
            f"{kernel_words(d)} replaces tokens by other real tokens, so the denoiser must know t; set "
            "model.time_conditioning=true (or auto)",
        )
        check(
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
        check(
            m.causal or not kernel_needs_time(d),
            f"{kernel_words(d)} replaces tokens by other real tokens, so the denoiser must know t, but {backbone} "
            "is time-agnostic: it can only use diffusion.process=absorbing (or hybrid with diffusion.p_uniform=0)"
            + ("; or use model.arch=transformer" if m.arch == "hf" else ""),
        )
        check(
            not m.time_conditioning,
            f"model.arch={m.arch} is a time-agnostic denoiser; set model.time_conditioning=false",
        )

    def _check_adaptation(self) -> None:
        """model.adapt=a2d, model.logit_shift and training.attention_anneal_iters: a bidirectional text denoiser
        started from an autoregressive model's weights."""
        m, t = self.model, self.training
        text_denoiser = m.arch in ("transformer", "hf") and not m.causal and not m.block_diffusion
        if m.adapt == "a2d":
            check(
                text_denoiser,
                "model.adapt=a2d makes a bidirectional diffusion LM of an autoregressive one: it needs "
                f"model.arch=transformer or hf, model.causal=false, model.block_diffusion=false (here arch={m.arch}, "
                f"causal={m.causal}, block_diffusion={m.block_diffusion})",
            )
            check(
                t.init_from is not None or t.ar_share > 0 or (m.arch == "hf" and m.hf_name is not None),
                "model.adapt=a2d starts from an autoregressive model: add training.init_from=<its run directory>, "
                "or training.ar_share=0.5 to train one first in the same run (or, with model.arch=hf, "
                "model.hf_name=<a causal LM>)",
            )
        check(
            not m.logit_shift or text_denoiser,
            "model.logit_shift=true reads each token from the previous position of a bidirectional text denoiser: "
            f"it needs model.arch=transformer or hf, model.causal=false, model.block_diffusion=false (here "
            f"arch={m.arch}, causal={m.causal}, block_diffusion={m.block_diffusion})",
        )
        if t.ar_share > 0:
            check(
                m.adapt == "a2d" and m.arch == "transformer" and t.init_from is None,
                f"training.ar_share={t.ar_share} trains an autoregressive stage first and adapts it: it needs "
                "model.adapt=a2d and model.arch=transformer, without training.init_from",
            )
            check(
                t.max_minutes is None and t.lr_decay_iters is None and t.n_epochs is None and t.max_iters >= 2,
                f"training.ar_share={t.ar_share} splits training.max_iters (>= 2) between the stages, each with its "
                "own schedule: drop training.max_minutes, training.lr_decay_iters and training.n_epochs",
            )
        check(
            t.attention_anneal_iters == 0 or (m.adapt == "a2d" and m.arch == "transformer"),
            f"training.attention_anneal_iters={t.attention_anneal_iters} opens an adapted model's causal attention "
            "step by step: it needs model.adapt=a2d and model.arch=transformer",
        )

    def check_fsdp(self) -> None:
        """system.fsdp=true (or accelerate launch --use_fsdp, which ``tokendiff train`` turns into it): what sharded
        training (:mod:`tokendiff.training.fsdp`) cannot honour. Each forward call of a sharded model is a collective,
        so every process must make the same calls. The ambient objective and self-conditioning decide per process
        (per batch, per coin) how many calls to make."""
        m, t, s, d = self.model, self.training, self.system, self.diffusion
        why = "system.fsdp=true (or accelerate launch --use_fsdp) shards"
        check(
            m.arch == "transformer",
            f"{why} tokendiff's transformer only (each block a unit), not model.arch={m.arch}; use "
            "model.arch=transformer, or drop system.fsdp for data parallelism",
        )
        check(
            t.optimizer != "muon",
            f"{why} every matrix across the processes, and training.optimizer=muon orthogonalizes whole matrices; "
            "use training.optimizer=adamw, or drop system.fsdp",
        )
        check(
            not t.lora.r,
            f"{why} the model, and training.lora.r={t.lora.r} (adapters on a frozen base the EMA shares) is not "
            "supported with it; drop system.fsdp (LoRA's adapters are small: data parallelism suffices)",
        )
        check(
            s.compile is not True,
            f"{why} the model, and system.compile=true is not supported with it; use system.compile=false "
            "(or leave it unset: a sharded run does not compile)",
        )
        check(
            s.dtype != "float16",
            f"{why} the gradients, and system.dtype=float16's loss scaling is not supported with it; use "
            "system.dtype=bfloat16",
        )
        check(
            not m.self_conditioning,
            f"{why} the model, and model.self_conditioning=true makes a first pass on some batches only (a coin per "
            "process), while every process must make the same calls; drop one of them",
        )
        check(
            d.objective != "ambient",
            f"{why} the model, and diffusion.objective=ambient calls it as often as each process's batch needs, "
            "while every process must make the same calls; use diffusion.objective=naive or drop system.fsdp",
        )

    def _check_lora(self) -> None:
        """training.lora.r > 0 trains adapters on a frozen base: that base must be trained weights (a checkpoint
        or a pretrained transformers model), never the random initialisation, which no adapter can fix."""
        m, t = self.model, self.training
        if not t.lora.r:
            return
        check(
            t.ar_share == 0,
            f"training.lora.r={t.lora.r} with training.ar_share={t.ar_share}: the autoregressive stage would train "
            "the base itself; train the base first, then its adapters with training.init_from=<that run>",
        )
        check(
            t.init_from is not None or (m.arch == "hf" and m.hf_name is not None),
            f"training.lora.r={t.lora.r} trains adapters on a frozen base model: add training.init_from=<the base run "
            "or checkpoint> (or, with model.arch=hf, model.hf_name=<a pretrained model>)",
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
        check(
            data.dataset in IMAGE_DATASETS,
            f"{what} learns from partly observed data, but text corpora are used whole, never corrupted (here "
            f"data.dataset={data.dataset}; data.observed_fraction applies to images: data.dataset=mnist); use "
            "diffusion.objective=clean",
        )
        check(
            data.observed_fraction < 1,
            f"{what} learns from partly observed data, but data.observed_fraction={data.observed_fraction} observes "
            "every pixel; set data.observed_fraction below 1, e.g. 0.1, or use diffusion.objective=clean",
        )
