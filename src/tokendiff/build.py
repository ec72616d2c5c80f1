"""Turn config values into objects, once: the model, the process, the data set.

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
from tokendiff.processes import AbsorbingProcess, AutoregressiveProcess
from tokendiff.processes.ambient import AmbientProcess, NaiveCorruptedProcess
from tokendiff.schedules import make_schedule

__all__ = ["build_dataset", "build_model", "build_process", "scheduler_config", "default_device"]


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


def build_process(cfg: Config, vocab_size: int):
    """The training process. Its ``eval_process`` (if any) is the clean one to sample and evaluate with."""
    if cfg.model.causal:
        return AutoregressiveProcess(vocab_size)
    schedule = make_schedule(cfg.diffusion.schedule, cfg.diffusion.eps)
    base = AbsorbingProcess(vocab_size, schedule, t_min=cfg.diffusion.t_min, antithetic=cfg.diffusion.antithetic)
    if cfg.diffusion.objective == "naive":
        return NaiveCorruptedProcess(base)
    if cfg.diffusion.objective == "ambient":
        if cfg.model.time_conditioning:
            raise TokenDiffError(
                "diffusion.objective=ambient needs a time-agnostic model; set model.time_conditioning=false"
            )
        return AmbientProcess(
            base,
            cfg.data.observed_fraction,
            cfg.ambient.consistency_weight,
            cfg.ambient.descent_steps,
            cfg.ambient.easy_fraction,
            cfg.ambient.hard_loss,
            cfg.ambient.divergence,
            cfg.ambient.hard_start,
        )
    return base


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


def scheduler_config(cfg: Config, process) -> dict:
    """``scheduler_config.json``: the field names of diffusers' proposed ``TokenDiffusionScheduler``."""
    kernel = getattr(process, "eval_process", process)  # the kernel, not the training objective
    schedule = kernel.schedule.to_dict() if hasattr(kernel, "schedule") else {"alpha_schedule": None}
    out = {
        "_class_name": "TokenDiffusionScheduler",
        "vocab_size": process.vocab_size,
        "mask_token_id": process.mask_token_id,
        "num_train_timesteps": 1000,  # continuous time; 1000 is the discretization diffusers expects
        **schedule,
        "forward_process": kernel.name,
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
