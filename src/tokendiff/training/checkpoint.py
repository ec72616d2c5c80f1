"""Checkpoints as directories, written atomically and read without unpickling anything.

Layout of one checkpoint (``<output_dir>/checkpoints/step_000500`` or ``<output_dir>/final``)::

    config.json              the resolved config (JSON)
    model.safetensors        the weights to sample and evaluate with (the EMA weights when EMA is on)
    scheduler_config.json    kernel and schedule, in the field names of diffusers' proposed
                             TokenDiffusionScheduler (vocab_size, mask_token_id, alpha_schedule, ...)
    tokenizer.json | char_tokenizer.json
    training_state/          what resume needs: raw weights, optimizer moments, step, RNG
        model.safetensors  optimizer.safetensors  state.json

A checkpoint is built in a hidden sibling directory and renamed into place in one step, so a crash
mid-write leaves the previous checkpoints untouched and never a half-written one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from tokendiff.errors import TokenDiffError

__all__ = ["save_checkpoint", "resolve_checkpoint", "read_json", "load_weights", "checkpoint_step"]

FINAL = "final"
CHECKPOINTS = "checkpoints"


def _write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False))


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise TokenDiffError(f"{path} is missing: not a complete tokendiff checkpoint") from None
    except json.JSONDecodeError as exc:
        raise TokenDiffError(f"{path} is corrupted ({exc.msg}); use another checkpoint") from None


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise TokenDiffError(f"{path} is missing: not a complete tokendiff checkpoint") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise TokenDiffError(f"{path} is corrupted ({exc}); use another checkpoint") from None


def optimizer_tensors(state_dict: dict) -> dict[str, torch.Tensor]:
    """Flatten ``optimizer.state_dict()['state']`` into ``state.<param index>.<name>`` tensors."""
    flat = {}
    for index, state in state_dict["state"].items():
        for name, value in state.items():
            flat[f"state.{index}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
    return flat


def restore_optimizer(optimizer: torch.optim.Optimizer, flat: dict[str, torch.Tensor]) -> None:
    """Load moments saved by :func:`optimizer_tensors`; hyper-parameters come from the current config."""
    state: dict[int, dict] = {}
    for key, value in flat.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    current = optimizer.state_dict()
    optimizer.load_state_dict({"state": state, "param_groups": current["param_groups"]})


def save_checkpoint(
    target: Path,
    *,
    config: dict,
    weights: dict[str, torch.Tensor],
    scheduler_config: dict,
    tokenizer,
    training_state: dict | None = None,
) -> Path:
    """Write a checkpoint directory at ``target`` atomically (replacing an older one of that name).

    ``training_state``: ``{"model": raw weights, "optimizer": flat tensors, "state": JSON dict}``.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-tmp-"))
    try:
        _write_json(tmp / "config.json", config)
        save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()}, str(tmp / "model.safetensors"))
        _write_json(tmp / "scheduler_config.json", scheduler_config)
        tokenizer.save(tmp)
        if training_state is not None:
            (tmp / "training_state").mkdir()
            save_file(
                {k: v.detach().cpu().contiguous() for k, v in training_state["model"].items()},
                str(tmp / "training_state" / "model.safetensors"),
            )
            save_file(training_state["optimizer"], str(tmp / "training_state" / "optimizer.safetensors"))
            _write_json(tmp / "training_state" / "state.json", training_state["state"])
        if target.exists():  # swap: the old one is removed only after the new one is in place
            old = target.with_name(f".{target.name}-old-{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def checkpoint_step(path: Path) -> int:
    state = Path(path) / "training_state" / "state.json"
    if state.exists():
        return int(read_json(state).get("step", -1))
    return -1


def resolve_checkpoint(path: str | Path, what: str = "checkpoint") -> Path:
    """A checkpoint directory, or the newest checkpoint of a run directory (``final`` on a tie)."""
    if path is None:
        raise TokenDiffError(f"no {what} given; pass {what}=<run directory or checkpoint directory>")
    path = Path(path).expanduser()
    if not path.exists():
        raise TokenDiffError(f"{what}={str(path)!r} does not exist; give a run or checkpoint directory")
    if (path / "model.safetensors").exists() or (path / "config.json").exists():
        return path
    candidates = []
    if (path / FINAL / "config.json").exists():
        candidates.append(path / FINAL)
    if (path / CHECKPOINTS).is_dir():
        candidates += [p for p in (path / CHECKPOINTS).iterdir() if p.is_dir() and not p.name.startswith(".")]
    if not candidates:
        raise TokenDiffError(
            f"{what}={str(path)!r} holds no checkpoint (no model.safetensors, final/ or checkpoints/); "
            "train first or point at a checkpoint directory"
        )
    # newest by step; `final` wins a tie because it sorts first and max() keeps the first maximum
    return max(candidates, key=checkpoint_step)
