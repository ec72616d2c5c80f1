"""Text in, text out: prompts, infilling templates and batched generation for any tokendiff model.

A *prompt* is a prefix every sample starts with. A *template* fixes tokens anywhere and marks the
gaps: ``[MASK]`` is one token to fill, ``[MASK:N]`` is ``N`` tokens, e.g.
``"ROMEO:[MASK:40]\\nJULIET:[MASK:40]"``.
"""

from __future__ import annotations

import re
from typing import Callable

import torch

from tokendiff.errors import TokenDiffError
from tokendiff.samplers.autoregressive import AutoregressiveSampler
from tokendiff.samplers.diffusion import DiffusionSampler, row_generators

__all__ = ["initial_tokens", "generate"]

PLACEHOLDER = re.compile(r"\[MASK(?::(\d+))?\]")


def initial_tokens(tokenizer, length: int, mask_id: int, prompt: str | None = None, template: str | None = None):
    """The starting sequence (L,): fixed tokens where given, ``mask_id`` where the model writes."""
    if prompt and template:
        raise TokenDiffError("give either prompt=... (a prefix) or template=... (with [MASK] gaps), not both")
    if template:
        ids: list[int] = []
        pos = 0
        for match in PLACEHOLDER.finditer(template):
            ids += tokenizer.encode(template[pos : match.start()])
            ids += [mask_id] * int(match.group(1) or 1)
            pos = match.end()
        ids += tokenizer.encode(template[pos:])
        if mask_id not in ids:
            raise TokenDiffError("template has no [MASK] or [MASK:N] placeholder; add one where text should go")
        if len(ids) > length:
            raise TokenDiffError(
                f"template is {len(ids)} tokens, longer than the sequence length {length}; "
                "shorten it or raise sampling.length (at most model.block_size)"
            )
        return torch.tensor(ids, dtype=torch.long)
    ids = tokenizer.encode(prompt) if prompt else []
    if len(ids) >= length:
        raise TokenDiffError(
            f"prompt is {len(ids)} tokens, not shorter than the sequence length {length}; "
            "shorten the prompt or raise sampling.length (at most model.block_size)"
        )
    return torch.tensor(ids + [mask_id] * (length - len(ids)), dtype=torch.long)


def generate(
    model,
    kernel,
    tokenizer,
    *,
    num_samples: int,
    length: int,
    steps: int = 128,
    temperature: float = 1.0,
    strategy: str = "ancestral",
    top_p: float = 1.0,
    cache: bool = True,
    prompt: str | None = None,
    template: str | None = None,
    seed: int = 0,
    batch_size: int = 16,
    device="cpu",
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> tuple[list[str], dict]:
    """Generate ``num_samples`` texts; sample ``i`` depends only on ``(seed, i)``, not on ``batch_size``.

    ``kernel``: the model's forward kernel, or None for an autoregressive model. Returns the texts and
    stats ``{"model_calls", "tokens"}``. ``callback(step, x)`` sees each step of the first batch (for
    trajectory visuals).
    """
    block = model.block_size
    if length > block or length < 1:
        raise TokenDiffError(f"sampling.length={length} must lie in [1, model.block_size={block}]")
    causal = kernel is None
    if causal and template:
        raise TokenDiffError("templates with [MASK] gaps need a diffusion model; this one is autoregressive")
    mask_id = model.vocab_size if causal else kernel.mask_token_id
    x0 = initial_tokens(tokenizer, length, mask_id, prompt, template)  # (L,)
    if causal:
        sampler = AutoregressiveSampler(model, temperature, top_p)
        prefix = x0[x0 != mask_id]  # (P,) the prompt; the model writes the rest left to right
    else:
        sampler = DiffusionSampler(model, kernel, steps, temperature, strategy, top_p, cache)
    texts = []
    for start in range(0, num_samples, batch_size):
        n = min(batch_size, num_samples - start)
        gens = row_generators(seed, n, start)
        cb = callback if start == 0 else None
        if not causal:
            out = sampler.sample(x0.unsqueeze(0).repeat(n, 1).to(device), gens, cb)  # (n, L)
        else:
            if len(prefix):
                first = prefix.unsqueeze(0).repeat(n, 1)  # (n, P)
            else:  # no prompt: a first token drawn uniformly, from each row's own generator
                first = torch.stack([torch.randint(0, model.vocab_size, (1,), generator=g) for g in gens])
            out = sampler.sample(first.to(device), length, gens, cb)  # (n, L)
        texts += [tokenizer.decode(row.tolist()) for row in out.cpu()]
    return texts, {"model_calls": sampler.model_calls, "tokens": num_samples * length}
