"""Canvas sampling: DiffusionGemma's block diffusion loop, written for tokendiff.

The text grows one *canvas* (a block of ``C`` tokens) at a time. For each canvas:

1. the context (prompt, then the finished canvases) is in the encoder's KV cache;
2. the canvas starts as uniform noise over the model's ``V`` ids;
3. each step ``n = N, N-1, .., 1`` (``N = max_denoising_steps``; ``n`` counts the steps *left*):

   - logits ``(B, C, V)`` of the canvas, self-conditioned on the previous step's (tempered) logits;
   - tempered by ``tau_n = t_min + (t_max - t_min) n / N``: hot first, colder as the canvas settles;
   - a denoiser canvas ``x_D`` is drawn from ``softmax(logits / tau_n)``;
   - entropy-bound acceptance (the EB-sampler, arXiv 2505.24857; ``tokendiff.samplers.entropy_bound``): sort
     the positions by entropy ``H_i`` ascending and accept the first ``k`` with ``sum_{j<=k} H_j - H_k <=
     entropy_bound`` (the sum minus the largest bounds their mutual information, so the accepted tokens are
     nearly independent); the lowest-entropy position is always accepted;
   - accepted positions take ``x_D``'s token, the others are renoised uniformly;
   - adaptive stopping: a row stops when its argmax canvas has been the same for ``stability_threshold``
     steps (stable) and the mean entropy of its tempered logits is below ``confidence_threshold`` (confident);

4. the canvas written is the argmax of the last step's tempered logits; it is encoded into the cache, and
   a row whose canvas holds EOS ends there (its later tokens become the pad id).

Noise: :class:`RowNoise` draws from tokendiff's one generator per row (float64 inverse-CDF categorical
draws, one uniform per position), so sample ``i`` of seed ``s`` is the same whatever the batch size: a row
draws only while it is still denoising. :class:`TorchNoise` makes transformers' own draws (``torch.randint``
and ``torch.multinomial`` from torch's global generator, for every row at every step), so that after
``torch.manual_seed(s)`` this loop and ``DiffusionGemmaForBlockDiffusion.generate`` agree token for token.
``RowNoise(..., greedy=True)`` takes the argmax instead of the denoiser draw (``sampling.temperature=0``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Protocol

import torch

from tokendiff.errors import TokenDiffError
from tokendiff.models.diffusion_gemma import DiffusionGemmaLM
from tokendiff.samplers.entropy_bound import entropy_bound_accept, token_entropy
from tokendiff.samplers.noise import row_uniform

__all__ = [
    "CanvasSettings",
    "CanvasOutput",
    "CanvasNoise",
    "RowNoise",
    "TorchNoise",
    "StableAndConfident",
    "linear_temperature",
    "sample_canvases",
    "generate_canvas_text",
]


CDF_CHUNK = 1 << 22  # float64 values of the denoiser draw's cumulative table held at once (32 MiB)


@dataclass(frozen=True)
class CanvasSettings:
    """The knobs of the canvas loop; the defaults are DiffusionGemma's published generation defaults.

    Fields:
        max_denoising_steps: ``N``, the most steps per canvas (adaptive stopping may end a canvas sooner).
        entropy_bound: the acceptance bound (> 0): larger accepts more tokens per step.
        t_min, t_max: the temperature at the last and at the first step (``0 <= t_min < t_max``).
        stability_threshold: steps the argmax canvas must stay unchanged to stop (0: always stable);
            None turns adaptive stopping off (every canvas takes ``N`` steps).
        confidence_threshold: the mean entropy (nats) below which a row is confident; None: no stopping.
    """

    max_denoising_steps: int = 48
    entropy_bound: float = 0.1
    t_min: float = 0.4
    t_max: float = 0.8
    stability_threshold: int | None = 1
    confidence_threshold: float | None = 0.005

    def __post_init__(self):
        n = self.max_denoising_steps
        if not isinstance(n, int) or n < 1:
            raise TokenDiffError(f"max_denoising_steps={n} must be an integer >= 1, e.g. 48")
        if not self.entropy_bound > 0:
            raise TokenDiffError(f"entropy_bound={self.entropy_bound} must be > 0, e.g. 0.1")
        if not 0 <= self.t_min < self.t_max:
            raise TokenDiffError(f"t_min={self.t_min}, t_max={self.t_max}: need 0 <= t_min < t_max, e.g. 0.4 and 0.8")
        if self.stability_threshold is not None and self.stability_threshold < 0:
            raise TokenDiffError(f"stability_threshold={self.stability_threshold} must be >= 0, e.g. 1")
        if self.confidence_threshold is not None and not self.confidence_threshold > 0:
            raise TokenDiffError(f"confidence_threshold={self.confidence_threshold} must be > 0, e.g. 0.005")

    @property
    def adaptive_stopping(self) -> bool:
        return self.stability_threshold is not None and self.confidence_threshold is not None

    @classmethod
    def from_generation_config(cls, generation_config, **overrides) -> "CanvasSettings":
        """The settings a ``DiffusionGemmaGenerationConfig`` holds (its unset fields keep the defaults)."""
        values = {}
        for name in ("max_denoising_steps", "t_min", "t_max", "stability_threshold", "confidence_threshold"):
            value = getattr(generation_config, name, None)
            if value is not None:
                values[name] = value
        sampler = getattr(generation_config, "sampler_config", None)
        if sampler is not None:
            values["entropy_bound"] = sampler.entropy_bound
        return replace(cls(**values), **overrides)


@dataclass
class CanvasOutput:
    """``tokens`` (B, P + k C) backbone ids: the context, then ``k`` canvases (after EOS: the pad id).
    ``model_calls``: decoder calls (batched); ``steps`` (B,): the decoder steps each row took part in."""

    tokens: torch.Tensor
    model_calls: int
    steps: torch.Tensor


def linear_temperature(step: int, steps: int, t_min: float, t_max: float) -> torch.Tensor:
    """``tau = t_min + (t_max - t_min) step / steps`` as a float32 scalar, ``step`` counting the steps left.

    Computed in float32 the way transformers computes it (an int32 step divided by ``steps``), so that the
    tempered logits are the same numbers as in the model's own ``generate``."""
    return t_min + (t_max - t_min) * (torch.tensor(step, dtype=torch.int32) / steps)


