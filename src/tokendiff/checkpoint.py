"""The checkpoint format, in one place: what a checkpoint holds, how it is written, read and checked.

Checkpoints are directories, written atomically and read without unpickling anything.

Layout of one checkpoint (``<output_dir>/checkpoints/step_000500`` or ``<output_dir>/final``)::

    config.json              the resolved config (JSON)
    model.safetensors        the weights to sample and evaluate with (the EMA weights when EMA is on)
    scheduler_config.json    the kernel and its schedule, in the fields of diffusers' TokenDiffusionScheduler
                             or HybridTokenDiffusionScheduler (_class_name, vocab_size, mask_token_id, ...);
                             loading rebuilds the kernel from it (absent for an autoregressive model)
    tokenizer.json | char_tokenizer.json | tokenizer_config.json + tokenizer.json (a transformers tokenizer)
    model/                   model.arch=hf only: the backbone (and tokenizer) in save_pretrained's format,
                             so that AutoModelForMaskedLM.from_pretrained("<checkpoint>/model") loads it
    training_state/          what resume needs: raw weights, optimizer moments, step, RNG
        model.safetensors  optimizer.safetensors  state.json   (tokendiff.checkpoint_state: their contents)

A LoRA run (``training.lora.r > 0``) writes the adapter, not the weights: no ``model.safetensors`` and no
``model/``, but ``adapter/`` in peft's format (``adapter_model.safetensors``, the EMA adapter when EMA is on, and
``adapter_config.json``; ``PeftModel.from_pretrained(base, "<ckpt>/adapter")`` loads it onto the base), and
``training_state/model.safetensors`` holds the raw adapter in the same format. The base is referenced, not
copied: ``config.json``'s ``lora`` entry names the base checkpoint (``training.init_from``, resolved: an absolute
path and one relative to the checkpoint) or the pretrained ``model.hf_name``, with the sha256 of the base weights
(:func:`tokendiff.training.lora.base_sha256`). Loading rebuilds the base, checks the fingerprint (a changed base is
refused) and puts the adapter on it unmerged; ``tokendiff merge`` writes a full-weights checkpoint of it.

A checkpoint is built in a hidden sibling directory and renamed into place in one step, so a crash
mid-write leaves the previous checkpoints untouched and never a half-written one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from tokendiff._version import __version__
from tokendiff.atomic import staged_directory
from tokendiff.checkpoint_state import (
    OPTIMIZER,
    STATE_KEYS,
    TrainingState,
    optimizer_tensors,
    restore_optimizer,
    valid_state,
)
from tokendiff.configs import Config, config_from_dict, record_kernel
from tokendiff.data.tokenizers import load_tokenizer
from tokendiff.errors import TokenDiffError
from tokendiff.objectives.rules import BLOCK_KERNELS
from tokendiff.processes import kernel_from_config

__all__ = [
    "save_checkpoint",
    "checkpoint_record",
    "load_checkpoint",
    "LoadedCheckpoint",
    "resolve_checkpoint",
    "read_json",
    "load_weights",
    "checkpoint_step",
    "optimizer_tensors",
    "restore_optimizer",
    "TrainingState",
    "load_training_state",
    "load_into",
    "lora_record",
    "load_lora_model",
    "load_lora_base",
    "lora_base_dir",
]

FINAL = "final"
CHECKPOINTS = "checkpoints"
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
OBJECTIVE_STATE = "objective.safetensors"  # in training_state/: an objective's own state
SCHEDULER_CONFIG = "scheduler_config.json"
TRAINING_STATE = "training_state"
EXPORT_DIR = "model"  # model.arch=hf: the backbone as save_pretrained writes it (transformers can load it)
ADAPTER_DIR = "adapter"  # a LoRA run: the adapter in peft's format (PeftModel.save_pretrained's file names)
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


def _write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False))


def _tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous tensors that share no memory (safetensors refuses tied weights, e.g. a BERT decoder
    tied to its embeddings: each name gets its own copy, and loading ties them again)."""
    out, seen = {}, set()
    for k, v in state.items():
        v = v.detach().cpu().contiguous()
        key = (v.untyped_storage().data_ptr(), v.storage_offset())
        out[k] = v.clone() if key in seen else v
        seen.add(key)
    return out


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


