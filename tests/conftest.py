"""Shared fixtures. The data directory defaults to ../shared/data beside the checkout (as in CI)."""

import itertools
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("TOKENDIFF_DATA", str(REPO.parent / "shared" / "data"))
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


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


class ExactConditionals(torch.nn.Module):
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
