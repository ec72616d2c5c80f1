"""A patch transformer over binary images: 784 pixel tokens in, a Bernoulli per pixel out.

Each pixel is a token with three input states (0, 1 and the mask, id 2). Pixels are grouped into
``patch x patch`` squares; a patch's one-hot states are embedded by one linear layer, the ``(H/p)(W/p)``
patch embeddings (plus learned 2-D positions) go through the same transformer blocks as the text model
(RoPE, RMSNorm, SwiGLU, SDPA), and a linear head gives two logits for every pixel of its patch.

Why patches (measured in ``bench/mnist_backbones.py``): with 4x4 patches the transformer sees 49
tokens instead of 784, so attention is cheap and the work is a few large matrix products, which is
what a 2-core CPU does best.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from tokendiff.errors import TokenDiffError
from tokendiff.models.transformer import Block, rope_tables

__all__ = ["ImagePatchTransformer"]


class ImagePatchTransformer(nn.Module):
    """``forward(x, t=None) -> logits`` with ``x``: (B, H*W) ids in {0, 1, 2}; logits: (B, H*W, 2).

    >>> m = ImagePatchTransformer(n_layer=1, n_head=2, n_embd=32)
    >>> m(torch.full((3, 784), 2)).shape
    torch.Size([3, 784, 2])
    """

    def __init__(
        self,
        vocab_size: int = 2,
        image_size: int = 28,
        patch: int = 4,
        n_layer: int = 6,
        n_head: int = 4,
        n_embd: int = 256,
        dropout: float = 0.0,
        time_conditioning: bool = False,
    ):
        super().__init__()
        if image_size % patch:
            raise TokenDiffError(f"model.patch={patch} must divide the image size {image_size}; e.g. 4 or 7")
        if time_conditioning:
            raise TokenDiffError("the image model is time-agnostic; set model.time_conditioning=false")
        self.vocab_size = vocab_size
        self.image_size = image_size
        self.patch = patch
        self.grid = image_size // patch
        self.block_size = image_size * image_size
        self.time_conditioning = False
        n_states = vocab_size + 1  # pixel values and the mask
        self.embed = nn.Linear(patch * patch * n_states, n_embd)
        self.pos = nn.Parameter(torch.zeros(self.grid * self.grid, n_embd))
        self.blocks = nn.ModuleList(Block(n_embd, n_head, dropout, causal=False) for _ in range(n_layer))
        self.norm = nn.RMSNorm(n_embd)
        self.head = nn.Linear(n_embd, patch * patch * vocab_size)
        cos, sin = rope_tables(self.grid * self.grid, n_embd // n_head)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        nn.init.normal_(self.pos, std=0.02)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H*W) -> (B, N, p*p) with N = (H/p)(W/p), patches in raster order."""
        B, g, p = x.shape[0], self.grid, self.patch
        x = x.view(B, g, p, g, p).permute(0, 1, 3, 2, 4)  # (B, g, g, p, p)
        return x.reshape(B, g * g, p * p)

    def _unpatchify(self, y: torch.Tensor) -> torch.Tensor:
        """(B, N, p*p, V) -> (B, H*W, V)."""
        B, g, p, V = y.shape[0], self.grid, self.patch, y.shape[-1]
        y = y.view(B, g, g, p, p, V).permute(0, 1, 3, 2, 4, 5)  # (B, g, p, g, p, V)
        return y.reshape(B, g * p * g * p, V)

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        B, L = x.shape
        if L != self.block_size:
            raise TokenDiffError(f"the image model takes {self.block_size} pixels per image, got {L}")
        states = F.one_hot(self._patchify(x), self.vocab_size + 1)  # (B, N, p*p, 3)
        h = self.embed(states.flatten(2).to(self.embed.weight.dtype)) + self.pos  # (B, N, D)
        for block in self.blocks:
            h = block(h, self.rope_cos, self.rope_sin)  # (B, N, D)
        logits = self.head(self.norm(h))  # (B, N, p*p*V)
        return self._unpatchify(logits.view(B, self.grid * self.grid, self.patch**2, self.vocab_size))  # (B, 784, V)