def checkpoint_record(
    config_dict: dict, *, step: int, tokenizer, num_parameters: int, lora: dict | None = None
) -> dict:
    """The content of ``config.json``: the resolved config and what loading checks against it; ``lora``: a LoRA
    checkpoint's reference to its base (:func:`lora_record`)."""
    record = {
        "tokendiff_version": __version__,
        "step": step,
        "vocab_size": tokenizer.vocab_size,
        "num_parameters": num_parameters,
        "tokenizer_fingerprint": tokenizer.fingerprint(),
        "config": config_dict,
    }
    if lora is not None:
        record["lora"] = lora
    return record


def lora_record(*, base_checkpoint, base_model: str | None, base_sha256: str, target: Path, trainable: int) -> dict:
    """``config.json``'s ``lora`` entry: where the base of a LoRA checkpoint at ``target`` is and its fingerprint.

    ``base_checkpoint``: ``training.init_from`` (a run or checkpoint directory, resolved here to the checkpoint,
    recorded as an absolute path and as one relative to ``target``, so that a run moved together with its base
    still finds it), or None for the pretrained ``base_model`` (``model.hf_name``) as transformers loads it."""
    absolute = relative = None
    if base_checkpoint is not None:
        base = resolve_checkpoint(base_checkpoint, "training.init_from").resolve()
        absolute = str(base)
        relative = os.path.relpath(base, Path(target).resolve())
    return {
        "adapter": ADAPTER_DIR,
        "base_checkpoint": absolute,
        "base_checkpoint_relative": relative,
        "base_model": None if absolute else base_model,
        "base_sha256": base_sha256,
        "trainable_parameters": trainable,
    }


def save_checkpoint(
    target: Path,
    *,
    config: dict,
    weights: dict[str, torch.Tensor] | None,
    kernel,
    tokenizer,
    training_state: dict | None = None,
    export=None,
    adapter: dict | None = None,
) -> Path:
    """Write a checkpoint directory at ``target`` atomically (replacing an older one of that name).

    ``config``: from :func:`checkpoint_record`. ``kernel``: written as ``scheduler_config.json`` (None for
    an autoregressive model, which has none). ``training_state``: ``{"model": raw weights,
    "optimizer": flat tensors (:func:`optimizer_tensors`), "state": JSON dict}``. ``export``: called with
    the checkpoint's ``model/`` folder (before the rename) to write the backbone in another format.
    ``adapter``: a LoRA checkpoint's ``{"weights": peft-format tensors, "config": adapter_config.json}``, written
    to ``adapter/``; its ``weights`` is then None (the base is referenced in ``config``, not copied).
    """
    target = Path(target)
    with staged_directory(target) as tmp:  # renamed into place (replacing an older one) once complete
        _write_json(tmp / CONFIG, config)
        if weights is not None:
            save_file(_tensors(weights), str(tmp / WEIGHTS))
        if adapter is not None:
            (tmp / ADAPTER_DIR).mkdir()
            save_file(_tensors(adapter["weights"]), str(tmp / ADAPTER_DIR / ADAPTER_WEIGHTS), metadata={"format": "pt"})
            (tmp / ADAPTER_DIR / ADAPTER_CONFIG).write_text(json.dumps(adapter["config"], indent=2, sort_keys=True))
        if kernel is not None:
            _write_json(tmp / SCHEDULER_CONFIG, {**kernel.to_config(), "tokendiff_version": __version__})
        tokenizer.save(tmp)
        if export is not None:
            export(tmp / EXPORT_DIR)
        if training_state is not None:
            (tmp / TRAINING_STATE).mkdir()
            save_file(_tensors(training_state["model"]), str(tmp / TRAINING_STATE / WEIGHTS))
            save_file(training_state["optimizer"], str(tmp / TRAINING_STATE / OPTIMIZER))
            _write_json(tmp / TRAINING_STATE / "state.json", training_state["state"])
            if training_state.get("objective"):  # the objective's own state, e.g. EM's imputation buffer
                save_file(training_state["objective"], str(tmp / TRAINING_STATE / OBJECTIVE_STATE))
    return target


