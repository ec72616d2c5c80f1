"""Turn config values into objects, once: the model, the process, a loaded checkpoint.

This is the only place where config strings such as ``diffusion.schedule`` become objects; the
layers below receive objects and plain values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from tokendiff.configs import Config, config_from_dict
from tokendiff.data.tokenizers import load_tokenizer
from tokendiff.errors import TokenDiffError
from tokendiff.models import Transformer
from tokendiff.models.image import ImageConvNet, ImagePatchTransformer
from tokendiff.processes import AbsorbingProcess, AutoregressiveProcess
from tokendiff.processes.ambient import AmbientProcess, NaiveCorruptedProcess
from tokendiff.schedules import make_schedule
from tokendiff.training.checkpoint import load_weights, read_json, resolve_checkpoint

__all__ = ["build_model", "build_process", "scheduler_config", "load_checkpoint", "LoadedCheckpoint"]


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


@dataclass
class LoadedCheckpoint:
    path: Path
    config: Config
    model: Transformer
    process: object
    tokenizer: object
    step: int


def load_checkpoint(path, device="cpu", weights_file: str = "model.safetensors", what="checkpoint"):
    """Load a checkpoint (or a run directory's newest one) for sampling, evaluation or resuming.

    Checks that the tokenizer in the directory is the one the model was trained with.
    """
    ckpt = resolve_checkpoint(path, what)
    saved = read_json(ckpt / "config.json")
    cfg = config_from_dict(saved.get("config", saved))
    tokenizer = load_tokenizer(ckpt)
    vocab_size = saved.get("vocab_size")
    if vocab_size != tokenizer.vocab_size:
        raise TokenDiffError(
            f"the tokenizer in {ckpt} has {tokenizer.vocab_size} tokens but the model was trained with "
            f"{vocab_size}; put back the tokenizer file that was saved with this checkpoint"
        )
    expected = saved.get("tokenizer_fingerprint")
    if expected and tokenizer.fingerprint() != expected:
        raise TokenDiffError(
            f"the tokenizer in {ckpt} is not the one this model was trained with (fingerprint differs); "
            "put back the tokenizer file that was saved with this checkpoint"
        )
    model = build_model(cfg, vocab_size)
    state = load_weights(ckpt / weights_file)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise TokenDiffError(
            f"{ckpt / weights_file} does not fit the model in its config.json "
            f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]}); the checkpoint is damaged"
        )
    model.to(device).eval()
    step = int(saved.get("step", -1))
    process = build_process(cfg, vocab_size)
    return LoadedCheckpoint(ckpt, cfg, model, getattr(process, "eval_process", process), tokenizer, step)


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
