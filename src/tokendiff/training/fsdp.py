"""Sharded data parallelism: FSDP2 (``torch.distributed.fsdp.fully_shard``) over tokendiff's transformer.

``system.fsdp=true`` (with ``system.num_processes=N`` or torchrun), or ``accelerate launch --use_fsdp``, trains
as data parallelism does (each process draws its own batch, the gradients are averaged, and the weights are those
of one process trained on the union of the batches), but each of the N processes keeps only its 1/N shard of the
parameters, the gradients, the AdamW moments and the EMA weights. A forward call all-gathers one transformer
block's parameters at a time and frees them after the block; the backward reduce-scatters the gradients.

tokendiff shards the model itself, because accelerate 1.16 cannot do it here. On CPUs accelerate ignores its
FSDP plugin without a word: it trains with DDP, or each process trains alone. It also wraps a model that is
already sharded in DDP, and that fails. So this module does four things:

- It shards the model: each block is one unit, then the root. The root holds the embedding, the final norm and
  the head, and it frees them after every forward call too (``reshard_after_forward=True``). The optimizer is
  built afterwards, over the sharded parameters, and accelerate gets the optimizer only, for gradient
  accumulation and mixed precision.
- It shards the EMA. The EMA is a second copy of the model, made before sharding (a sharded model cannot be
  copied) and sharded in the same way. Its shards then match the model's, so its update is a local lerp with no
  communication.
- It writes a checkpoint as full tensors, in the usual format (:func:`full_state`, :func:`full_optimizer`).
  Gathering them is a collective on every process, and the main process writes. So ``tokendiff sample`` reads
  the checkpoint in one process. A run with the same number of processes resumes from it exactly
  (:func:`load_full`, :func:`load_full_optimizer`); any other count, sharded or not, continues from it too.
- It keeps every process making the same forward calls. Each call of a sharded model is a collective, so every
  process must make the same calls in the same order. Where sharding the evaluation's windows across processes
  would give them different numbers of batches, every process scores all of them (:func:`eval_shard`). Logged
  samples are drawn on every process, with the same seed.

What FSDP cannot honour here is refused in ``tokendiff.configs.schema`` (``Config.check_fsdp``), one line each.
"""

from __future__ import annotations

import contextlib
import os
import warnings

import torch

from tokendiff.errors import TokenDiffError

__all__ = [
    "launched_with_fsdp",
    "fsdp_requested",
    "accelerate_without_fsdp",
    "shard",
    "full_state",
    "full_optimizer",
    "load_full",
    "load_full_optimizer",
    "eval_shard",
]

USE_FSDP = "ACCELERATE_USE_FSDP"  # what `accelerate launch --use_fsdp` sets in every process
# accelerate launch's FSDP options that change what is sharded or where, which tokendiff's sharding does not do
REFUSED_OPTIONS = {
    "FSDP_OFFLOAD_PARAMS": "--fsdp_offload_params (parameters offloaded to the CPU)",
    "FSDP_ACTIVATION_CHECKPOINTING": "--fsdp_activation_checkpointing",
}
# the root's methods a sampler or an objective calls instead of forward: each must all-gather first
FORWARD_METHODS = ("forward_cached", "forward_block_diffusion")


def launched_with_fsdp() -> bool:
    """Whether ``accelerate launch --use_fsdp`` started this process: tokendiff then shards as with
    ``system.fsdp=true``. The options it cannot honour are refused in one line. The others (the FSDP version, the
    wrap policy, the state-dict type) do not apply: tokendiff always uses FSDP2 with the wrapping described above."""
    if os.environ.get(USE_FSDP, "false").lower() != "true":
        return False
    for name, flag in REFUSED_OPTIONS.items():
        if os.environ.get(name, "false").lower() == "true":
            raise TokenDiffError(
                f"accelerate launch {flag}: tokendiff's FSDP keeps the parameters on the device and stores "
                f"activations; launch without {flag.split(' ')[0]}"
            )
    return True


def fsdp_requested(system) -> bool:
    """Whether a run with the ``system`` section shards: ``system.fsdp=true`` or ``accelerate launch --use_fsdp``."""
    return bool(system.fsdp) or launched_with_fsdp()


