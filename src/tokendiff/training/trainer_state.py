"""A trainer's state in a checkpoint: written by :func:`save_state`, read back by :func:`load_state`.

A checkpoint holds the EMA weights (or the raw ones without EMA) for sampling and evaluation, and, for exact
resume, the raw weights, the optimizer moments, the objective's tensors (e.g. EM's imputation buffer), the
torch RNG streams of every process (dropout) and the step. Only the main process writes; with several
processes the checkpoint also records each one's weights hash (data parallelism keeps them bitwise equal).
A sharded run (``system.fsdp=true``) gathers its whole weights and moments into the same files
(:mod:`tokendiff.training.fsdp`): its processes hold different shards, so no hashes are compared.

A LoRA run (:mod:`tokendiff.training.lora`) writes its adapters instead of the weights (raw and EMA, in peft's
format) and a reference to its frozen base with the base's fingerprint (:func:`tokendiff.checkpoint.lora_record`);
resuming it loads the base again from there, checked, then the adapters.
"""

from __future__ import annotations

import hashlib
import weakref
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from accelerate.utils import gather_object

from tokendiff.checkpoint import (
    ADAPTER_DIR,
    ADAPTER_WEIGHTS,
    CONFIG,
    OPTIMIZER,
    TRAINING_STATE,
    WEIGHTS,
    checkpoint_record,
    load_into,
    load_lora_base,
    load_training_state,
    lora_base_dir,
    lora_record,
    optimizer_tensors,
    read_json,
    restore_optimizer,
    save_checkpoint,
)
from tokendiff.errors import TokenDiffError
from tokendiff.training import fsdp, lora

if TYPE_CHECKING:
    from tokendiff.training.trainer import Trainer

__all__ = ["load_state", "save_state", "weights_sha256"]