def checkpoint_step(path: Path) -> int:
    state = Path(path) / TRAINING_STATE / "state.json"
    if state.exists():
        record = read_json(state)
        step = record.get("step", -1) if isinstance(record, dict) else None
        if not isinstance(step, int):
            raise TokenDiffError(f"{state} is damaged (no integer step); give one checkpoint of the run directly")
        return step
    return -1


def resolve_checkpoint(path: str | Path, what: str = "checkpoint") -> Path:
    """A checkpoint directory, or the newest checkpoint of a run directory (``final`` on a tie)."""
    if path is None:
        raise TokenDiffError(f"no {what} given; pass {what}=<run directory or checkpoint directory>")
    path = Path(path).expanduser()
    if not path.exists():
        raise TokenDiffError(f"{what}={str(path)!r} does not exist; give a run or checkpoint directory")
    if (path / WEIGHTS).exists() or (path / CONFIG).exists():
        return path
    candidates = []
    if (path / FINAL / CONFIG).exists():
        candidates.append(path / FINAL)
    if (path / CHECKPOINTS).is_dir():
        candidates += [p for p in (path / CHECKPOINTS).iterdir() if p.is_dir() and not p.name.startswith(".")]
    if not candidates:
        raise TokenDiffError(
            f"{what}={str(path)!r} holds no checkpoint (no {WEIGHTS}, {FINAL}/ or {CHECKPOINTS}/); "
            "train first, or point at a checkpoint directory or a folder written by transformers' save_pretrained"
        )
    # newest by step; `final` wins a tie because it sorts first and max() keeps the first maximum
    return max(candidates, key=checkpoint_step)


@dataclass
class LoadedCheckpoint:
    path: Path
    config: Config
    model: torch.nn.Module
    kernel: object  # the forward kernel (tokendiff.processes.Kernel); None for an autoregressive model
    objective: object  # the training objective (tokendiff.objectives.Objective)
    tokenizer: object
    step: int


def load_checkpoint(
    path, device="cpu", weights_file: str = WEIGHTS, what="checkpoint", model_options: dict | None = None
) -> LoadedCheckpoint:
    """Load a checkpoint (or a run directory's newest one) for sampling, evaluation or resuming.

    Checks that the tokenizer in the directory is the one the model was trained with. A pretrained model
    (a transformers ``save_pretrained`` folder or a hub id) is read by :mod:`tokendiff.pretrained`, with
    ``model_options``: the ``model.*`` settings given for it (``trust_remote_code``, ``logit_shift``, ...).
    """
    from tokendiff.build import build_model, build_objective  # build never imports this module
    from tokendiff.pretrained import is_pretrained, load_pretrained

    if is_pretrained(path):
        if weights_file != WEIGHTS:
            raise TokenDiffError(f"{what}={path}: a pretrained model has one set of weights; use eval.weights=ema")
        return load_pretrained(path, device, model_options, what)
    ckpt = resolve_checkpoint(path, what)
    saved = read_json(ckpt / CONFIG)
    if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
        raise TokenDiffError(
            f"{ckpt / CONFIG} is not a tokendiff checkpoint record (nor a transformers config: no model_type); "
            "put back the file saved with it"
        )
    step = saved.get("step", -1)
    if not isinstance(step, int):
        raise TokenDiffError(f"{ckpt / CONFIG}: step={step!r} is not an integer; put back the file saved with it")
    cfg = config_from_dict(saved["config"], source=str(ckpt / CONFIG))
    tokenizer = load_tokenizer(ckpt)
    vocab_size = saved.get("vocab_size")
    if not isinstance(vocab_size, int) or vocab_size != tokenizer.vocab_size:
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
    kernel = None if cfg.model.causal else read_kernel(ckpt, cfg, vocab_size)
    if kernel is not None:  # the config says what the kernel is: scheduler_config.json is its record
        cfg = record_kernel(cfg, kernel)
    if saved.get("lora") is not None:  # an adapter on a base it references: both, unmerged
        model = load_lora_model(ckpt, saved, cfg, vocab_size, tokenizer, weights_file)
    else:
        exported = ckpt / EXPORT_DIR if cfg.model.arch == "hf" else None
        if exported is not None and not (exported / "config.json").exists():
            raise TokenDiffError(f"{exported / 'config.json'} is missing: not a complete tokendiff checkpoint")
        model = build_model(cfg, vocab_size, tokenizer, saved=exported)
        load_into(model, load_weights(ckpt / weights_file), ckpt / weights_file)
    model.to(device).eval()
    objective = build_objective(cfg, kernel, vocab_size)
    return LoadedCheckpoint(ckpt, cfg, model, kernel, objective, tokenizer, step)