class CanvasNoise(Protocol):
    """The random draws of the canvas loop. ``active`` (B,) bool: the rows still denoising (a source may
    leave the others' draws out; their values are then ignored)."""

    def uniform_canvas(self, batch: int, length: int, vocab: int, active: torch.Tensor) -> torch.Tensor:
        """(B, C) ids drawn uniformly from ``0 .. vocab - 1``."""
        ...

    def denoise(self, logits: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """(B, C) ids drawn from ``softmax(logits)``, logits (B, C, V) already tempered."""
        ...


class RowNoise:
    """tokendiff's draws: row ``b`` from ``generators[b]`` only, and only while it is active.

    The denoiser draw is an inverse-CDF categorical draw in float64 (one uniform per position, so a large
    vocabulary costs no ``(C, V)`` noise tensor). ``greedy``: the denoiser canvas is the argmax."""

    def __init__(self, generators: list[torch.Generator], greedy: bool = False):
        self.generators = generators
        self.greedy = greedy

    def uniform_canvas(self, batch, length, vocab, active):
        if batch != len(self.generators):
            raise TokenDiffError(f"{len(self.generators)} generators for a batch of {batch}; give one per row")
        rows = [
            torch.randint(0, vocab, (length,), generator=g) if on else torch.zeros(length, dtype=torch.long)
            for g, on in zip(self.generators, active.tolist())
        ]
        return torch.stack(rows).to(active.device)  # (B, C)

    def denoise(self, logits, active):
        if self.greedy:
            return logits.argmax(-1)  # (B, C)
        rows = active.nonzero().squeeze(-1).tolist()
        out = torch.zeros(logits.shape[:2], dtype=torch.long, device=logits.device)  # (B, C)
        if not rows:
            return out
        u = row_uniform([self.generators[b] for b in rows], (logits.shape[1], 1), logits.device)  # (b, C, 1)
        drawn = torch.empty(len(rows), logits.shape[1], dtype=torch.long, device=logits.device)  # (b, C)
        # a chunk of positions at a time: a float64 (b, C, V) table of a 262k vocabulary would be 0.5 GB a row
        step = max(1, CDF_CHUNK // (len(rows) * logits.shape[-1]))
        for i in range(0, logits.shape[1], step):
            cdf = torch.softmax(logits[rows, i : i + step].double(), dim=-1).cumsum(-1)  # (b, c, V) float64
            drawn[:, i : i + step] = torch.searchsorted(cdf, u[:, i : i + step] * cdf[..., -1:]).squeeze(-1)
        out[rows] = drawn.clamp_(max=logits.shape[-1] - 1)  # the first index whose cdf reaches u
        return out


class TorchNoise:
    """transformers' draws (``DiffusionGemmaGenerationMixin.generate``): torch's global generator, every row
    at every step, ``torch.multinomial`` on float32 probabilities. Seed with ``torch.manual_seed``; the
    results then depend on the batch size, as the model's own ``generate`` does."""

    def uniform_canvas(self, batch, length, vocab, active):
        return torch.randint(0, vocab, (batch, length), device=active.device)  # (B, C)

    def denoise(self, logits, active):
        B, C, V = logits.shape
        probs = torch.softmax(logits, dim=-1, dtype=torch.float32)  # (B, C, V)
        return torch.multinomial(probs.view(-1, V), num_samples=1).view(B, C)  # (B, C)


class StableAndConfident:
    """Adaptive stopping: a row stops once its argmax canvas equals each of the last ``stability`` ones
    (stable) and the mean entropy of its tempered logits is below ``confidence`` (confident)."""

    def __init__(self, stability: int, confidence: float):
        self.stability = stability
        self.confidence = confidence
        self.history: torch.Tensor | None = None  # (stability, B, C) the last argmax canvases, oldest first

    def reset(self) -> None:
        self.history = None

    def __call__(self, argmax: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """(B,) bool from the argmax canvas (B, C) and the tempered logits (B, C, V) of this step."""
        if self.stability == 0:
            stable = torch.ones(argmax.shape[0], dtype=torch.bool, device=argmax.device)
        else:
            if self.history is None:  # -1 matches no token: nothing is stable before `stability` steps
                self.history = torch.full((self.stability, *argmax.shape), -1, dtype=argmax.dtype, device=argmax.device)
            stable = (self.history == argmax[None]).all(-1).all(0)  # (B,)
            self.history = torch.cat([self.history[1:], argmax[None]])
        confident = token_entropy(torch.log_softmax(logits, -1)).mean(-1) < self.confidence  # (B,)
        return stable & confident


@torch.no_grad()
def sample_canvases(
    model: DiffusionGemmaLM,
    context: torch.Tensor,
    max_new_tokens: int,
    settings: CanvasSettings,
    noise: CanvasNoise,
    *,
    eos_ids: tuple[int, ...] = (),
    pad_id: int | None = None,
    initial_canvas: torch.Tensor | None = None,
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> CanvasOutput:
    """Write ``ceil(max_new_tokens / C)`` canvases after ``context`` (B, P) of backbone ids, P >= 1.

    Rows whose canvas holds one of ``eos_ids`` end there; with ``pad_id`` their tokens after the first EOS (and
    their later canvases) become ``pad_id``; the loop stops when every row has ended. ``initial_canvas``
    (B, C): the first canvas's starting tokens instead of uniform draws (the draws are still made, as
    transformers makes them). ``callback(step, tokens)`` sees each step's (B, P' + C) context and argmax
    canvas. Returns a :class:`CanvasOutput` in backbone ids (the whole last canvas, even past
    ``max_new_tokens``, as transformers returns it)."""
    if max_new_tokens < 1:
        raise TokenDiffError(f"max_new_tokens={max_new_tokens} must be >= 1")
    B, P = context.shape
    C, V = model.canvas_length, model.backbone_vocab_size
    N = settings.max_denoising_steps
    device = context.device
    if initial_canvas is not None and tuple(initial_canvas.shape) != (B, C):
        raise TokenDiffError(f"initial_canvas has shape {tuple(initial_canvas.shape)}; give ({B}, {C})")
    stopper = StableAndConfident(settings.stability_threshold, settings.confidence_threshold)
    stopping = settings.adaptive_stopping
    eos = torch.tensor(eos_ids, dtype=torch.long, device=device)
    embed_dtype = model.backbone.get_input_embeddings().weight.dtype
    tokens = context
    ended = torch.zeros(B, dtype=torch.bool, device=device)  # (B,) rows past their EOS
    steps = torch.zeros(B, dtype=torch.long, device=device)
    calls = 0
    cache = model.encode(context)  # the prompt, positions 0 .. P - 1
    for k in range(-(-max_new_tokens // C)):
        start = tokens.shape[1]  # the canvas' first position
        done = torch.zeros(B, dtype=torch.bool, device=device)  # (B,) rows whose denoising stopped
        drawn = noise.uniform_canvas(B, C, V, ~done)  # (B, C)
        canvas = initial_canvas.to(device) if k == 0 and initial_canvas is not None else drawn
        argmax, previous = canvas, None
        stopper.reset()
        for n in range(N, 0, -1):  # n: the steps left, N .. 1
            steps += ~(done | ended)
            logits = model.decoder_logits(canvas, cache, start, previous)  # (B, C, V)
            calls += 1
            logits = logits / linear_temperature(n, N, settings.t_min, settings.t_max)  # (B, C, V) tempered
            denoised = noise.denoise(logits, ~done)  # (B, C) x_D
            new_argmax = logits.argmax(-1)  # (B, C)
            accept = entropy_bound_accept(torch.log_softmax(logits, -1), settings.entropy_bound)  # (B, C)
            fresh = noise.uniform_canvas(B, C, V, ~done)  # (B, C) renoising draws
            new_canvas = torch.where(accept, denoised, fresh)  # (B, C)
            if stopping:
                if done.any():  # rows that stopped keep their canvas, argmax and self-conditioning logits
                    new_argmax = torch.where(done[:, None], argmax, new_argmax)
                    new_canvas = torch.where(done[:, None], canvas, new_canvas)
                    logits = torch.where(done[:, None, None], previous, logits)
                done = done | stopper(new_argmax, logits)
            canvas, argmax, previous = new_canvas, new_argmax, logits.to(embed_dtype)
            if callback is not None:
                callback(calls, torch.cat([tokens, argmax], dim=1))
            if done.all():
                break
        tokens = torch.cat([tokens, argmax], dim=1)  # (B, P' + C)
        has_eos = torch.isin(argmax, eos).any(-1) if len(eos_ids) else torch.zeros_like(ended)  # (B,)
        if pad_id is not None:
            tokens[ended, -C:] = pad_id  # rows that ended in an earlier canvas
            hits = torch.isin(tokens[:, -C:], eos)  # (B, C)
            seen = hits.cumsum(-1)
            after_first = (seen > 0) & ~((seen == 1) & hits)  # (B, C) every position after the row's first EOS
            tokens[:, -C:] = tokens[:, -C:].masked_fill(after_first, pad_id)
        ended = ended | has_eos
        if ended.all():
            break
        cache = model.encode(tokens[:, -C:], cache, start)  # the finished canvas joins the context
    return CanvasOutput(tokens=tokens, model_calls=calls, steps=steps)


def continue_rows(
    model: DiffusionGemmaLM,
    context: list[int],
    rows: int,
    new: int,
    settings: CanvasSettings,
    generators: list[torch.Generator],
    *,
    greedy: bool = False,
    device="cpu",
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> tuple[torch.Tensor, int]:
    """``new`` tokens written after ``context`` (tokendiff ids, the same for the ``rows`` rows, row ``i`` drawn with
    ``generators[i]``): (rows, <= new) tokendiff ids, cut to ``new``, after EOS padded as the model pads; and the
    model calls made. The context starts with the model's BOS (added unless it is there).
    ``callback(step, x)`` sees the rows' tokens (tokendiff ids) at each step."""
    facts = model.facts
    ids = model.to_backbone_ids(torch.tensor(context, dtype=torch.long))  # (P,)
    if facts.bos_id is not None and (len(ids) == 0 or ids[0].item() != facts.bos_id):
        ids = torch.cat([torch.tensor([facts.bos_id]), ids])
    if len(ids) == 0:
        raise TokenDiffError("this DiffusionGemma has no BOS token to start from; give a prompt")
    watch = None
    if callback is not None:
        watch = lambda step, x: callback(step, model.from_backbone_ids(x))  # noqa: E731
    noise = RowNoise(generators, greedy=greedy)
    batch = ids.unsqueeze(0).repeat(rows, 1).to(device)  # (rows, P)
    out = sample_canvases(
        model, batch, new, settings, noise, eos_ids=facts.eos_ids, pad_id=facts.pad_id, callback=watch
    )
    return model.from_backbone_ids(out.tokens[:, len(ids) : len(ids) + new]), out.model_calls


def end_ids(model: DiffusionGemmaLM, tokenizer) -> set[int]:
    """The tokendiff ids a text ends at: the tokenizer's EOS, and those the model's generation config names."""
    ends = {int(e) for e in model.from_backbone_ids(torch.tensor(model.facts.eos_ids, dtype=torch.long)).tolist()}
    return (ends | {tokenizer.eos_id}) - {None, model.vocab_size}


def generate_canvas_text(
    model: DiffusionGemmaLM,
    tokenizer,
    *,
    num_samples: int,
    length: int,
    steps: int,
    temperature: float = 1.0,
    prompt: str | None = None,
    template: str | None = None,
    seed: int = 0,
    batch_size: int = 16,
    device="cpu",
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> tuple[list[str], dict]:
    """:func:`tokendiff.samplers.text.generate` for a DiffusionGemma: texts of ``length`` tokens (prompt included).

    The model's own generation config sets the loop (:meth:`CanvasSettings.from_generation_config`), with
    ``steps`` as ``max_denoising_steps``; ``temperature=0`` takes the argmax denoiser canvas, any other value
    keeps the model's temperature schedule. The context starts with the model's BOS. Sample ``i`` depends only
    on ``(seed, i)``. ``callback(step, x)`` sees the first batch's tokens (tokendiff ids) at each step."""
    from tokendiff.samplers.noise import row_generators
    from tokendiff.samplers.text import unescape

    if template:
        raise TokenDiffError(
            "DiffusionGemma writes canvases after a prompt; templates need a masked model: use prompt="
        )
    settings = CanvasSettings.from_generation_config(model.backbone.generation_config, max_denoising_steps=steps)
    ids = list(prompt) if isinstance(prompt, list) else tokenizer.encode(unescape(prompt)) if prompt else []
    new = length - len(ids)
    if new < 1:
        raise TokenDiffError(
            f"prompt is {len(ids)} tokens, not shorter than the sequence length {length}; "
            "shorten the prompt or raise sampling.length"
        )
    ends = end_ids(model, tokenizer)
    texts, calls = [], 0
    for start in range(0, num_samples, batch_size):
        n = min(batch_size, num_samples - start)
        written, used = continue_rows(
            model, ids, n, new, settings, row_generators(seed, n, start), greedy=temperature == 0, device=device,
            callback=callback if start == 0 else None,
        )  # fmt: skip
        calls += used
        for row in written.cpu().tolist():
            cut = next((j for j, token in enumerate(row) if token in ends), len(row))
            texts.append(tokenizer.decode(ids + row[:cut]))
    return texts, {"model_calls": calls, "tokens": num_samples * length}
