"""LoRA adapters through peft (``training.lora.*``; ``pip install 'tokendiff[lora]'``).

A LoRA run freezes a base model (``training.init_from``, or ``model.arch=hf`` with ``model.hf_name``) and trains
rank-``r`` updates of some of its linear layers: ``W x`` becomes ``W x + (alpha / r) B A x`` with ``A`` (r, in)
and ``B`` (out, r), ``B`` zero at the start, so training starts from the base model exactly (Hu et al. 2021).

peft does the layers: :func:`attach` injects them with ``peft.inject_adapter_in_model`` (tokendiff's backbones are
plain ``nn.Module``s, not ``PreTrainedModel``s, so ``get_peft_model``'s wrapper class is not needed) into the
backbone's :meth:`~tokendiff.models.base.Backbone.lora_root`, which freezes everything else. The model stays the
same object with the same forward, so the trainer, samplers and evaluation use it unchanged, adapters unmerged.

This module holds the adapter's names and tensors in peft's format (``adapter_model.safetensors``: keys
``base_model.model.<module>.lora_A.weight`` relative to the LoRA root, as ``PeftModel.save_pretrained`` writes
them; ``adapter_config.json``: ``LoraConfig``'s fields), the base weights under the names the unadapted model
has (``model.safetensors`` of the base checkpoint), the base's fingerprint, and merging. What a LoRA checkpoint
holds on disk is :mod:`tokendiff.checkpoint`'s.
"""

from __future__ import annotations

import hashlib
import sys

import torch
import torch.nn as nn

from tokendiff.errors import TokenDiffError, first_line
from tokendiff.extras import require

__all__ = [
    "attach",
    "attach_from_config",
    "is_lora",
    "default_targets",
    "adapter_state",
    "adapter_config",
    "load_adapter_state",
    "base_state",
    "load_base_state",
    "base_sha256",
    "merge",
    "trainable_parameters",
    "describe",
]

ADAPTER = "default"  # peft's adapter name inside the model's parameter names
PEFT_PREFIX = "base_model.model."  # what PeftModel.save_pretrained puts before the module names
# layer types peft can adapt (LoRA), for the message naming a model's layers
ADAPTABLE = (nn.Linear, nn.Embedding, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _peft(why: str = "training.lora.r > 0 (LoRA adapters)"):
    return require("peft", why)


def is_lora(model: nn.Module) -> bool:
    """Whether ``model`` holds peft's LoRA layers (without peft installed, no model can)."""
    if sys.modules.get("peft") is None:  # never imported (or blocked): no layer of it can exist
        return False
    from peft.tuners.tuners_utils import BaseTunerLayer

    return any(isinstance(m, BaseTunerLayer) for m in model.modules())


def layer_names(root: nn.Module) -> list[str]:
    """The distinct last names of the layers of ``root`` peft can adapt (``qkv``, ``proj``, ...), in order."""
    names: dict[str, None] = {}
    for name, module in root.named_modules():
        if name and (isinstance(module, ADAPTABLE) or type(module).__name__ == "Conv1D"):
            names.setdefault(name.rsplit(".", 1)[-1], None)
    return list(names)


def default_targets(model: nn.Module) -> list[str] | str:
    """The layers ``training.lora.target_modules=null`` adapts: the backbone's declared ``lora_targets``; for a
    transformers model, peft's defaults for its ``model_type``, or every linear layer but the output head
    (peft's ``all-linear``) for a type peft has none for. A one-line error for a backbone with neither."""
    if model.lora_targets:
        return list(model.lora_targets)
    root = model.lora_root()
    model_type = getattr(getattr(root, "config", None), "model_type", None)
    if model_type is not None:
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_DEFAULTS

        targets = PEFT_DEFAULTS.get(model_type)
        return (list(targets) if not isinstance(targets, str) else targets) if targets else "all-linear"
    raise TokenDiffError(
        f"{type(model).__name__} has no default LoRA layers: name some in training.lora.target_modules=[...]; its "
        f"layers: {', '.join(layer_names(root)) or 'none peft can adapt'}"
    )


def attach(model: nn.Module, r: int, alpha: float, dropout: float, target_modules=None) -> nn.Module:
    """Inject rank-``r`` LoRA adapters into ``model`` (in place; returned) and freeze every other parameter.

    ``target_modules``: module names as peft matches them (a module whose name is one of them, or ends with
    ``.<one of them>``); None: :func:`default_targets`. A name that matches no layer is a one-line error naming
    the layers the model has. The adapters' ``A`` are drawn from torch's global generator (seed it first for the
    same adapters)."""
    peft = _peft()
    targets = list(target_modules) if target_modules is not None else default_targets(model)
    root = model.lora_root()
    config = peft.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets)
    try:
        peft.inject_adapter_in_model(config, root, adapter_name=ADAPTER)
    except ValueError as exc:  # no module of those names, or one of a type LoRA cannot adapt
        shown = targets if isinstance(targets, str) else "[" + ",".join(targets) + "]"
        why = (
            f"matches no layer of {type(model).__name__}"
            if "not found" in str(exc)
            else f"names a module of {type(model).__name__} that LoRA cannot adapt (only linear, embedding and "
            "convolution layers)"
        )
        raise TokenDiffError(
            f"training.lora.target_modules={shown} {why}; its layers LoRA can adapt: {', '.join(layer_names(root))}"
        ) from None
    for name, p in model.named_parameters():  # peft froze the root's other parameters; a wrapper's own ones too
        p.requires_grad_(_is_adapter_key(name))
    return model


