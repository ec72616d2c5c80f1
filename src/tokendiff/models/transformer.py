"""A small transformer over tokens: RoPE, RMSNorm, SwiGLU, PyTorch scaled_dot_product_attention.

Bidirectional by default (the masked-diffusion denoiser); ``causal=True`` gives the autoregressive
baseline of exactly the same size and code path.

Shapes: ``B`` batch, ``L`` sequence length, ``D = n_embd``, ``H = n_head``, ``hd = D / H``,
``V`` real vocabulary. Input ids range over ``V + 1`` values (the last one is the mask token);
the output logits cover the ``V`` real tokens only, so the mask can never be predicted.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from tokendiff.errors import TokenDiffError

__all__ = ["Transformer"]


def rope_tables(seq_len: int, head_dim: int, base: float = 10000.0):
    """cos and sin tables of rotary embeddings, each (L, hd/2)."""
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)  # (hd/2,)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)  # (L, hd/2)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (first half, second half) of the head dimension. x: (B, H, L, hd)."""
    x1, x2 = x.chunk(2, dim=-1)  # (B, H, L, hd/2) each
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)  # (L, hd/2)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)  # (B, H, L, hd)


class Attention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float, causal: bool):
        super().__init__()
        self.n_head = n_head
        self.causal = causal
        self.dropout = dropout
        self.qkv = nn.Linear(n_embd, 3 * n_embd, bias=False)
        self.proj = nn.Linear(n_embd, n_embd, bias=False)

    def forward(self, x, cos, sin):
        B, L, D = x.shape
        q, k, v = self.qkv(x).split(D, dim=2)  # (B, L, D) each
        q = q.view(B, L, self.n_head, D // self.n_head).transpose(1, 2)  # (B, H, L, hd)
        k = k.view(B, L, self.n_head, D // self.n_head).transpose(1, 2)  # (B, H, L, hd)
        v = v.view(B, L, self.n_head, D // self.n_head).transpose(1, 2)  # (B, H, L, hd)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)  # (B, H, L, hd)
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=self.causal, dropout_p=self.dropout if self.training else 0.0
        )  # (B, H, L, hd)
        y = y.transpose(1, 2).reshape(B, L, D)  # (B, L, D)
        return self.proj(y)  # (B, L, D)


class SwiGLU(nn.Module):
    def __init__(self, n_embd: int):
        super().__init__()
        hidden = 64 * math.ceil(8 * n_embd / 3 / 64)  # ~(8/3) D keeps the 4D-MLP parameter count
        self.gate_up = nn.Linear(n_embd, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, n_embd, bias=False)

    def forward(self, x):
        gate, up = self.gate_up(x).chunk(2, dim=-1)  # (B, L, hidden) each
        return self.down(F.silu(gate) * up)  # (B, L, D)


class Block(nn.Module):
    def __init__(self, n_embd, n_head, dropout, causal):
        super().__init__()
        self.norm1 = nn.RMSNorm(n_embd)
        self.attn = Attention(n_embd, n_head, dropout, causal)
        self.norm2 = nn.RMSNorm(n_embd)
        self.mlp = SwiGLU(n_embd)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, cos, sin):
        x = x + self.drop(self.attn(self.norm1(x), cos, sin))  # (B, L, D)
        return x + self.drop(self.mlp(self.norm2(x)))  # (B, L, D)


class TimeEmbedding(nn.Module):
    """Sinusoidal features of t in [0, 1] and an MLP, added to every position (optional)."""

    def __init__(self, n_embd: int, n_freq: int = 64):
        super().__init__()
        self.register_buffer("freqs", torch.exp(-math.log(10000.0) * torch.arange(n_freq) / n_freq))
        self.mlp = nn.Sequential(nn.Linear(2 * n_freq, n_embd), nn.SiLU(), nn.Linear(n_embd, n_embd))

    def forward(self, t):
        angles = 1000.0 * t.float()[:, None] * self.freqs[None]  # (B, F)
        return self.mlp(torch.cat([angles.cos(), angles.sin()], dim=-1))  # (B, D)


class Transformer(nn.Module):
    """``forward(x, t=None) -> logits`` with ``x``: (B, L) ids in [0, V]; logits: (B, L, V).

    Example::

        >>> m = Transformer(vocab_size=65, n_layer=2, n_head=2, n_embd=32, block_size=16)
        >>> m(torch.zeros(3, 16, dtype=torch.long)).shape
        torch.Size([3, 16, 65])
    """

    def __init__(
        self,
        vocab_size: int,
        n_layer: int = 4,
        n_head: int = 4,
        n_embd: int = 256,
        block_size: int = 256,
        dropout: float = 0.0,
        causal: bool = False,
        time_conditioning: bool = False,
    ):
        super().__init__()
        if n_embd % n_head or (n_embd // n_head) % 2:
            raise TokenDiffError(
                f"model.n_embd={n_embd} must be a multiple of 2*model.n_head={2 * n_head} "
                "(even head size for RoPE); e.g. model.n_embd=256 model.n_head=4"
            )
        self.vocab_size = vocab_size
        self.block_size = block_size
        self.causal = causal
        self.time_conditioning = time_conditioning
        self.embed = nn.Embedding(vocab_size + 1, n_embd)  # +1: the mask token (id V)
        self.time_embed = TimeEmbedding(n_embd) if time_conditioning else None
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(n_embd, n_head, dropout, causal) for _ in range(n_layer))
        self.norm = nn.RMSNorm(n_embd)
        self.head = nn.Linear(n_embd, vocab_size, bias=False)
        cos, sin = rope_tables(block_size, n_embd // n_head)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2 scaled init of residual projections
            if name.endswith(("proj.weight", "down.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        B, L = x.shape
        if L > self.block_size:
            raise TokenDiffError(
                f"sequence length {L} exceeds model.block_size={self.block_size}; "
                "shorten the input or train with a larger block_size"
            )
        h = self.embed(x)  # (B, L, D)
        if self.time_embed is not None:
            if t is None:
                raise TokenDiffError("this model is time-conditioned: pass t to the forward call")
            h = h + self.time_embed(t)[:, None, :]  # (B, L, D)
        h = self.drop(h)
        cos, sin = self.rope_cos[:L], self.rope_sin[:L]  # (L, hd/2)
        for block in self.blocks:
            h = block(h, cos, sin)  # (B, L, D)
        return self.head(self.norm(h))  # (B, L, V)
