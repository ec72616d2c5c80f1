"""Text in, text out: prompts, infilling templates and batched generation for any tokendiff model.

A *prompt* is a prefix every sample starts with. A *template* fixes tokens anywhere and marks the
gaps: ``[MASK]`` is one token to fill, ``[MASK:N]`` is ``N`` tokens, e.g.
``"ROMEO:[MASK:40]\\nJULIET:[MASK:40]"``.
"""

from __future__ import annotations

import re
import sys
from typing import Callable

import torch
from tqdm import tqdm

from tokendiff.errors import TokenDiffError
from tokendiff.models.diffusion_gemma import DiffusionGemmaLM
from tokendiff.samplers.autoregressive import AutoregressiveSampler
from tokendiff.samplers.canvas import generate_canvas_text
from tokendiff.samplers.diffusion import DiffusionSampler
from tokendiff.samplers.noise import row_generators
from tokendiff.samplers.settings import SamplingSettings

__all__ = ["initial_tokens", "generate", "parse_template", "unescape", "sampling_options"]

# the keywords of generate() that the config's sampling.* keys set, one to one
SAMPLING_KEYS = (
    "steps", "temperature", "strategy", "top_p", "top_k", "cache", "threshold", "confidence", "block_size",
    "remask", "remask_eta", "kv_cache", "time_grid", "batch_size", "editing_threshold", "minimal_topk",
    "entropy_bound", "temperature_start", "temperature_end", "corrector_steps", "corrector_k", "corrector_selection",
    "corrector_tau",
)  # fmt: skip


def sampling_options(sampling) -> dict:
    """``generate`` keywords from a config's ``sampling`` section, so that every caller (``tokendiff sample``,
    the trainer's logged samples) passes the same options and a new one is threaded through once."""
    return {key: getattr(sampling, key) for key in SAMPLING_KEYS}


PLACEHOLDER = re.compile(r"\[MASK(?::(\d+))?\]")
MASK_OPEN = "[MASK"


def unescape(text: str) -> str:
    """``\\n`` (backslash, n) as typed in a shell becomes a newline, ``\\\\`` a backslash: prompts and
    templates may then span lines on any shell (``template="ROMEO:[MASK:60]\\nJULIET:[MASK:60]"``)."""
    return re.sub(r"\\(\\|n)", lambda m: "\n" if m.group(1) == "n" else "\\", text)


def parse_template(template: str, max_tokens: int) -> list[str | int]:
    """Split a template into text pieces and gap sizes; a malformed ``[MASK...`` is a syntax error.

    ``max_tokens`` bounds each gap before anything is allocated (a gap longer than the sequence cannot fit).
    """
    pieces: list[str | int] = []
    pos = 0
    while True:
        start = template.find(MASK_OPEN, pos)
        if start < 0:
            pieces.append(template[pos:])
            return pieces
        match = PLACEHOLDER.match(template, start)
        if match is None or (match.group(1) is not None and int(match.group(1)) < 1):
            near = template[start : start + 12]
            raise TokenDiffError(
                f"template: malformed placeholder {near!r} at character {start}; write [MASK] for one token or "
                "[MASK:N] with N >= 1"
            )
        n = int(match.group(1) or 1)
        if n > max_tokens:
            raise TokenDiffError(
                f"template: [MASK:{n}] is longer than the sequence length {max_tokens}; use a smaller N"
            )
        pieces += [template[pos:start], n]
        pos = match.end()


def initial_tokens(tokenizer, length: int, mask_id: int, prompt=None, template: str | None = None):
    """The starting sequence (L,): fixed tokens where given, ``mask_id`` where the model writes. ``prompt``: text,
    or a list of token ids."""
    if prompt and template:
        raise TokenDiffError("give either prompt=... (a prefix) or template=... (with [MASK] gaps), not both")
    if template:
        ids: list[int] = []
        for piece in parse_template(unescape(template), length):
            ids += [mask_id] * piece if isinstance(piece, int) else tokenizer.encode(piece)
        if mask_id not in ids:
            raise TokenDiffError("template has no [MASK] or [MASK:N] placeholder; add one where text should go")
        if len(ids) > length:
            raise TokenDiffError(
                f"template is {len(ids)} tokens, longer than the sequence length {length}; "
                "shorten it or raise sampling.length (past model.block_size with sampling.block_size)"
            )
        return torch.tensor(ids, dtype=torch.long)
    if isinstance(prompt, list):  # token ids already (a chat template's, special tokens included)
        ids = [int(i) for i in prompt]
    else:
        ids = tokenizer.encode(unescape(prompt)) if prompt else []
    if len(ids) >= length:
        raise TokenDiffError(
            f"prompt is {len(ids)} tokens, not shorter than the sequence length {length}; "
            "shorten the prompt or raise sampling.length (past model.block_size with sampling.block_size)"
        )
    return torch.tensor(ids + [mask_id] * (length - len(ids)), dtype=torch.long)


