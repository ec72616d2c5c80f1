"""The optimizer (``training.optimizer``), its learning-rate schedule and its weight-decay groups.

The schedule is written by hand (nanoGPT's ``get_lr``) rather than with ``torch.optim.lr_scheduler``: a pure
function of the step needs no state of its own, so a resumed run gets exactly the rate it would have had.

``muon`` pairs Muon (the hidden matrices; :mod:`tokendiff.training.muon`) with AdamW (the rest).
"""

from __future__ import annotations

import math

import torch

from tokendiff.build import resolve_dtype
from tokendiff.training.muon import Muon, MuonAdamW

__all__ = ["learning_rate", "param_groups", "build_optimizer", "muon_matrices", "clear_moments"]


def learning_rate(step: int, peak: float, floor: float, warmup: int, decay_end: int) -> float:
    """Rate for optimizer step ``step`` (0-based)."""
    # 1) linear warmup for `warmup` steps
    if step < warmup:
        return peak * (step + 1) / (warmup + 1)
    # 2) after the decay, stay at the floor
    if step >= decay_end:
        return floor
    # 3) in between, cosine decay from peak to floor
    progress = (step - warmup) / max(1, decay_end - warmup)
    return floor + 0.5 * (1.0 + math.cos(math.pi * progress)) * (peak - floor)


def param_groups(model: torch.nn.Module, weight_decay: float, exclude=()) -> list[dict]:
    """Decay matrices and embeddings (dim >= 2); never norms' gains or biases. ``exclude``: parameters another
    rule owns (Muon's matrices)."""
    owned = {id(p) for p in exclude}
    params = [p for p in model.parameters() if p.requires_grad and id(p) not in owned]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def muon_matrices(model: torch.nn.Module) -> list[torch.Tensor]:
    """The weights Muon orthogonalizes: every ``nn.Linear`` weight except those onto or from the vocabulary
    (the output head; a self-conditioned model's embedding of its previous estimate), as Muon's authors
    prescribe; embeddings, the head, gains and biases stay with AdamW."""
    vocab = getattr(model, "vocab_size", None)
    return [
        m.weight
        for m in model.modules()
        if isinstance(m, torch.nn.Linear) and m.weight.requires_grad and vocab not in (m.out_features, m.in_features)
    ]


def build_optimizer(model: torch.nn.Module, training, fused: bool):
    """``torch.optim.AdamW`` over :func:`param_groups`, or :class:`MuonAdamW` for ``training.optimizer=muon``.

    Only trainable parameters are optimized (and hold moments): a LoRA run's frozen base has none, its adapters'
    matrices go to Muon like any other hidden matrix."""
    betas = (training.beta1, training.beta2)
    matrices = muon_matrices(model) if training.optimizer == "muon" else []
    if not matrices:  # adamw, or muon on a model whose trainable weights hold no hidden matrix
        groups = [g for g in param_groups(model, training.weight_decay) if g["params"]]
        return torch.optim.AdamW(groups, training.learning_rate, betas, fused=fused)
    device = next(model.parameters()).device
    muon = Muon(
        matrices,
        lr=training.learning_rate,
        weight_decay=training.weight_decay,
        adjust_lr_fn="match_rms_adamw",  # Moonshot's scaling: one learning rate for both rules
        ns_dtype=getattr(torch, resolve_dtype("auto", device)[0]),  # bf16 only where its matmul is native
    )
    groups = [g for g in param_groups(model, training.weight_decay, exclude=matrices) if g["params"]]
    adamw = torch.optim.AdamW(groups, training.learning_rate, betas, fused=fused) if groups else None
    return MuonAdamW(muon, adamw)


def clear_moments(optimizer) -> None:
    """Forget the moments (and step counts) of ``optimizer``, an AdamW or a :class:`MuonAdamW`."""
    for part in optimizer.parts if isinstance(optimizer, MuonAdamW) else (optimizer,):
        part.state.clear()
