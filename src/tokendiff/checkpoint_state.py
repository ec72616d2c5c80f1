"""What ``training_state/`` of a checkpoint holds besides the weights, for an exact resume: the optimizer's
moments as flat tensors, and ``state.json`` (the step, the RNG states, the EMA count) with its checks.

:mod:`tokendiff.checkpoint` writes and reads the files (and re-exports these names); this module turns an
optimizer into tensors and back, and says whether a ``state.json`` has what resume needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from tokendiff.errors import TokenDiffError

__all__ = ["OPTIMIZER", "STATE_KEYS", "optimizer_tensors", "restore_optimizer", "valid_state", "TrainingState"]

OPTIMIZER = "optimizer.safetensors"  # in training_state/, beside the raw weights
STATE_KEYS = ("step", "torch_rng_state")


def optimizer_tensors(state_dict: dict) -> dict[str, torch.Tensor]:
    """Flatten ``optimizer.state_dict()['state']`` into ``state.<param index>.<name>`` tensors."""
    flat = {}
    for index, state in state_dict["state"].items():
        for name, value in state.items():
            flat[f"state.{index}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
    return flat


def restore_optimizer(
    optimizer: torch.optim.Optimizer, flat: dict[str, torch.Tensor], path: Path | str = OPTIMIZER, load=None
) -> None:
    """Load moments saved by :func:`optimizer_tensors`; hyper-parameters come from the current config.

    A name or shape that does not fit the optimizer's parameters is a clear error naming ``path``. ``load``: how
    the checked moments, ``{param index: {name: tensor}}``, go in instead of ``optimizer.load_state_dict`` (a
    sharded model's optimizer: :func:`tokendiff.training.fsdp.load_full_optimizer`)."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state: dict[int, dict] = {}
    for key, value in flat.items():
        parts = key.split(".", 2)
        index = int(parts[1]) if len(parts) == 3 and parts[0] == "state" and parts[1].isdigit() else -1
        if not 0 <= index < len(params) or (value.dim() > 0 and value.shape != params[index].shape):
            detail = (
                f"unexpected {key!r}" if index < 0 or index >= len(params) else f"shape of {key} {tuple(value.shape)}"
            )
            raise TokenDiffError(
                f"{path} does not fit the model ({detail}); the checkpoint is damaged, resume from another one"
            )
        state.setdefault(index, {})[parts[2]] = value
    if load is not None:
        load(state)
        return
    current = optimizer.state_dict()
    optimizer.load_state_dict({"state": state, "param_groups": current["param_groups"]})


def _is_rng_state(value) -> bool:
    """Whether ``value`` is a saved ``torch.get_rng_state()``: a list of that many bytes."""
    return (
        isinstance(value, list)
        and len(value) == torch.get_rng_state().numel()
        and all(isinstance(b, int) and 0 <= b < 256 for b in value)
    )


def _valid_ranks(state: dict) -> bool:
    """The multi-process fields (absent in a one-process run): the world size and one CPU RNG state per
    process (CUDA ones are byte lists too, of their own length)."""
    world = state.get("world_size", 1)
    if not isinstance(world, int) or world < 1:
        return False
    ranks = state.get("rank_torch_rng_states")
    if ranks is not None and (not isinstance(ranks, list) or len(ranks) != world or not all(map(_is_rng_state, ranks))):
        return False
    cuda = state.get("rank_cuda_rng_states")
    return cuda is None or (
        isinstance(cuda, list)
        and len(cuda) == world
        and all(
            c is None or (isinstance(c, list) and all(isinstance(b, int) and 0 <= b < 256 for b in c)) for c in cuda
        )
    )


def valid_state(state) -> bool:
    """Whether a ``state.json`` holds :data:`STATE_KEYS` and every field resume reads, with the right types."""
    return (
        isinstance(state, dict)
        and all(k in state for k in STATE_KEYS)
        and isinstance(state["step"], int)
        and _is_rng_state(state["torch_rng_state"])
        and isinstance(state.get("ema_updates", 0), int)
        and _valid_ranks(state)
    )


@dataclass
class TrainingState:
    """What ``training_state/`` holds besides the weights: the step, RNG states, EMA count, last eval."""

    raw_weights: dict  # the trained weights
    ema_weights: dict  # model.safetensors: the EMA weights when EMA is on (else the raw ones)
    optimizer: dict  # flat moments, see optimizer_tensors
    state: dict
    objective: dict  # the objective's own tensors (EM's imputation buffer); empty for most
