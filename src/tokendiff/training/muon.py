"""Muon (orthogonalized momentum) for the hidden matrices, and its pairing with AdamW for the other parameters.

:class:`Muon` is ``torch.optim.Muon`` (its arguments, checks and state) with one change: the Newton-Schulz
iteration runs in ``ns_dtype``. torch always runs it in bfloat16, which on a CPU without native bf16 matmuls
(no AMX or AVX512-BF16) is emulated: measured 30x slower than float32 for a 768 x 128 matrix on one thread,
enough to halve the training step of the quickstart's model. The step is written here for that reason only (its buffers,
checks and learning-rate rules are torch's own); with ``ns_dtype=torch.bfloat16`` it is torch's step exactly
(``tests/test_optimizer.py``).

:class:`MuonAdamW` steps the two rules together and saves them as one optimizer. torch has no optimizer over two
rules; the class only routes ``step``/``zero_grad`` and numbers both states in one ``state_dict``, so a
checkpoint holds them as one optimizer and resume restores both.
"""

from __future__ import annotations

import torch
from torch.optim._muon import _adjust_lr  # torch's rescaling rules (original, match_rms_adamw)

__all__ = ["Muon", "MuonAdamW", "newton_schulz"]


def newton_schulz(g: torch.Tensor, dtype: torch.dtype, steps: int = 5, coefficients=(3.4445, -4.775, 2.0315), eps=1e-7):
    """Keller Jordan's quintic Newton-Schulz iteration towards the orthogonal factor of ``g`` (2-D), in ``dtype``
    (the arithmetic of torch's ``_zeropower_via_newtonschulz``, so that bfloat16 gives its result)."""
    a, b, c = coefficients
    x = g.to(dtype)
    tall = g.size(0) > g.size(1)
    if tall:
        x = x.T
    x = x.div(x.norm().clamp(min=eps))  # spectral norm at most 1
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if tall else x


class Muon(torch.optim.Muon):
    """``torch.optim.Muon`` with its Newton-Schulz iteration in ``ns_dtype`` (see the module's docstring)."""

    def __init__(self, params, *, ns_dtype: torch.dtype = torch.float32, **kwargs):
        super().__init__(params, **kwargs)
        self.ns_dtype = ns_dtype

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, buffers = [], [], []
            self._init_group(group, params, grads, buffers)  # torch's checks and momentum buffers
            lr, momentum = group["lr"], group["momentum"]
            for p, grad, buf in zip(params, grads, buffers):
                buf.lerp_(grad, 1 - momentum)
                update = grad.lerp(buf, momentum) if group["nesterov"] else buf
                update = newton_schulz(update, self.ns_dtype, group["ns_steps"], group["ns_coefficients"], group["eps"])
                p.mul_(1 - lr * group["weight_decay"])
                p.add_(update, alpha=-_adjust_lr(lr, group["adjust_lr_fn"], p.shape))
        return loss


class MuonAdamW(torch.optim.Optimizer):
    """Muon for some parameters and AdamW for the others, stepped together and saved as one optimizer: its
    ``state_dict`` numbers Muon's parameters first, then AdamW's, as ``torch.optim.Optimizer`` would for
    one optimizer over all its groups.

    A ``torch.optim.Optimizer`` so that accelerate wraps it as any other (skipping the step between the
    micro-batches of gradient accumulation); its parts hold the groups and the state, so the base class's
    ``__init__``, which would own them, is not called."""

    def __init__(self, muon: torch.optim.Optimizer, adamw: torch.optim.Optimizer | None):  # noqa: B026
        # adamw None: every trainable parameter is a hidden matrix (a LoRA run's adapters)
        self.parts = (muon,) if adamw is None else (muon, adamw)
        self.defaults = (adamw or muon).defaults

    @property
    def param_groups(self) -> list[dict]:
        return [g for part in self.parts for g in part.param_groups]

    @property
    def state(self) -> dict:
        return {p: s for part in self.parts for p, s in part.state.items()}

    def _counts(self) -> list[int]:
        return [sum(len(g["params"]) for g in part.param_groups) for part in self.parts]

    def __repr__(self) -> str:
        counts = self._counts() + [0]
        return f"MuonAdamW({counts[0]} matrices with Muon, {counts[1]} parameters with AdamW)"

    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for part in self.parts:
            part.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for part in self.parts:
            part.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        state, groups, offset = {}, [], 0
        for part, count in zip(self.parts, self._counts()):
            sd = part.state_dict()
            state |= {index + offset: s for index, s in sd["state"].items()}
            groups += [{**g, "params": [i + offset for i in g["params"]]} for g in sd["param_groups"]]
            offset += count
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        offset, first_group = 0, 0
        for part, count in zip(self.parts, self._counts()):
            n_groups = len(part.param_groups)
            groups = state_dict["param_groups"][first_group : first_group + n_groups]
            part.load_state_dict(
                {
                    "state": {i - offset: s for i, s in state_dict["state"].items() if offset <= i < offset + count},
                    "param_groups": [{**g, "params": [i - offset for i in g["params"]]} for g in groups],
                }
            )
            offset, first_group = offset + count, first_group + n_groups