def lora_base_dir(ckpt: Path, record: dict) -> Path | None:
    """The base checkpoint a LoRA checkpoint's ``config.json`` (``record``) names: at its absolute path, else at
    its path relative to ``ckpt``; None for a pretrained base (``model.hf_name``), which the config rebuilds."""
    lora = record.get("lora")
    if not isinstance(lora, dict) or not isinstance(lora.get("base_sha256"), str):
        raise TokenDiffError(f"{Path(ckpt) / CONFIG}: its lora entry is damaged; put back the file saved with it")
    absolute, relative = lora.get("base_checkpoint"), lora.get("base_checkpoint_relative")
    if absolute is None:
        return None
    for candidate in [Path(absolute)] + ([Path(ckpt) / relative] if relative else []):
        if (candidate / CONFIG).exists():
            return candidate
    raise TokenDiffError(
        f"{ckpt} is a LoRA adapter on the base checkpoint {absolute}, which is missing; put that checkpoint back "
        f"(or beside this run as {relative})"
    )


def load_lora_base(model: torch.nn.Module, ckpt: Path, record: dict, base: Path | None) -> None:
    """Put the base weights of LoRA checkpoint ``ckpt`` into the adapted ``model`` (from ``base``; None: the
    pretrained weights it was built with) and check their fingerprint against ``record``'s: an adapter on another
    base than its own is refused."""
    from tokendiff.training import lora

    where = str(base) if base is not None else f"model.hf_name={record['config']['model'].get('hf_name')}"

    def different(detail: str) -> TokenDiffError:
        return TokenDiffError(
            f"{ckpt} is a LoRA checkpoint with a different base: {where} is not the model its adapter was trained "
            f"on ({detail}); put back that base checkpoint, or train the adapter again on this one"
        )

    if base is not None:
        bad = lora.load_base_state(model, load_weights(base / WEIGHTS))
        if bad:
            raise different(f"its weights do not fit, e.g. {bad[0]}")
    expected = record["lora"].get("base_sha256")
    actual = lora.base_sha256(model)
    if actual != expected:
        raise different(f"weights sha256 {actual[:12]}, recorded {str(expected)[:12]}")


def load_lora_model(ckpt: Path, record: dict, cfg: Config, vocab_size: int, tokenizer, weights_file: str = WEIGHTS):
    """The base model of a LoRA checkpoint with its adapter (unmerged): ``adapter/adapter_model.safetensors`` (the
    EMA adapter) for ``weights_file=model.safetensors``, the raw one for ``training_state/model.safetensors``."""
    from tokendiff.build import build_model
    from tokendiff.training import lora

    base = lora_base_dir(ckpt, record)
    exported = base / EXPORT_DIR if base is not None and cfg.model.arch == "hf" else None
    model = build_model(cfg, vocab_size, tokenizer, saved=exported)  # the architecture (hf: pretrained weights)
    config = read_json(ckpt / ADAPTER_DIR / ADAPTER_CONFIG)
    if not isinstance(config, dict):
        raise TokenDiffError(f"{ckpt / ADAPTER_DIR / ADAPTER_CONFIG} is not a peft adapter config; put it back")
    lora.attach_from_config(model, config)
    load_lora_base(model, ckpt, record, base)
    adapter = ckpt / ADAPTER_DIR / ADAPTER_WEIGHTS if weights_file == WEIGHTS else ckpt / weights_file
    lora.load_adapter_state(model, load_weights(adapter), adapter)
    return model


