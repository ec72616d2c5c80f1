"""Turn config values into objects, once: the data set, the model, the kernel and the objective.

This is the only place where config strings such as ``diffusion.schedule`` become objects; the
layers below receive objects and plain values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from tokendiff.configs import Config
from tokendiff.errors import TokenDiffError
from tokendiff.models.registry import backbone_class
from tokendiff.objectives import (
    AmbientObjective,
    AutoregressiveObjective,
    BlockDiffusionObjective,
    CleanObjective,
    ResponseObjective,
    NaiveObjective,
)
from tokendiff.processes import AbsorbingKernel, HybridKernel, UniformKernel
from tokendiff.schedules import make_schedule

__all__ = [
    "TrainingParts",
    "build_training",
    "build_dataset",
    "build_model",
    "build_kernel",
    "build_objective",
    "sequence_length",
    "default_device",
    "resolve_dtype",
]


def build_dataset(cfg: Config):
    """The corpus a config names: MNIST images, a known text corpus, a Hugging Face dataset
    (``data.dataset=hf``), ``data.input`` files, or a corpus prepared earlier under a name.

    A corpus from ``data.input`` without its own ``data.dataset`` name is named after the file (its stem);
    the name is recorded, so that ``data.dataset=<name>`` finds it later without ``data.input``.
    """
    from tokendiff.data.images import IMAGE_DATASETS, MnistData
    from tokendiff.data.names import safe_name
    from tokendiff.data.corpora import resolve_dataset

    d = cfg.data
    if d.dataset in IMAGE_DATASETS:
        corrupted = cfg.diffusion.objective != "clean"
        return MnistData(
            d.binarization,
            d.observed_fraction if corrupted else 1.0,
            d.corruption_seed,
            d.data_dir,
            d.limit,
            d.clean_fraction if corrupted else 0.0,
        )
    if d.format == "chat":
        from tokendiff.data.corpora import resolve_chat

        return resolve_chat(d, cfg.model.block_size, cfg.training.init_from)
    named_by_file = d.input and d.dataset == "shakespeare_char"  # the default: the file names the corpus
    name = safe_name(Path(d.input).expanduser().resolve().stem) if named_by_file else d.dataset
    return resolve_dataset(
        name,
        [d.input] if d.input else None,
        d.tokenizer,
        d.vocab_size,
        d.data_dir,
        min_tokens=cfg.model.block_size + 2,
        val_fraction=d.val_fraction,
        text_column=d.text_column,
        hf_path=d.hf_path,
        hf_name=d.hf_name,
        tokenizer_name=d.tokenizer_name,
        num_proc=d.num_proc,
    )


def build_kernel(cfg: Config, vocab_size: int):
    """The forward kernel a config names (``diffusion.process``), or None for the autoregressive model."""
    d = cfg.diffusion
    if cfg.model.causal:
        return None
    if d.process == "hybrid":
        return HybridKernel(vocab_size, p_uniform=d.p_uniform, gamma=d.gamma)
    schedule = make_schedule(d.schedule or "log_linear", d.eps, d.sigma_min, d.sigma_max)
    if d.process == "uniform":
        return UniformKernel(vocab_size, schedule, exclude_mask_from_uniform=d.exclude_mask_from_uniform)
    return AbsorbingKernel(vocab_size, schedule)


def build_objective(cfg: Config, kernel, vocab_size: int):
    """The training objective: ``diffusion.objective`` around ``kernel`` (autoregressive without one)."""
    d = cfg.diffusion
    if kernel is None:
        return AutoregressiveObjective(vocab_size)
    if d.objective == "naive":
        return NaiveObjective(kernel, t_min=d.t_min, antithetic=d.antithetic)
    if d.objective == "ambient":  # the config refused a time-conditioned model and a data set observed whole
        a = cfg.ambient
        return AmbientObjective(
            kernel,
            cfg.data.observed_fraction,
            a.consistency_weight,
            a.descent_steps,
            a.easy_fraction,
            a.hard_loss,
            a.divergence,
            a.hard_start,
            t_min=d.t_min,
            hard_batch=a.hard_batch,
            imputed_weight=a.imputed_weight,
            impute_rounds=a.impute_rounds,
            refresh=a.refresh,
            gibbs_share=a.gibbs_share,
            consistency_reveal=a.consistency_reveal,
            consistency_max_masked=a.consistency_max_masked,
        )
    if cfg.data.format == "chat":  # the response given its prompt (the config refused what does not apply)
        return ResponseObjective(kernel, t_min=d.t_min, antithetic=d.antithetic, estimator=d.estimator)
    if cfg.model.block_diffusion:
        return BlockDiffusionObjective(kernel, d.block_size, t_min=d.t_min, antithetic=d.antithetic)
    return CleanObjective(kernel, t_min=d.t_min, antithetic=d.antithetic, estimator=d.estimator)


def sequence_length(cfg: Config, objective) -> int:
    """Tokens in one training or evaluation window: ``model.block_size``, plus the tokens the objective
    reads beyond it (the autoregressive objective: one more than it predicts)."""
    return cfg.model.block_size + objective.extra_tokens


def build_model(cfg: Config, vocab_size: int, tokenizer=None, saved: Path | None = None):
    """The backbone of ``model.arch`` for ``vocab_size`` real tokens (the mask is id ``vocab_size``), built by
    its class's ``from_config`` from the ``model`` section (:mod:`tokendiff.models.registry`).

    ``tokenizer``: places the mask inside a transformers backbone's vocabulary (``model.arch=hf``);
    ``saved``: a checkpoint's exported backbone folder, built from its config without downloading.
    """
    m = cfg.model
    block = cfg.diffusion.block_size if m.block_diffusion else None  # BD3-LM's blocks, for the transformer
    return backbone_class(m.arch).from_config(m, vocab_size, tokenizer=tokenizer, saved=saved, block_diffusion=block)


def default_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise TokenDiffError(f"system.device={requested} but no CUDA GPU is visible; use system.device=cpu")
    if requested == "mps" and not torch.backends.mps.is_available():
        raise TokenDiffError("system.device=mps but MPS is not available; use system.device=cpu")
    if requested not in ("cpu", "mps") and not requested.startswith("cuda"):
        raise TokenDiffError(f"system.device={requested!r} is unknown; use auto, cpu, cuda, cuda:N or mps")
    return torch.device(requested)


@dataclass
class TrainingParts:
    """What a :class:`~tokendiff.training.Trainer` is built from (``tokendiff train`` and the benchmarks)."""

    data: object  # the prepared corpus or image set
    tokenizer: object
    model: torch.nn.Module
    kernel: object  # None for the autoregressive model
    objective: object
    derived: str | None  # what ``training.n_epochs`` set, for the user; None without it


def build_training(cfg: Config) -> TrainingParts:
    """Data, model (initialised from ``training.seed``; with ``training.lora.r``, LoRA adapters on it and
    everything else frozen), kernel and objective of a training config.

    Applies ``training.n_epochs`` to ``cfg.training`` (it needs the corpus size).
    """
    data = build_dataset(cfg)
    tokenizer = data.tokenizer()
    seq_len = cfg.model.block_size + (1 if cfg.model.causal else 0)
    derived = cfg.training.apply_epochs(data.split("train").epoch_size(seq_len))  # the MNIST seed counts epochs
    torch.manual_seed(cfg.training.seed)  # initialisation; every later draw has its own seeded generator
    model = build_model(cfg, tokenizer.vocab_size, tokenizer)
    lora = cfg.training.lora
    if lora.r:  # adapters on a frozen base, whose weights the trainer loads from training.init_from
        from tokendiff.training.lora import attach

        attach(model, lora.r, lora.alpha, lora.dropout, lora.target_modules)
    kernel = build_kernel(cfg, tokenizer.vocab_size)
    objective = build_objective(cfg, kernel, tokenizer.vocab_size)
    return TrainingParts(data, tokenizer, model, kernel, objective, derived)


def resolve_dtype(requested: str, device: torch.device) -> tuple[str, str]:
    """The compute dtype of training for ``system.dtype`` on ``device``, and why (for the user).

    ``auto`` is bfloat16 mixed precision only where bf16 matmuls run natively: a CUDA GPU that supports
    them, or a CPU with AMX or AVX512-BF16. Elsewhere bf16 is emulated and slower than float32 (measured
    on an AVX512 CPU without them: 3.2x slower per training step; docs/benchmarks.md), so ``auto`` is float32.
    """
    if requested != "auto":
        return requested, "as set"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return "bfloat16", "this GPU has bf16 matmul"
        return "float32", "this GPU has no bf16 matmul"
    if device.type == "cpu":
        native = torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()
        if native:
            return "bfloat16", "this CPU has native bf16 matmul (AMX or AVX512-BF16)"
        return "float32", "this CPU has no native bf16 matmul, where bf16 is slower than float32"
    return "float32", f"the safe choice on {device.type}"