def block_bar(progress: bool | None, total: int) -> tqdm:
    """A progress bar with an ETA over ``total`` blocks (on stderr, cleared when done); it draws only for more
    than one block, and with ``progress=None`` only on a terminal that is the process's own stderr: ``rich``'s
    live view (``sampling.live=true``) swaps ``sys.stderr`` for a proxy, and two displays garble each other."""
    own_terminal = sys.stderr is not None and sys.stderr is sys.__stderr__ and sys.stderr.isatty()
    draw = own_terminal if progress is None else progress
    return tqdm(total=total, desc="sampling", unit="block", file=sys.stderr, leave=False, disable=not draw or total < 2)


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
    top_k: int = 0,
    cache: bool = True,
    threshold: float = 0.9,
    confidence: str = "prob",
    block_size: int | None = None,
    remask: str = "none",
    remask_eta: float = 0.02,
    kv_cache: str = "auto",
    time_grid: str = "auto",
    editing_threshold: float | None = None,
    minimal_topk: int = 1,
    entropy_bound: float = 0.1,
    temperature_start: float | None = None,
    temperature_end: float | None = None,
    corrector_steps: int = 0,
    corrector_k: int = 1,
    corrector_selection: str = "lowest_log_margin",
    corrector_tau: float = 1.0,
    prompt: str | None = None,
    template: str | None = None,
    seed: int = 0,
    batch_size: int = 16,
    device="cpu",
    callback: Callable[[int, torch.Tensor], None] | None = None,
    progress: bool | None = None,
) -> tuple[list[str], dict]:
    """Generate ``num_samples`` texts; sample ``i`` depends only on ``(seed, i)``, not on ``batch_size``.

    ``kernel``: the model's forward kernel, or None for an autoregressive model. Returns the texts and
    stats ``{"model_calls", "tokens"}``. ``callback(step, x)`` sees each step of the first batch (for
    trajectory visuals). ``progress``: a bar with an ETA over the blocks of block-wise sampling, on stderr,
    when there is more than one block to write; None draws it only on a terminal (see :func:`block_bar`).
    """
    if isinstance(model, DiffusionGemmaLM):  # its own canvas loop and settings (tokendiff.samplers.canvas)
        return generate_canvas_text(
            model, tokenizer, num_samples=num_samples, length=length, steps=steps, temperature=temperature,
            prompt=prompt, template=template, seed=seed, batch_size=batch_size, device=device, callback=callback,
        )  # fmt: skip
    block = model.block_size
    causal = kernel is None
    block_model = bool(model.block_diffusion)
    longer = causal or block_size is not None or block_model  # these samplers slide the model's context along the text
    if length < 1 or (length > block and not longer):
        raise TokenDiffError(
            f"sampling.length={length} must lie in [1, model.block_size={block}]; longer texts need block-wise "
            f"sampling (sampling.block_size={min(32, block)})"
        )
    if causal and template:
        raise TokenDiffError("templates with [MASK] gaps need a diffusion model; this one is autoregressive")
    mask_id = model.vocab_size if causal else kernel.mask_token_id
    x0 = initial_tokens(tokenizer, length, mask_id, prompt, template)  # (L,)
    if causal:
        sampler = AutoregressiveSampler(model, temperature, top_p, top_k)
        prefix = x0[x0 != mask_id]  # (P,) the prompt; the model writes the rest left to right
    else:
        settings = SamplingSettings(
            steps=steps, temperature=temperature, strategy=strategy, top_p=top_p, top_k=top_k, cache=cache,
            threshold=threshold, confidence=confidence, block_size=block_size, remask=remask, remask_eta=remask_eta,
            kv_cache=kv_cache, time_grid=time_grid, editing_threshold=editing_threshold, minimal_topk=minimal_topk,
            entropy_bound=entropy_bound, temperature_start=temperature_start, temperature_end=temperature_end,
            corrector_steps=corrector_steps, corrector_k=corrector_k, corrector_selection=corrector_selection,
            corrector_tau=corrector_tau,
        )  # fmt: skip
        sampler = DiffusionSampler(model, kernel, settings)
    eos = tokenizer.eos_id  # pretrained tokenizers: a sample ends at its first EOS (others have none)
    generated = (x0 == mask_id).tolist()  # (L,) the positions the model writes
    # the blocks of every batch, counted (and a block wider than the context refused) before any work
    blocks = len(sampler.blocks(x0.unsqueeze(0) == mask_id)) if not causal and sampler.blockwise else 1
    batches = -(-num_samples // batch_size)
    texts = []
    with block_bar(progress, batches * blocks) as bar:  # closed (cleared) on an error or Ctrl-C too
        for start in range(0, num_samples, batch_size):
            n = min(batch_size, num_samples - start)
            gens = row_generators(seed, n, start)
            cb = callback if start == 0 else None
            if not causal:
                x_init = x0.unsqueeze(0).repeat(n, 1).to(device)
                out = sampler.sample(x_init, gens, cb, stop_id=eos, progress=bar.update)  # (n, L)
            else:
                if len(prefix):
                    first = prefix.unsqueeze(0).repeat(n, 1)  # (n, P)
                else:  # no prompt: a first token drawn uniformly, from each row's own generator
                    first = torch.stack([torch.randint(0, model.vocab_size, (1,), generator=g) for g in gens])
                out = sampler.sample(first.to(device), length, gens, cb)  # (n, L)
            for row in out.cpu().tolist():
                ends = [j for j, (i, g) in enumerate(zip(row, generated)) if g and i == eos] if eos is not None else []
                texts.append(tokenizer.decode(row[: ends[0]] if ends else row))
    return texts, {"model_calls": sampler.model_calls, "tokens": num_samples * length}