def read_kernel(ckpt: Path, cfg: Config, vocab_size: int):
    """The kernel of a checkpoint, from its ``scheduler_config.json`` (the one record of the kernel), checked
    against the model and objective of ``cfg``, which it leaves as it is (:func:`tokendiff.configs.record_kernel`
    makes a config say what the kernel is).

    Files written before tokendiff took diffusers' names (no ``tokendiff_version``; the mask id equal to
    ``vocab_size``) are read when their schedule means the same function under both names.
    """
    path = ckpt / SCHEDULER_CONFIG
    record = read_json(path)
    if isinstance(record, dict) and "tokendiff_version" not in record and record.get("mask_token_id") == vocab_size:
        record = _from_format_1(record, path)
    kernel = kernel_from_config(record, str(path))
    if kernel.vocab_size != vocab_size:
        raise TokenDiffError(
            f"{path} describes {kernel.vocab_size} tokens but the model has {vocab_size}; "
            "put back the scheduler_config.json saved with this checkpoint"
        )
    _check_kernel_fits(kernel, path, ckpt / CONFIG, cfg)
    return kernel


def _check_kernel_fits(kernel, path: Path, config_path: Path, cfg: Config) -> None:
    """Refuse a kernel that the model and objective of ``config.json`` cannot use (training refuses the same
    pairs, so only an edited or swapped ``scheduler_config.json`` gets here), naming both files."""
    m, d, says = cfg.model, cfg.diffusion, kernel.describe()
    put_back = "put back the scheduler_config.json saved with the checkpoint"
    if kernel.time_conditioned and not m.time_conditioning:
        raise TokenDiffError(
            f"{path} says {says}, which needs a time-conditioned model, but {config_path} has "
            f"model.time_conditioning=false; {put_back}"
        )
    masks_only = [
        setting
        for setting, on in (
            (f"diffusion.objective={d.objective}", d.objective != "clean"),
            ("model.block_diffusion=true", m.block_diffusion and kernel.name not in BLOCK_KERNELS),
            ("diffusion.estimator=count", d.estimator == "count"),
        )
        if on
    ]
    if not kernel.masked_diffusion and masks_only:
        raise TokenDiffError(
            f"{path} says {says}, but {config_path} has {masks_only[0]}, which needs forward_process=absorbing; "
            f"{put_back}"
        )


def _from_format_1(record: dict, path: Path) -> dict:
    """A scheduler_config.json of tokendiff 0.1 (absorbing only) in today's fields."""
    schedule = record.get("alpha_schedule")
    if schedule not in ("loglinear", "geometric"):
        raise TokenDiffError(
            f"{path} was written by an earlier tokendiff whose {schedule!r} schedule is another function than "
            "today's of that name; retrain the model"
        )
    return {
        "_class_name": "TokenDiffusionScheduler",  # format 1 had no class name; absorbing is this class's
        **record,
        "vocab_size": record["mask_token_id"] + 1,
        "alpha_schedule": "log_linear" if schedule == "loglinear" else schedule,
        "eps": record.get("eps", 1e-3),
    }


def load_into(model: torch.nn.Module, state: dict, path: Path, load=None) -> None:
    """``model.load_state_dict(state)``, or a clear error naming ``path`` when the shapes or names differ.
    ``load``: how the checked ``state`` goes in instead (a sharded model: :func:`tokendiff.training.fsdp.load_full`)."""
    expected = model.state_dict()
    wrong = [k for k in state if k in expected and state[k].shape != expected[k].shape]
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if wrong or missing or unexpected:
        detail = (
            f"shape of {wrong[0]} {tuple(state[wrong[0]].shape)} vs {tuple(expected[wrong[0]].shape)}" if wrong else ""
        )
        detail = detail or f"missing {missing[:3]}, unexpected {unexpected[:3]}"
        raise TokenDiffError(
            f"{path} does not fit the model of its config.json ({detail}); the checkpoint is damaged or "
            "its config.json was edited"
        )
    (load or model.load_state_dict)(state)