def weights_sha256(model: torch.nn.Module) -> str:
    """sha256 of every parameter's bytes, in order: equal hashes mean bitwise-equal weights."""
    h = hashlib.sha256()
    for p in model.parameters():
        h.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_state(trainer: Trainer, target: Path) -> Path:
    """Write ``trainer``'s checkpoint to ``target`` (every process calls this; the main process writes,
    the others wait)."""
    rng = torch.get_rng_state().tolist()
    cuda_rng = torch.cuda.get_rng_state(trainer.device).tolist() if trainer.device.type == "cuda" else None
    # dropout streams of every process: the CPU one, and the one of its own GPU
    rank_rngs = gather_object([(rng, cuda_rng)]) if trainer.world > 1 else None
    # data parallelism keeps the processes' weights bitwise equal; the checkpoint records that it did
    hashes = gather_object([weights_sha256(trainer.raw_model)]) if trainer.world > 1 and not trainer.fsdp else None
    if hashes and len(set(hashes)) > 1 and trainer.is_main:
        print(f"warning: the processes' weights differ at step {trainer.step} (sha256 {hashes})", flush=True)
    gathered = None
    if trainer.fsdp:  # whole tensors from the shards: collectives, so every process takes part (the main one gets them)
        raw = fsdp.full_state(trainer.raw_model)
        ema = fsdp.full_state(trainer.ema.module) if trainer.ema is not None else raw
        gathered = (ema, raw, fsdp.full_optimizer(trainer.raw_model, trainer.optimizer.optimizer))
    if not trainer.is_main:
        trainer.accelerator.wait_for_everyone()
        return target
    state = {
        "step": trainer.step,
        "world_size": trainer.world,
        "torch_rng_state": rng,
        "rank_torch_rng_states": [r[0] for r in rank_rngs] if rank_rngs else None,
        "rank_cuda_rng_states": [r[1] for r in rank_rngs] if rank_rngs else None,
        "rank_weights_sha256": hashes,
        "cuda_rng_states": [s.tolist() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
        "ema_updates": trainer.ema.updates if trainer.ema is not None else 0,
        "last_eval": trainer.last_eval,
    }
    model = trainer.inference_model()
    export = (lambda d: model.export(d, trainer.tokenizer)) if model.exports_pretrained else None
    if gathered is not None:
        weights, raw, optimizer = gathered
    else:
        weights, raw = model.state_dict(), trainer.raw_model.state_dict()
        optimizer = optimizer_tensors(trainer.optimizer.state_dict())
    adapter, base = None, None
    if lora.is_lora(trainer.raw_model):  # the adapters and a reference to the frozen base, not the weights
        config = lora.adapter_config(model)
        base = lora_record(
            base_checkpoint=trainer.training.init_from,
            base_model=trainer.config_dict["model"].get("hf_name"),
            base_sha256=_base_sha256(trainer.raw_model),
            target=target,
            trainable=lora.trainable_parameters(trainer.raw_model),
        )
        config["base_model_name_or_path"] = base["base_checkpoint"] or base["base_model"]  # peft's own field
        weights, raw, export = None, lora.adapter_state(trainer.raw_model), None
        adapter = {"weights": lora.adapter_state(model), "config": config}
    path = save_checkpoint(
        target,
        config=checkpoint_record(
            trainer.config_dict,
            step=trainer.step,
            tokenizer=trainer.tokenizer,
            num_parameters=trainer.raw_model.num_parameters(),
            lora=base,
        ),
        weights=weights,
        kernel=trainer.diffusion_objective.kernel,  # the run's kernel, in an autoregressive stage too
        tokenizer=trainer.tokenizer,
        training_state={
            "model": raw,
            "optimizer": optimizer,
            "state": state,
            "objective": trainer.diffusion_objective.state_tensors(),  # e.g. EM's imputation buffer
        },
        export=export,
        adapter=adapter,
    )
    trainer.accelerator.wait_for_everyone()
    return path


_BASE_SHA256: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _base_sha256(model: torch.nn.Module) -> str:
    """The fingerprint of a LoRA run's base, hashed once per model: the base is frozen for the whole run."""
    if model not in _BASE_SHA256:
        _BASE_SHA256[model] = lora.base_sha256(model)
    return _BASE_SHA256[model]


def load_state(trainer: Trainer, ckpt: Path) -> None:
    """Put the state of checkpoint ``ckpt`` into ``trainer``: weights, optimizer, RNG streams, step."""
    saved = load_training_state(ckpt)
    record = read_json(ckpt / CONFIG)
    adapted = lora.is_lora(trainer.raw_model)
    if adapted != (isinstance(record, dict) and record.get("lora") is not None):
        raise TokenDiffError(
            f"{ckpt} {'has no' if adapted else 'holds'} LoRA adapters, and a resumed run keeps its own: drop "
            "training.lora.*= (or start a new run with training.init_from)"
        )
    if adapted:  # the frozen base from its checkpoint (checked), then the adapters; the EMA shares the base
        load_lora_base(trainer.raw_model, ckpt, record, lora_base_dir(ckpt, record))
        lora.load_adapter_state(trainer.raw_model, saved.raw_weights, ckpt / TRAINING_STATE / WEIGHTS)
        if trainer.ema is not None:
            lora.load_adapter_state(trainer.ema.module, saved.ema_weights, ckpt / ADAPTER_DIR / ADAPTER_WEIGHTS)
    else:  # a sharded model takes the whole tensors (every process has read them) and keeps its shard
        sharded = (lambda module: partial(fsdp.load_full, module)) if trainer.fsdp else (lambda module: None)
        load_into(trainer.raw_model, saved.raw_weights, ckpt / TRAINING_STATE / WEIGHTS, sharded(trainer.raw_model))
        if trainer.ema is not None:
            load_into(trainer.ema.module, saved.ema_weights, ckpt / WEIGHTS, sharded(trainer.ema.module))
    state = saved.state
    if trainer.ema is not None:
        trainer.ema.updates = int(state.get("ema_updates", 0))
    optimizer = trainer.optimizer.optimizer
    moments = partial(fsdp.load_full_optimizer, trainer.raw_model, optimizer) if trainer.fsdp else None
    restore_optimizer(optimizer, saved.optimizer, ckpt / TRAINING_STATE / OPTIMIZER, moments)
    world, rank = trainer.world, trainer.rank
    saved_world = state.get("world_size", 1)
    rank_rngs = state.get("rank_torch_rng_states")
    if saved_world != world and trainer.is_main:
        print(
            f"note: {ckpt} was written by {saved_world} process(es), this run has {world}: it continues "
            "from the same weights and step, but its draws differ from an uninterrupted run "
            f"(resume with {saved_world} process(es) to continue exactly)",
            flush=True,
        )
    same_world = saved_world == world and rank_rngs
    rng = rank_rngs[rank] if same_world else state["torch_rng_state"]
    torch.set_rng_state(torch.tensor(rng, dtype=torch.uint8))
    rank_cuda = (state.get("rank_cuda_rng_states") or [None] * world)[rank] if same_world else None
    cuda_states = state.get("cuda_rng_states") or []
    if rank_cuda is not None and trainer.device.type == "cuda":  # each process: its own GPU's stream
        torch.cuda.set_rng_state(torch.tensor(rank_cuda, dtype=torch.uint8), trainer.device)
    elif world == 1 and cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in cuda_states])
    trainer.diffusion_objective.load_state_tensors(saved.objective)  # e.g. EM's imputation buffer
    trainer.step = int(state["step"])
    trainer.last_eval = state.get("last_eval")