@contextlib.contextmanager
def accelerate_without_fsdp():
    """Hide ``accelerate launch --use_fsdp`` from the Accelerator built in this block. On a GPU, accelerate would
    otherwise take over the model with its own FSDP; tokendiff shards it itself (:func:`shard`). accelerate reads
    the setting only while it builds its state, so the variable is restored afterwards."""
    saved = os.environ.pop(USE_FSDP, None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ[USE_FSDP] = saved


def shard(model: torch.nn.Module) -> torch.nn.Module:
    """Shard ``model`` in place across the processes of the default process group, and return it.

    Each of ``model.blocks`` becomes one unit, and the root (embedding, final norm, head) another. Every parameter
    becomes a ``DTensor`` sharded on its first dimension. Build the optimizer afterwards, over these parameters.
    """
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    from tokendiff.models.transformer import Transformer

    if not isinstance(model, Transformer):  # Config.check_fsdp names model.arch; this guards direct use
        raise TokenDiffError(
            f"system.fsdp=true shards tokendiff's transformer (model.arch=transformer), not {type(model).__name__}; "
            "drop system.fsdp for data parallelism"
        )
    # a block also returns its keys and values for a KV cache, a view among them, which FSDP warns could lose its
    # hook to an in-place op; the only use of them is a copy into the cache (Transformer._run)
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module \(FSDPBlock\) returned a view tensor")
    for block in model.blocks:
        fully_shard(block)
    # True: the root's own parameters are sharded again after every forward too, an evaluation's (no_grad)
    # included, so that the EMA update and the checkpoints always find shards (the root's default keeps them
    # whole until the next backward)
    fully_shard(model, reshard_after_forward=True)
    for name in FORWARD_METHODS:
        register_fsdp_forward_method(model, name)
    return model


def _options(**kwargs):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kwargs)


def full_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole ``state_dict`` of a sharded ``model``, as CPU tensors, on the main process. The other processes
    get ``{}``. A collective: every process calls it."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_options(cpu_offload=True))


def _names(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """The name of each of the optimizer's parameters, in the order of its groups. :func:`optimizer_tensors`
    numbers the parameters in this order, and torch's state dicts of a sharded model name them."""
    names = {id(p): name for name, p in model.named_parameters()}
    return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]


def full_optimizer(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """The optimizer's moments, whole and flat as :func:`tokendiff.checkpoint.optimizer_tensors` writes them
    (``state.<param index>.<name>``), on the main process. The other processes get ``{}``. A collective."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    state = get_optimizer_state_dict(model, optimizer, options=_options(cpu_offload=True)).get("state", {})
    flat = {}
    for index, name in enumerate(_names(model, optimizer)):
        for key, value in state.get(name, {}).items():
            flat[f"state.{index}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    return flat


def load_full(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Put a whole ``state_dict`` (every process holds it) into the sharded ``model``: each process keeps its shard."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    set_model_state_dict(model, state, options=_options())


def load_full_optimizer(model: torch.nn.Module, optimizer: torch.optim.Optimizer, moments: dict[int, dict]) -> None:
    """Put whole moments, ``{param index: {name: tensor}}`` (what :func:`tokendiff.checkpoint.restore_optimizer`
    has checked; every process holds them), into the optimizer of the sharded ``model``. The hyper-parameters
    stay the current ones."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    names = _names(model, optimizer)
    groups, start = [], 0
    for group in optimizer.param_groups:
        groups.append(
            {**{k: v for k, v in group.items() if k != "params"}, "params": names[start : start + len(group["params"])]}
        )
        start += len(group["params"])
    state = {names[index]: values for index, values in moments.items()}
    set_optimizer_state_dict(model, optimizer, {"state": state, "param_groups": groups}, options=_options())


def eval_shard(num_windows: int, batch_size: int, rank: int, world: int) -> tuple[int, int]:
    """The ``shard`` (rank, world) of a sharded model's evaluation. Windows ``rank::world`` are split across the
    processes (as without FSDP) where every process then scores the same number of batches, so that the
    processes make the same forward calls. Otherwise every process scores all the windows: ``(0, 1)``."""
    batches = {-(-len(range(r, num_windows, world)) // batch_size) for r in range(world)}
    return (rank, world) if len(batches) == 1 else (0, 1)