def init_weights_from(model: torch.nn.Module, path, tokenizer, adapt: bool = False) -> Path:
    """Load the (sampling) weights of the checkpoint at ``path`` into a new run's ``model``
    (``training.init_from``): e.g. fine-tune a masked model into a block diffusion model, as BD3-LM does, or
    (``adapt``: ``model.adapt=a2d``) an autoregressive model into a diffusion LM, as Dream and DiffuLLaMA do.
    The tokenizers must be the same and every tensor must fit; the optimizer and step start afresh."""
    ckpt = resolve_checkpoint(path, "training.init_from")
    record = read_json(ckpt / CONFIG)
    record = record if isinstance(record, dict) else {}
    if record.get("lora") is not None:
        raise TokenDiffError(
            f"training.init_from={path} is a LoRA checkpoint (an adapter, not weights); merge it first: "
            f"tokendiff merge checkpoint={path} output_dir=<dir>, then training.init_from=<dir>"
        )
    expected = record.get("tokenizer_fingerprint")
    if expected is not None and expected != tokenizer.fingerprint():
        raise TokenDiffError(
            f"training.init_from={path}: that checkpoint was trained with another tokenizer; use the same "
            "data.tokenizer (and data) as it"
        )
    saved_model = record.get("config", {}).get("model") if isinstance(record.get("config"), dict) else None
    theirs_causal = bool(saved_model.get("causal", False)) if isinstance(saved_model, dict) else False
    if adapt and not theirs_causal:
        raise TokenDiffError(
            f"model.adapt=a2d adapts an autoregressive model, but training.init_from={path} is not one "
            "(model.causal=false there); drop model.adapt=a2d to fine-tune it as it is"
        )
    if theirs_causal and not model.causal and not adapt:
        raise TokenDiffError(
            f"training.init_from={path} is an autoregressive model; add model.adapt=a2d to adapt it into a "
            "diffusion LM (bidirectional attention, e.g. with model.logit_shift=true)"
        )
    adapted = _is_lora(model)  # a LoRA run: the weights go into the frozen base under its adapters
    if adapted:
        from tokendiff.training.lora import base_state

        own = base_state(model)
    else:
        own = model.state_dict()
    state = load_weights(ckpt / WEIGHTS)
    wrong = [k for k in own if k not in state or state[k].shape != own[k].shape]
    unexpected = [k for k in state if k not in own]
    if wrong or unexpected:
        name = (wrong or unexpected)[0]
        theirs = tuple(state[name].shape) if name in state else "missing"
        shapes = f"{theirs} vs {tuple(own[name].shape) if name in own else 'not in this model'}"
        raise TokenDiffError(
            f"training.init_from={path}: its weights do not fit this model ({name}: {shapes}); use the same model.* "
            "sizes as that checkpoint"
        )
    if adapted:
        from tokendiff.training.lora import load_base_state

        load_base_state(model, state)
    else:
        model.load_state_dict(state)
    return ckpt


def _is_lora(model: torch.nn.Module) -> bool:
    from tokendiff.training.lora import is_lora

    return is_lora(model)


def load_training_state(ckpt: Path) -> TrainingState:
    """Read ``training_state/`` of a checkpoint (for resume)."""
    root = Path(ckpt) / TRAINING_STATE
    if not root.is_dir():
        raise TokenDiffError(f"{ckpt} has no {TRAINING_STATE}/; it can be sampled but not resumed")
    state = read_json(root / "state.json")
    if not valid_state(state):
        raise TokenDiffError(
            f"{root / 'state.json'} lacks {', '.join(STATE_KEYS)} or has the wrong types; resume from another "
            "checkpoint of the run"
        )
    objective = load_weights(root / OBJECTIVE_STATE) if (root / OBJECTIVE_STATE).exists() else {}
    adapter = Path(ckpt) / ADAPTER_DIR / ADAPTER_WEIGHTS  # a LoRA checkpoint's EMA adapter
    return TrainingState(
        load_weights(root / WEIGHTS),
        load_weights(adapter if adapter.exists() else Path(ckpt) / WEIGHTS),
        load_weights(root / OPTIMIZER),
        state,
        objective,
    )
