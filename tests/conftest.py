"""Shared fixtures. The data directory defaults to ../shared/data beside the checkout (as in CI)."""

import itertools
import os
from pathlib import Path

import pytest
import torch

from tokendiff.models.base import Backbone

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("TOKENDIFF_DATA", str(REPO.parent / "shared" / "data"))
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(autouse=True)
def _torch_threads():
    """Every test starts with the process's thread count: a run started in-process (``main(["train", ...])``) sets
    ``torch.set_num_threads`` for the whole process (``system.threads``, or accelerate on several CPU processes),
    and a float32 training's trajectory depends on the count (the reductions' order)."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Prepared corpora go to one temporary cache per test session, never the user's."""
    monkeypatch.setenv("TOKENDIFF_CACHE", str(tmp_path_factory.getbasetemp() / "prepared"))


def random_joint(V: int, L: int, seed: int = 0) -> dict:
    """A random distribution over all V**L sequences, as {sequence tuple: probability}."""
    g = torch.Generator().manual_seed(seed)
    seqs = list(itertools.product(range(V), repeat=L))
    probs = torch.rand(len(seqs), generator=g, dtype=torch.float64) + 0.05
    probs = probs / probs.sum()
    return dict(zip(seqs, probs.tolist()))


class ExactConditionals(Backbone):
    """A "model" whose logits are the true log p(x_i | visible tokens) of a known joint distribution."""

    time_conditioning = False

    def __init__(self, joint: dict, V: int, L: int):
        super().__init__()
        self.joint, self.V, self.L = joint, V, L
        self.block_size = L
        self.calls = 0

    def forward(self, xt, t=None):
        self.calls += 1
        B, L = xt.shape
        out = torch.zeros(B, L, self.V, dtype=torch.float64)
        for b in range(B):
            row = xt[b].tolist()
            consistent = {s: p for s, p in self.joint.items() if all(r == self.V or r == v for r, v in zip(row, s))}
            for i in range(L):
                for v in range(self.V):
                    out[b, i, v] = sum(p for s, p in consistent.items() if s[i] == v)
        return torch.log(out.clamp_min(1e-300))


def fit(model, objective, data, steps: int, lr: float = 3e-3, seed: int = 0) -> float:
    """Train ``model`` on copies of the rows of ``data`` for ``steps`` AdamW steps; return its NELBO per
    token afterwards (mean over 10 batches of 64 copies, eval mode)."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        loss = objective.loss_terms(model, data.repeat(16, 1), g).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        return torch.stack([objective.loss_terms(model, data.repeat(64, 1), g).mean() for _ in range(10)]).mean().item()
