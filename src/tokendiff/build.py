"""Turn config values into objects, once: the data set, the model, the kernel and the objective.

This is the only place where config strings such as ``diffusion.schedule`` become objects; the
layers below receive objects and plain values.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tokendiff.configs import Config
from tokendiff.errors import TokenDiffError
from tokendiff.models import Transformer
from tokendiff.models.image import ImageConvNet, ImagePatchTransformer
from tokendiff.objectives import AmbientObjective, AutoregressiveObjective, CleanObjective, NaiveObjective
from tokendiff.processes import AbsorbingKernel
from tokendiff.schedules import make_schedule

__all__ = [
    "build_dataset",
    "build_model",
    "build_kernel",
    "build_objective",
    "scheduler_config",
    "default_device",
]


def build_dataset(cfg: Config):
    """The corpus a config names: MNIST images, a known text corpus, or ``data.input`` files.

    A corpus from ``data.input`` without its own ``data.dataset`` name is named after the file (its stem).
    """
    from tokendiff.data.images import IMAGE_DATASETS, MnistData
    from tokendiff.data.text import resolve_dataset

    d = cfg.data
    if d.dataset in IMAGE_DATASETS:
        corrupted = cfg.diffusion.objective != "clean"
        return MnistData(
            d.binarization, d.observed_fraction if corrupted else 1.0, d.corruption_seed, d.data_dir, d.limit
        )
    name = d.dataset if not d.input else (d.dataset if d.dataset != "shakespeare_char" else Path(d.input).stem)
    return resolve_dataset(
        name, [d.input] if d.input else None, d.tokenizer, d.vocab_size, d.data_dir, min_tokens=cfg.model.block_size + 2
    )


def build_kernel(cfg: Config, vocab_size: int):
    """The forward kernel a config names (``diffusion.process``), or None for the autoregressive model."""
    if cfg.model.causal:
        return None
    return AbsorbingKernel(vocab_size, make_schedule(cfg.diffusion.schedule, cfg.diffusion.eps))


def build_objective(cfg: Config, kernel, vocab_size: int):
    """The training objective: ``diffusion.objective`` around ``kernel`` (autoregressive without one)."""
    d = cfg.diffusion
    if kernel is None:
        return AutoregressiveObjective(vocab_size)
    if d.objective == "naive":
        return NaiveObjective(kernel, t_min=d.t_min, antithetic=d.antithetic)
    if d.objective == "ambient":
        if cfg.model.time_conditioning:
            raise TokenDiffError(
                "diffusion.objective=ambient needs a time-agnostic model; set model.time_conditioning=false"
            )
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
        )
    return CleanObjective(kernel, t_min=d.t_min, antithetic=d.antithetic)


def build_model(cfg: Config, vocab_size: int):
    m = cfg.model
    if m.arch == "image_conv":
        return ImageConvNet(
            vocab_size=vocab_size,
            image_size=int(round(m.block_size**0.5)),
            n_layer=m.n_layer,
            n_embd=m.n_embd,
            dropout=m.dropout,
            time_conditioning=m.time_conditioning,
        )
    if m.arch == "image_patch":
        return ImagePatchTransformer(
            vocab_size=vocab_size,
            image_size=int(round(m.block_size**0.5)),
            patch=m.patch,
            n_layer=m.n_layer,
            n_head=m.n_head,
            n_embd=m.n_embd,
            dropout=m.dropout,
            time_conditioning=m.time_conditioning,
        )
    return Transformer(
        vocab_size=vocab_size,
        n_layer=m.n_layer,
        n_head=m.n_head,
        n_embd=m.n_embd,
        block_size=m.block_size,
        dropout=m.dropout,
        causal=m.causal,
        time_conditioning=m.time_conditioning,
    )


def scheduler_config(cfg: Config, objective) -> dict:
    """``scheduler_config.json``: the field names of diffusers' proposed ``TokenDiffusionScheduler``."""
    kernel = objective.kernel
    out = {
        "_class_name": "TokenDiffusionScheduler",
        "vocab_size": objective.vocab_size if kernel is None else kernel.vocab_size,
        "mask_token_id": None if kernel is None else kernel.mask_token_id,
        "num_train_timesteps": 1000,  # continuous time; 1000 is the discretization diffusers expects
        **(kernel.schedule.to_dict() if kernel is not None else {"alpha_schedule": None}),
        "forward_process": "autoregressive" if kernel is None else kernel.name,
        "training_objective": cfg.diffusion.objective,
        "exclude_mask_from_uniform": True,
        "t_min": cfg.diffusion.t_min,
        "time_conditioning": cfg.model.time_conditioning,
    }
    return out


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
