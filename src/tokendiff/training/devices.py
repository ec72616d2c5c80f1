"""The trainer's device, precision and processes: the ``system`` section made into an accelerate Accelerator."""

from __future__ import annotations

import contextlib
import os

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState

from tokendiff.build import default_device, resolve_dtype
from tokendiff.errors import TokenDiffError
from tokendiff.training.fsdp import accelerate_without_fsdp

__all__ = ["MIXED_PRECISION", "check_precision", "make_accelerator"]

MIXED_PRECISION = {"float32": "no", "bfloat16": "bf16", "float16": "fp16"}


def check_precision(system) -> None:
    """``system.dtype``'s one-line error, before anything is built: float16 needs a CUDA GPU."""
    if system.dtype == "float16" and (system.device == "cpu" or not torch.cuda.is_available()):
        raise TokenDiffError("system.dtype=float16 needs a CUDA GPU; on a CPU use system.dtype=bfloat16")


def make_accelerator(system, grad_accum: int, fsdp: bool = False) -> tuple[Accelerator, str]:
    """The Accelerator of a run with ``system`` (a :class:`~tokendiff.configs.SystemConfig`) and
    ``grad_accum`` micro-batches per step, and the compute dtype it resolved (``system.dtype=auto``).

    Sets the CPU threads and the current CUDA device first. ``fsdp``: the run shards its model itself
    (:mod:`tokendiff.training.fsdp`), so accelerate's own FSDP (``accelerate launch --use_fsdp``) is kept out of
    this Accelerator. Refuses DeepSpeed and Megatron-LM: the EMA weights and checkpoints are built and tested for
    data parallelism and tokendiff's FSDP only.
    """
    device = system.device
    if system.threads:
        torch.set_num_threads(system.threads)
    if device.startswith("cuda:"):
        torch.cuda.set_device(int(device.split(":", 1)[1]))  # accelerate uses the current device
    dtype, why = resolve_dtype(system.dtype, default_device(device))  # after set_device
    if system.dtype == "auto" and int(os.environ.get("RANK", "0")) == 0:  # once per run
        print(f"system.dtype=auto: {dtype} ({why})", flush=True)
    # accelerate keeps its mixed-precision setting in a process-wide singleton and refuses a second
    # Accelerator with another one; a Trainer owns its precision, so it clears that part (never the
    # distributed PartialState) before building its own: trainers built one after the other in one
    # process (tests, notebooks, sweeps) each get their own precision. Interleaving two live trainers
    # is not supported (accelerate's gradient-accumulation state is process-wide too).
    AcceleratorState._reset_state(reset_partial_state=False)
    with accelerate_without_fsdp() if fsdp else contextlib.nullcontext():
        accelerator = Accelerator(
            cpu=device == "cpu",
            mixed_precision=MIXED_PRECISION[dtype],
            gradient_accumulation_steps=grad_accum,
        )
    engine = accelerator.distributed_type.value
    if engine in ("FSDP", "DEEPSPEED", "MEGATRON_LM"):  # other sharded engines: EMA, checkpoints not tested
        raise TokenDiffError(
            f"accelerate launched this run with {engine}; tokendiff's EMA weights and checkpoints are built and "
            "tested for data parallelism (DDP: accelerate launch --multi_gpu, or torchrun) and for its own FSDP "
            f"(system.fsdp=true, or accelerate launch --use_fsdp) only; launch without {engine}"
        )
    return accelerator, dtype
