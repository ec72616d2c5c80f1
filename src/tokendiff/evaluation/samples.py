"""Sample quality of generated text without downloading a model (``tokendiff score``).

- **generative perplexity**: ``exp`` of the mean negative log-likelihood per token of the samples under
  an autoregressive tokendiff checkpoint (the reference), each sample tokenized with the reference's
  tokenizer; the first token of each sample has no context and is not scored, and a sample longer than
  the reference's context is scored in windows of ``block_size + 1`` tokens whose first token is context;
- **unigram entropy** (bits per token) of all samples' tokens together: low when samples repeat a few
  tokens (the failure mode that a low generative perplexity can hide);
- **distinct-n** (n = 2, 3): distinct n-grams over all n-grams, over all samples;
- **repetition**: the share of 4-grams of a sample that already occurred earlier in the same sample,
  averaged over samples.

The same numbers for real text (windows of the reference corpus's validation split) are the yardstick.
"""

from __future__ import annotations

import math
from collections import Counter

import torch
import torch.nn.functional as F

from tokendiff.errors import TokenDiffError
from tokendiff.models.base import Backbone

__all__ = ["text_statistics", "generative_perplexity", "text_quality", "real_text_windows"]


def text_statistics(samples: list[list[int]]) -> dict:
    """Unigram entropy, distinct-2/3 and 4-gram repetition of token sequences (see the module docstring)."""
    counts = Counter(t for s in samples for t in s)
    total = sum(counts.values())
    entropy = -sum(c / total * math.log2(c / total) for c in counts.values()) if total else 0.0
    stats = {"unigram_entropy_bits": entropy, "tokens": total}
    for n in (2, 3):
        grams = [tuple(s[i : i + n]) for s in samples for i in range(len(s) - n + 1)]
        stats[f"distinct_{n}"] = len(set(grams)) / len(grams) if grams else 0.0
    repeats = []
    for s in samples:
        grams = [tuple(s[i : i + 4]) for i in range(len(s) - 3)]
        if grams:
            seen, again = set(), 0
            for g in grams:
                again += g in seen
                seen.add(g)
            repeats.append(again / len(grams))
    stats["repetition_4"] = sum(repeats) / len(repeats) if repeats else 0.0
    return stats


@torch.no_grad()
def generative_perplexity(model, samples: list[list[int]], device="cpu", batch_size: int = 16) -> dict:
    """Perplexity of ``samples`` (token ids of the reference's tokenizer) under an autoregressive ``model``."""
    if not (isinstance(model, Backbone) and model.causal):  # a capability every backbone declares
        raise TokenDiffError("the reference must be an autoregressive checkpoint (model.causal=true)")
    block = model.block_size
    windows = []  # (context + up to block predicted tokens) pieces
    for s in samples:
        for start in range(0, max(len(s) - 1, 0), block):
            windows.append(s[start : start + block + 1])
    if not windows:
        raise TokenDiffError("the samples have fewer than 2 tokens each under the reference's tokenizer")
    nll, count = 0.0, 0
    windows.sort(key=len)  # similar lengths together: little padding
    for i in range(0, len(windows), batch_size):
        group = windows[i : i + batch_size]
        width = max(len(w) for w in group)
        x = torch.zeros(len(group), width, dtype=torch.long)
        valid = torch.zeros(len(group), width - 1, dtype=torch.bool)
        for r, w in enumerate(group):
            x[r, : len(w)] = torch.tensor(w)
            valid[r, : len(w) - 1] = True
        x = x.to(device)
        logits = model(x[:, :-1], None)  # (b, w - 1, V)
        terms = F.cross_entropy(logits.float().transpose(1, 2), x[:, 1:], reduction="none").cpu()  # (b, w - 1)
        nll += terms[valid].double().sum().item()
        count += int(valid.sum())
    return {"generative_perplexity": math.exp(nll / count), "scored_tokens": count}


def text_quality(model, samples: list[list[int]], device="cpu", batch_size: int = 16) -> dict:
    """Generative perplexity under the autoregressive ``model`` and the text statistics of ``samples``."""
    return generative_perplexity(model, samples, device, batch_size) | text_statistics(samples)


def real_text_windows(split, samples: list[list[int]]) -> list[list[int]]:
    """The yardstick for ``samples``: as many windows of real text (a split of the reference's corpus,
    :class:`~tokendiff.data.text.TokenSplit`) as there are samples, each of the samples' mean length in
    tokens (at least 2, the shortest text that has a perplexity; at most the whole split)."""
    length = max(2, round(sum(map(len, samples)) / len(samples)))
    return split.windows(min(length, len(split)), len(samples)).tolist()