def attach_from_config(model: nn.Module, config: dict) -> nn.Module:
    """Inject the adapters an ``adapter_config.json`` (``config``, as read) describes into ``model``."""
    peft = _peft("a LoRA checkpoint (adapter/adapter_config.json)")
    try:
        lora_config = peft.LoraConfig.from_peft_type(**config)
    except (TypeError, ValueError) as exc:
        raise TokenDiffError(f"adapter_config.json is not a LoRA config peft can read ({first_line(exc)})") from None
    try:
        peft.inject_adapter_in_model(lora_config, model.lora_root(), adapter_name=ADAPTER)
    except ValueError as exc:
        raise TokenDiffError(f"adapter_config.json does not fit the model ({first_line(exc)})") from None
    for name, p in model.named_parameters():
        p.requires_grad_(_is_adapter_key(name))
    return model


def _is_adapter_key(key: str) -> bool:
    """Whether a parameter or state-dict name is an adapter's: ``...qkv.lora_A.default.weight``."""
    parts = key.split(".")
    return any(a.startswith("lora_") and b == ADAPTER for a, b in zip(parts, parts[1:]))


def _peft_name(key: str) -> str:
    """A model's adapter key as peft saves it: the adapter's name dropped (``lora_A.default.weight`` ->
    ``lora_A.weight``), after the prefix ``PeftModel.save_pretrained`` writes."""
    parts = key.split(".")
    kept = [b for a, b in zip([""] + parts, parts) if not (b == ADAPTER and a.startswith("lora_"))]
    return PEFT_PREFIX + ".".join(kept)


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter's tensors in peft's format (``adapter_model.safetensors``): names relative to the LoRA root."""
    return {_peft_name(k): v for k, v in model.lora_root().state_dict().items() if _is_adapter_key(k)}


def adapter_config(model: nn.Module) -> dict:
    """``adapter_config.json`` of ``model``'s adapter, as ``LoraConfig.save_pretrained`` writes it."""
    config = model.lora_root().peft_config[ADAPTER].to_dict()
    return {k: sorted(v) if isinstance(v, set) else v for k, v in config.items()}


def load_adapter_state(model: nn.Module, state: dict[str, torch.Tensor], path) -> None:
    """Load adapter tensors in peft's format into ``model``'s adapters; every adapter tensor must be there, with
    its shape, and nothing else (a one-line error naming ``path``)."""
    root = model.lora_root()
    own = {_peft_name(k): k for k in root.state_dict() if _is_adapter_key(k)}
    expected = root.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = [k for k in own if k in state and state[k].shape != expected[own[k]].shape]
    if missing or unexpected or wrong:
        detail = (
            f"shape of {wrong[0]} {tuple(state[wrong[0]].shape)} vs {tuple(expected[own[wrong[0]]].shape)}"
            if wrong
            else f"missing {missing[:2]}, unexpected {unexpected[:2]}"
        )
        raise TokenDiffError(
            f"{path} does not fit the adapters of its adapter_config.json ({detail}); the checkpoint is damaged"
        )
    with torch.no_grad():
        for name, key in own.items():
            target = expected[key]
            target.copy_(state[name].to(target.dtype))


def _base_key(key: str) -> str | None:
    """The name a base tensor has in the unadapted model (``qkv.base_layer.weight`` -> ``qkv.weight``); None for
    an adapter's tensor."""
    if _is_adapter_key(key):
        return None
    return ".".join(part for part in key.split(".") if part != "base_layer")


def base_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The base model's tensors under the names the unadapted model has (those of its ``model.safetensors``)."""
    out = {}
    for key, value in model.state_dict().items():
        base = _base_key(key)
        if base is not None:
            out[base] = value
    return out


def load_base_state(model: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Copy the base weights ``state`` (names of the unadapted model) into the adapted ``model``. Returns the
    names that do not fit (missing, unexpected, or of another shape; empty when all loaded)."""
    own = {}
    for key, value in model.state_dict().items():
        base = _base_key(key)
        if base is not None:
            own[base] = value
    bad = sorted(set(own) ^ set(state)) + [k for k in own if k in state and state[k].shape != own[k].shape]
    if bad:
        return bad
    with torch.no_grad():
        for name, target in own.items():
            target.copy_(state[name].to(target.dtype))
    return []


def base_sha256(model: nn.Module) -> str:
    """sha256 of the base weights (names, dtypes, shapes and bytes, in name order): equal fingerprints mean the
    same base model. An adapter trained on one base means nothing on another."""
    h = hashlib.sha256()
    state = base_state(model) if is_lora(model) else model.state_dict()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def merge(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base layer (``W + (alpha / r) B A``) and put the plain layer back in its
    place (peft's ``merge_and_unload``, done on a model that is no ``PeftModel``): ``model`` (in place; returned)
    is the unadapted architecture again, its ``state_dict`` named as the base's."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    root = model.lora_root()
    for name, module in list(root.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            parent = root.get_submodule(parent_name) if parent_name else root
            setattr(parent, child, module.get_base_layer())
    if "peft_config" in root.__dict__:
        del root.peft_config
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def describe(model: nn.Module) -> str:
    """``LoRA r=8 on qkv, proj, gate_up, down: 24,576 trainable parameters (2.8%)`` for the training log."""
    config = model.lora_root().peft_config[ADAPTER]
    targets = config.target_modules
    targets = ", ".join(sorted(targets)) if isinstance(targets, (set, list, tuple)) else str(targets)
    total = sum(p.numel() for p in model.parameters())
    trainable = trainable_parameters(model)
    return f"LoRA r={config.r} on {targets}: {trainable:,} trainable parameters ({100 * trainable / total:.1f}%)"
