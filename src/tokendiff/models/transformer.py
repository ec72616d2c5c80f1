"""A small transformer over tokens: RoPE, RMSNorm, SwiGLU, PyTorch scaled_dot_product_attention.

Bidirectional by default (the masked-diffusion denoiser); ``causal=True`` gives the autoregressive
baseline of exactly the same size and code path.

Shapes: ``B`` batch, ``L`` sequence length, ``D = n_embd``, ``H = n_head``, ``hd = D / H``,
``V`` real vocabulary. Input ids range over ``V + 1`` values (the last one is the mask token);
the output logits cover the ``V`` real tokens only, so the mask can never be predicted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from tokendiff.errors import TokenDiffError
from tokendiff.models.base import Backbone

__all__ = ["Transformer", "KVCache", "check_heads", "check_block_diffusion"]


@dataclass
class KVCache:
    """Keys (after RoPE) and values of a window of positions, per layer, in buffers of the model's context
    ``(B, H, block_size, hd)``; positions ``0 .. length - 1`` are filled. A call of
    :meth:`Transformer.forward_cached` with a cache writes its own keys and values into it in place (at its
    positions), so a finished block extends the cache without copying what is already there."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    length: int


def check_heads(n_embd: int, n_head: int) -> None:
    """RoPE rotates pairs of each head's dimensions: the head size ``n_embd / n_head`` must be a whole even
    number (the one home of this rule; the config calls it)."""
    if n_head < 1 or n_embd % n_head or (n_embd // n_head) % 2:
        raise TokenDiffError(
            f"model.n_embd={n_embd} must be a multiple of 2*model.n_head={2 * n_head} "
            "(RoPE needs an even head size); e.g. model.n_embd=384 model.n_head=6"
        )


def check_block_diffusion(block: int | None, block_size: int) -> None:
    """Block diffusion's blocks tile the context: ``block`` tokens per block must divide ``block_size``."""
    if block is None or block < 1 or block_size % block:
        raise TokenDiffError(
            f"model.block_diffusion=true needs diffusion.block_size dividing model.block_size={block_size} "
            f"(got {block}), e.g. diffusion.block_size=16"
        )


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

    def forward(self, x, cos, sin, mask=None, cache=None, start: int = 0, length: int = 0):
        """``x`` (B, n, D) at positions ``start .. start + n`` (``cos``/``sin`` of those positions).

        ``mask``: (n, n_keys) bool, True = attend (None: ``causal`` decides). ``cache``: this layer's key and value
        buffers (B, H, capacity, hd) of a :class:`KVCache`; this call writes its own keys and values at positions
        ``start .. start + n`` and attends to positions ``0 .. length - 1``. Returns the output and this call's
        keys and values (after RoPE)."""
        B, L, D = x.shape
        q, k, v = self.qkv(x).split(D, dim=2)  # (B, n, D) each
        q = q.view(B, L, self.n_head, D // self.n_head).transpose(1, 2)  # (B, H, n, hd)
        k = k.view(B, L, self.n_head, D // self.n_head).transpose(1, 2)  # (B, H, n, hd)
        v = v.view(B, L, self.n_head, D // self.n_head).transpose(1, 2)  # (B, H, n, hd)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)  # (B, H, n, hd)
        own = (k, v)
        if cache is not None:  # the window's keys and values, this call's written in place
            key_buffer, value_buffer = cache
            key_buffer[:, :, start : start + L] = k
            value_buffer[:, :, start : start + L] = v
            k, v = key_buffer[:, :, :length], value_buffer[:, :, :length]  # (B, H, n_keys, hd)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            is_causal=self.causal and mask is None and cache is None,
            dropout_p=self.dropout if self.training else 0.0,
        )  # (B, H, n, hd)
        y = y.transpose(1, 2).reshape(B, L, D)  # (B, n, D)
        return self.proj(y), own


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

    def forward(self, x, cos, sin, mask=None, cache=None, start: int = 0, length: int = 0):
        h, own = self.attn(self.norm1(x), cos, sin, mask, cache, start, length)
        x = x + self.drop(h)  # (B, L, D)
        return x + self.drop(self.mlp(self.norm2(x))), own  # (B, L, D)


class TimeEmbedding(nn.Module):
    """Sinusoidal features of t in [0, 1] and an MLP, added to every position (optional): ``t`` (B,) gives (B, D),
    one time per sequence; ``t`` (B, L) gives (B, L, D), one time per position (block diffusion's blocks)."""

    def __init__(self, n_embd: int, n_freq: int = 64):
        super().__init__()
        self.register_buffer("freqs", torch.exp(-math.log(10000.0) * torch.arange(n_freq) / n_freq))
        self.mlp = nn.Sequential(nn.Linear(2 * n_freq, n_embd), nn.SiLU(), nn.Linear(n_embd, n_embd))

    def forward(self, t):
        angles = 1000.0 * t.float()[..., None] * self.freqs  # (B, F) or (B, L, F)
        return self.mlp(torch.cat([angles.cos(), angles.sin()], dim=-1))  # (B, D) or (B, L, D)


class Transformer(Backbone):
    """``forward(x, t=None) -> logits`` with ``x``: (B, L) ids in [0, V]; logits: (B, L, V).

    ``block_diffusion=B`` makes it a block diffusion model (BD3-LM, Arriola et al. 2025): attention is
    block-causal over blocks of ``B`` positions (a position sees its own block and the earlier ones), so
    that blocks are generated left to right with the keys and values of finished blocks cached exactly;
    training scores noisy blocks against clean earlier blocks in one call (:meth:`forward_block_diffusion`).

    Example::

        >>> m = Transformer(vocab_size=65, n_layer=2, n_head=2, n_embd=32, block_size=16)
        >>> m(torch.zeros(3, 16, dtype=torch.long)).shape
        torch.Size([3, 16, 65])
    """

    supports_kv_cache = True  # forward_cached(): keys and values of other positions from a cache
    lora_targets = ("qkv", "proj", "gate_up", "down")  # LoRA's default layers: every attention and MLP linear

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
        block_diffusion: int | None = None,
        logit_shift: bool = False,
        self_conditioning: bool = False,
    ):
        super().__init__()
        check_heads(n_embd, n_head)
        if self_conditioning and (causal or block_diffusion):
            raise TokenDiffError(
                "self_conditioning=True is for a bidirectional denoiser: drop causal or block_diffusion"
            )
        if block_diffusion is not None:
            check_block_diffusion(block_diffusion, block_size)
            if causal:
                raise TokenDiffError("a block diffusion model attends bidirectionally within blocks: drop causal=True")
        self.vocab_size = vocab_size
        self.block_size = block_size
        self.causal = causal
        self.time_conditioning = time_conditioning
        self.block_diffusion = block_diffusion
        if logit_shift and (causal or block_diffusion):
            raise TokenDiffError("logit_shift=True is for a bidirectional denoiser: drop causal or block_diffusion")
        self.logit_shift = logit_shift
        # Dream's shift reads position i's token from position i - 1's output, which a call on a window's tail
        # (forward_cached, start > 0) does not compute: such a model samples without a KV cache
        # self-conditioning: every position's input changes with the previous estimate at every step, so no keys
        # and values can be kept across steps either
        self.supports_kv_cache = not logit_shift and not self_conditioning
        self.self_conditioning = self_conditioning
        self.attention_reach = None  # None: every key; k: keys up to k positions ahead (training.adapt_anneal_iters)
        self.embed = nn.Embedding(vocab_size + 1, n_embd)  # +1: the mask token (id V)
        self.time_embed = TimeEmbedding(n_embd) if time_conditioning else None
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(n_embd, n_head, dropout, causal) for _ in range(n_layer))
        self.norm = nn.RMSNorm(n_embd)
        self.head = nn.Linear(n_embd, vocab_size, bias=False)
        # the previous estimate of x0, (B, L, V) probabilities, embedded and added to the tokens' embeddings
        self.previous_embed = nn.Linear(vocab_size, n_embd, bias=False) if self_conditioning else None
        cos, sin = rope_tables(block_size, n_embd // n_head)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2 scaled init of residual projections
            if name.endswith(("proj.weight", "down.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * n_layer))
        if self.previous_embed is not None:  # zero: the untrained model ignores the estimate, as without it
            nn.init.zeros_(self.previous_embed.weight)

    @classmethod
    def from_config(cls, m, vocab_size: int, *, tokenizer=None, saved=None, block_diffusion: int | None = None):
        """The transformer that the ``model`` section ``m`` describes (``block_diffusion``: BD3-LM's block)."""
        return cls(
            vocab_size=vocab_size,
            n_layer=m.n_layer,
            n_head=m.n_head,
            n_embd=m.n_embd,
            block_size=m.block_size,
            dropout=m.dropout,
            causal=m.causal,
            time_conditioning=m.time_conditioning,
            block_diffusion=block_diffusion,
            logit_shift=m.logit_shift,
            self_conditioning=m.self_conditioning,
        )

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _check_length(self, end: int):
        if end > self.block_size:
            raise TokenDiffError(
                f"sequence length {end} exceeds model.block_size={self.block_size}; "
                "shorten the input or train with a larger block_size"
            )

    def _embed(self, x: torch.Tensor, t: torch.Tensor | None, previous: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings of ``x`` (B, L), plus the time's: ``t`` (B,) one time per sequence, or (B, L) one per
        position (a block diffusion model's blocks at their own times); a time-agnostic model ignores ``t``."""
        h = self.embed(x)  # (B, L, D)
        if previous is not None:
            h = h + self.previous_embed(previous.to(self.previous_embed.weight.dtype))  # (B, L, D)
        if self.time_embed is not None:
            if t is None:
                raise TokenDiffError("this model is time-conditioned: pass t to the forward call")
            if t.dim() == 1:
                h = h + self.time_embed(t)[:, None, :]  # (B, L, D) the same time at every position
            else:
                assert t.shape == x.shape, (t.shape, x.shape)  # one time per position
                h = h + self.time_embed(t)  # (B, L, D)
        return self.drop(h)

    def _mask(self, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor | None:
        """Who attends to whom, (n_q, n_k) bool from query and key positions; None = everyone (bidirectional)."""
        if self.causal:
            return keys[None, :] <= queries[:, None]
        if self.block_diffusion:
            return keys[None, :] // self.block_diffusion <= queries[:, None] // self.block_diffusion
        if self.attention_reach is not None:  # causal attention being opened up (A2D's annealing)
            return keys[None, :] <= queries[:, None] + self.attention_reach
        return None

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None, previous: torch.Tensor | None = None):
        """Logits (B, L, V) of ``x`` (B, L). ``previous`` (B, L, V): a self-conditioned model's previous estimate of
        the clean tokens (probabilities; a sampler passes its last step's); None: :meth:`first_estimate`."""
        if not self.self_conditioning:
            if previous is not None:
                raise TokenDiffError("this model takes no previous estimate (it was built without self_conditioning)")
            return self._run(x, t, 0, None, keep=False)[0]
        if previous is None:
            previous = self.first_estimate(x, t)
        return self._run(x, t, 0, None, keep=False, previous=previous)[0]

    def first_estimate(self, x: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
        """The estimate a self-conditioned call starts from, (B, L, V), as CDCD and DiffusionGemma train: in
        training, zeros on half the calls (a coin from torch's generator, which checkpoints keep) and on the
        other half the model's own first pass on zeros, without gradient; in evaluation always that first pass,
        so the bound and the scores are those of a fixed two-pass denoiser."""
        zeros = torch.zeros(*x.shape, self.vocab_size, device=x.device)
        if self.training and bool(torch.rand(()) < 0.5):
            return zeros
        with torch.no_grad():
            return torch.softmax(self._run(x, t, 0, None, keep=False, previous=zeros)[0].float(), dim=-1)

    def forward_cached(self, x: torch.Tensor, t: torch.Tensor | None = None, start: int = 0, cache=None):
        """Logits of ``x`` (B, n) at positions ``start .. start + n`` of a window, and the window's KV cache.

        ``cache``: a :class:`KVCache` of the window (what an earlier call returned); the tokens of ``x`` write
        their keys and values at their positions in it (in place) and attend to every filled position (as
        the model's mask allows). None: ``x`` is the whole window (``start`` must be 0) and a new cache of it
        is returned. Returns ``(logits (B, n, V), cache)``.

        Exact for a block diffusion model whose cache holds the finished blocks before ``start`` (their keys do
        not depend on later blocks); for a bidirectional model a cache is an approximation (Fast-dLLM):
        the cached keys were computed when other positions held other tokens. ``t``: None, (B,) or (B, n) per
        position; a time-conditioned block model's finished blocks are cached at ``t = 0``, the time of the clean
        half in training (:meth:`forward_block_diffusion`).
        """
        return self._run(x, t, start, cache, keep=True)

    def _run(self, x, t, start: int, cache: KVCache | None, keep: bool, previous: torch.Tensor | None = None):
        B, n = x.shape
        if cache is None and start:
            raise TokenDiffError("forward_cached: start > 0 needs a cache of the positions before it")
        length = n if cache is None else max(cache.length, start + n)
        self._check_length(length)
        h = self._embed(x, t, previous)
        cos, sin = self.rope_cos[start : start + n], self.rope_sin[start : start + n]  # (n, hd/2)
        mask = None
        if cache is not None or not self.causal or self.attention_reach is not None:
            queries, keys = torch.arange(start, start + n, device=x.device), torch.arange(length, device=x.device)
            mask = self._mask(queries, keys)
        own = []
        for i, block in enumerate(self.blocks):
            layer_cache = None if cache is None else (cache.keys[i], cache.values[i])
            h, kv = block(h, cos, sin, mask, layer_cache, start, length)  # (B, n, D)
            if keep and cache is None:
                own.append(kv)
        logits = self.head(self.norm(h))  # (B, n, V)
        if self.logit_shift:  # position i's token read from position i - 1 (Dream); position 0 from itself
            logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)  # (B, n, V)
        if not keep:
            return logits, None
        if cache is None:  # a new cache of this window, with room for the rest of the context
            keys, values = [], []
            for k, v in own:
                key_buffer = k.new_empty(*k.shape[:2], self.block_size, k.shape[-1])  # (B, H, context, hd)
                value_buffer = v.new_empty(*v.shape[:2], self.block_size, v.shape[-1])
                key_buffer[:, :, :n], value_buffer[:, :, :n] = k, v
                keys.append(key_buffer)
                values.append(value_buffer)
            return logits, KVCache(keys, values, n)
        cache.length = length
        return logits, cache

    def forward_block_diffusion(self, xt: torch.Tensor, x0: torch.Tensor, t: torch.Tensor | None = None):
        """BD3-LM's training call: logits (B, L, V) of the noisy ``xt`` (B, L), each block of it seeing itself and
        the clean earlier blocks of ``x0`` (B, L); ``x0`` sees itself block-causally. One call over 2L tokens
        (both halves at positions 0 .. L-1) gives every block's conditional at once.

        ``t``: the times of ``xt``, (B,) or (B, L) one per position (each block's own time, repeated over its
        positions); a time-agnostic model (masks) ignores it. The clean half ``x0`` is at ``t = 0``: a clean
        block *is* the diffusion state at time 0, so a sampler caches its finished blocks with the same call at
        ``t = 0`` (:meth:`forward_cached`) and their keys and values are those seen in training."""
        if not self.block_diffusion:
            raise TokenDiffError("forward_block_diffusion needs a block diffusion model (model.block_diffusion=true)")
        B, L = xt.shape
        self._check_length(L)
        if self.time_embed is not None and t is not None:  # (B, 2L): xt's times, then 0 for the clean half
            t = t[:, None].expand(B, L) if t.dim() == 1 else t  # (B, L)
            t = torch.cat([t, torch.zeros_like(t)], dim=1)  # (B, 2L)
        h = self._embed(torch.cat([xt, x0], dim=1), t)  # (B, 2L, D)
        cos = torch.cat([self.rope_cos[:L], self.rope_cos[:L]])  # (2L, hd/2)
        sin = torch.cat([self.rope_sin[:L], self.rope_sin[:L]])
        block = torch.arange(L, device=xt.device) // self.block_diffusion  # (L,)
        noisy_sees = torch.cat([block[:, None] == block[None, :], block[None, :] < block[:, None]], dim=1)  # (L, 2L)
        never = torch.zeros(L, L, dtype=torch.bool, device=xt.device)
        clean_sees = torch.cat([never, block[None, :] <= block[:, None]], dim=1)  # (L, 2L)
        mask = torch.cat([noisy_sees, clean_sees], dim=0)  # (2L, 2L)
        for layer in self.blocks:
            h, _ = layer(h, cos, sin, mask)
        return self.head(self.norm(h[:, :L]))  # (B, L, V)
