"""DiffusionGemma (transformers' ``DiffusionGemmaForBlockDiffusion``) as a tokendiff backbone.

Loader entry point (what :mod:`tokendiff.pretrained` calls when ``config.json`` says
``"model_type": "diffusion_gemma"``)::

    load_diffusion_gemma(folder: Path, device, dtype=None) -> DiffusionGemmaLM

``folder`` is written by ``save_pretrained`` (``config.json``, the weights, optionally
``generation_config.json`` and the tokenizer files). ``dtype=None`` keeps the checkpoint's own dtype. When
the folder holds a tokenizer, it is loaded as :class:`~tokendiff.data.hf_tokenizer.HFTokenizer` (the model's
``tokenizer`` attribute) and the model's tokendiff ids follow it; else tokendiff ids are the backbone's ids.

The model: a uniform-noise block diffusion LM. A causal *encoder* writes the context (prompt and finished
canvases) into a KV cache; a bidirectional *decoder* reads that cache (without writing it) and denoises one
canvas of ``canvas_length`` tokens; it also takes the previous step's logits as a soft input
(self-conditioning). Its sampler is :mod:`tokendiff.samplers.canvas`.

Ids: DiffusionGemma is uniform noise, so no mask token is ever fed: a canvas starts as uniform draws over
the backbone's whole vocabulary (``text_config.vocab_size`` ids, ``V_hf``). tokendiff's convention (real
tokens ``0 .. V - 1``, the mask at ``V``, logits ``(B, L, V)``) is met at the boundary, as
:class:`~tokendiff.models.hf.HFMaskedLM` does it: tokendiff id ``i`` is backbone id ``i + (i >= m)``, with
``m`` the backbone id tokendiff's mask stands for (the tokenizer's mask; ``m = V = V_hf`` without a tokenizer,
where the map is the identity). Feeding tokendiff's mask id is refused; the logits drop column ``m`` and any
rows past the tokenizer. The sampler itself runs in backbone ids over all ``V_hf`` tokens, as transformers
does (see :func:`vocabulary_facts`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from tokendiff.errors import TokenDiffError, first_line
from tokendiff.extras import require
from tokendiff.models.base import Backbone

__all__ = ["DiffusionGemmaLM", "VocabularyFacts", "load_diffusion_gemma", "vocabulary_facts", "MODEL_TYPE"]

MODEL_TYPE = "diffusion_gemma"  # config.json's model_type for this architecture


@dataclass(frozen=True)
class VocabularyFacts:
    """What a DiffusionGemma reads and writes, in its own (backbone) ids.

    ``backbone_vocab_size``: ``V_hf``, the ids of the embedding table and of the logits; uniform noise (the
    initial canvas and every renoising) is drawn over all of them. ``mask_id``: None: the model has no mask
    token in its diffusion (uniform noise), whatever its tokenizer holds. ``bos_id``, ``pad_id``,
    ``eos_ids``: from the generation config where set, else from the text config.
    """

    backbone_vocab_size: int
    canvas_length: int
    bos_id: int | None
    pad_id: int | None
    eos_ids: tuple[int, ...]
    mask_id: None = None


def vocabulary_facts(backbone) -> VocabularyFacts:
    """The :class:`VocabularyFacts` of a ``DiffusionGemmaForBlockDiffusion``."""
    text = backbone.config.text_config
    gen = backbone.generation_config

    def pick(name):
        value = getattr(gen, name, None)
        return value if value is not None else getattr(text, name, None)

    eos = pick("eos_token_id")
    eos_ids = () if eos is None else tuple([eos] if isinstance(eos, int) else eos)
    return VocabularyFacts(
        backbone_vocab_size=int(text.vocab_size),
        canvas_length=int(backbone.config.canvas_length),
        bos_id=pick("bos_token_id"),
        pad_id=pick("pad_token_id"),
        eos_ids=tuple(int(e) for e in eos_ids),
    )


class DiffusionGemmaLM(Backbone):
    """A ``DiffusionGemmaForBlockDiffusion`` behind tokendiff's backbone protocol.

    Args:
        backbone: the transformers model (eval mode is the caller's business; sampling runs under no_grad).
        vocab_size: ``V``, tokendiff's real tokens; None: all ``V_hf`` backbone ids.
        mask_id: the backbone id that tokendiff's mask ``V`` stands for (a tokenizer's mask); None: ``V``.
        tokenizer: the checkpoint's tokenizer (kept for the loader's callers), or None.

    Calls, in tokendiff ids: ``model(x)`` with ``x`` (B, P + C): a context of ``P >= 1`` tokens followed by one
    canvas of ``C = canvas_length`` tokens, returns the canvas' logits (B, C, V); DiffusionGemma has no
    logits for its context (the encoder only fills the cache). :meth:`canvas_logits` is the same with the
    context, the canvas and the previous step's logits apart. In backbone ids (the sampler's):
    :meth:`encode` (the cache) and :meth:`decoder_logits` (B, C, V_hf).
    """

    time_conditioning = False  # no t input: the noise level is read off the canvas
    self_conditioning = True  # the previous step's logits are a soft input of the decoder
    supports_kv_cache = False  # no forward_cached(): its cache is the encoder's (encode / decoder_logits)
    encoder_cache = True  # the context is encoded once into a KV cache that every denoising step reads
    noise = "uniform"  # the kernel it was trained with: uniform over its whole vocabulary, no mask token
    # its logits are the full posterior p(x0_i | x_t) (cross-entropy at every canvas position), not the leave-one-out
    # law tokendiff's uniform NELBO reads; the block objective converts them (tokendiff.processes.denoisers)
    predicts_posterior = True

    def __init__(self, backbone, vocab_size: int | None = None, mask_id: int | None = None, tokenizer=None):
        super().__init__()
        facts = vocabulary_facts(backbone)
        V_hf = facts.backbone_vocab_size
        V = V_hf if vocab_size is None else int(vocab_size)
        m = V if mask_id is None else int(mask_id)
        needed = V + (1 if m < V else 0)  # the real tokens' backbone ids, and the mask's when it sits among them
        if not 0 <= m <= V or needed > V_hf:
            raise TokenDiffError(
                f"vocab_size={V} with mask_id={m} needs {needed} backbone ids but the DiffusionGemma has "
                f"{V_hf}; use the model's own tokenizer (the one saved with it)"
            )
        self.backbone = backbone
        self.facts = facts
        self.tokenizer = tokenizer
        self.vocab_size = V
        self.mask_id = m
        self.backbone_vocab_size = V_hf
        self.canvas_length = facts.canvas_length
        self.block_diffusion = facts.canvas_length  # one canvas is one block, denoised after the earlier ones
        self.block_size = int(backbone.config.text_config.max_position_embeddings)  # context + canvas
        ids = torch.arange(V)
        self.register_buffer("real_ids", ids + (ids >= m).long(), persistent=False)  # (V,) backbone id of each

    # ------------------------------------------------------------------ ids
    def to_backbone_ids(self, x: torch.Tensor) -> torch.Tensor:
        """tokendiff ids (any shape, mask refused) -> backbone ids."""
        if (x < 0).any() or (x >= self.vocab_size).any():
            bad = x[(x < 0) | (x >= self.vocab_size)][0].item()
            raise TokenDiffError(
                f"token id {bad} is not a real token of this DiffusionGemma (ids 0..{self.vocab_size - 1}): it is "
                "a uniform-noise model and takes no mask; fill the positions to generate with uniform noise"
            )
        return x + (x >= self.mask_id).long()

    def from_backbone_ids(self, h: torch.Tensor) -> torch.Tensor:
        """Backbone ids -> tokendiff ids; the tokenizer's mask and ids past the tokenizer become ``V``."""
        x = h - (h > self.mask_id).long()
        return torch.where((h == self.mask_id) | (x >= self.vocab_size), self.vocab_size, x)

    def to_tokendiff_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """(..., V_hf) backbone logits -> (..., V) over tokendiff's real tokens (the mask's column dropped)."""
        if self.mask_id == self.vocab_size:  # the identity map: a view of the first V columns
            return logits[..., : self.vocab_size]
        return logits.index_select(-1, self.real_ids)

    def to_backbone_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """(..., V) tokendiff logits -> (..., V_hf): ``-inf`` (probability 0) on ids tokendiff has no token for."""
        full = logits.new_full((*logits.shape[:-1], self.backbone_vocab_size), float("-inf"))
        return full.index_copy_(-1, self.real_ids, logits)

    # ------------------------------------------------------------------ backbone ids
    def encode(self, ids: torch.Tensor, cache=None, start: int = 0):
        """Write the keys and values of ``ids`` (B, n), at positions ``start .. start + n``, into ``cache``.

        ``cache``: the cache of positions ``0 .. start`` (None: a new one, ``start`` must be 0). Returns it."""
        if ids.shape[1] < 1:
            raise TokenDiffError("DiffusionGemma needs a context of at least one token (e.g. BOS); add a prompt")
        if cache is None:
            if start:
                raise TokenDiffError(f"encode: start={start} > 0 needs the cache of the positions before it")
            cache = require("transformers", "DiffusionGemma").DynamicCache(config=self.backbone.config.text_config)
        n = ids.shape[1]
        positions = torch.arange(start, start + n, device=ids.device).unsqueeze(0)  # (1, n)
        self.backbone.model.encoder(input_ids=ids, cache=cache, position_ids=positions)
        return cache

    def decoder_logits(self, canvas: torch.Tensor, cache, start: int, previous_logits=None) -> torch.Tensor:
        """Logits (B, C, V_hf) of the canvas (B, C) of backbone ids at positions ``start .. start + C``.

        ``cache``: the encoded context (positions ``0 .. start``), read only. ``previous_logits`` (B, C, V_hf):
        the previous denoising step's logits (self-conditioning; None at the first step: a zero signal).
        Float32 logits, soft-capped as the model's own forward does (it is that forward)."""
        C = canvas.shape[1]
        positions = torch.arange(start, start + C, device=canvas.device).unsqueeze(0)  # (1, C)
        out = self.backbone(
            decoder_input_ids=canvas,
            cache=cache,
            self_conditioning_logits=previous_logits,
            decoder_position_ids=positions,
        )
        return out.logits  # (B, C, V_hf)

    # ------------------------------------------------------------------ tokendiff ids
    def canvas_logits(
        self, context: torch.Tensor, canvas: torch.Tensor, previous_logits: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits (B, C, V) of ``canvas`` (B, C) given ``context`` (B, P), P >= 1, in tokendiff ids.

        ``previous_logits`` (B, C, V): the previous step's (self-conditioning), or None."""
        cache = self.encode(self.to_backbone_ids(context))
        previous = None if previous_logits is None else self.to_backbone_logits(previous_logits)
        logits = self.decoder_logits(self.to_backbone_ids(canvas), cache, context.shape[1], previous)  # (B, C, V_hf)
        return self.to_tokendiff_logits(logits)  # (B, C, V)

    def context_id(self) -> int:
        """The backbone id that opens every context when tokendiff scores a text from its start (BOS; else PAD)."""
        first = self.facts.bos_id if self.facts.bos_id is not None else self.facts.pad_id
        if first is None:
            raise TokenDiffError(
                "this DiffusionGemma's config names no bos_token_id (nor pad_token_id) to open a context with; "
                "set text_config.bos_token_id in its config.json"
            )
        return int(first)

    def forward_block_diffusion(
        self, xt: torch.Tensor, x0: torch.Tensor, t: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits (B, L, V) of every canvas of ``xt`` (B, L) given the clean canvases of ``x0`` (B, L) before it, in
        tokendiff ids: what :class:`~tokendiff.objectives.BlockDiffusionObjective` scores (``L`` a multiple of
        ``canvas_length``; ``t`` is ignored: the model reads the noise level off the canvas).

        The context of canvas ``b`` is BOS (:meth:`context_id`) and the clean canvases ``x0_<b``, written into the
        encoder's cache one canvas at a time, as the sampler commits them. The denoiser is the fixed two-pass
        self-conditioned one (a first pass without a previous estimate, a second fed the first's logits), so
        that a bound computed from it is the bound of one model, not of a random mixture."""
        B, L = xt.shape
        C = self.canvas_length
        if L % C:
            raise TokenDiffError(
                f"a sequence of {L} tokens is not a whole number of DiffusionGemma canvases of {C}; "
                f"use a length that is a multiple of {C} (model.block_size)"
            )
        if L + 1 > self.block_size:
            raise TokenDiffError(
                f"{L} tokens and BOS exceed this DiffusionGemma's {self.block_size} positions; use model.block_size <= "
                f"{(self.block_size - 1) // C * C}"
            )
        noisy, clean = self.to_backbone_ids(xt), self.to_backbone_ids(x0)
        cache = self.encode(torch.full((B, 1), self.context_id(), dtype=torch.long, device=xt.device))
        out = []
        for a in range(0, L, C):
            first = self.decoder_logits(noisy[:, a : a + C], cache, a + 1)  # (B, C, V_hf) positions after BOS
            out.append(self.to_tokendiff_logits(self.decoder_logits(noisy[:, a : a + C], cache, a + 1, first)))
            if a + C < L:
                cache = self.encode(clean[:, a : a + C], cache, start=a + 1)
        return torch.cat(out, dim=1)  # (B, L, V)

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` (B, P + C): context then one canvas -> the canvas' logits (B, C, V); ``t`` is ignored."""
        C = self.canvas_length
        if x.shape[1] <= C:
            raise TokenDiffError(
                f"a DiffusionGemma call needs a context before its canvas of {C} tokens, got {x.shape[1]} tokens; "
                "prepend at least one context token (e.g. BOS)"
            )
        return self.canvas_logits(x[:, :-C], x[:, -C:])


def load_diffusion_gemma(folder: Path, device, dtype=None) -> DiffusionGemmaLM:
    """The DiffusionGemma saved in ``folder`` (by ``save_pretrained``), on ``device``, in eval mode.

    ``dtype``: a torch dtype for the weights; None keeps the checkpoint's. With tokenizer files in ``folder``
    the model's ``tokenizer`` is that tokenizer and its ids are tokendiff's (mask placed as the tokenizer has
    it); without them, tokendiff ids are the backbone's ids."""
    folder = Path(folder)
    transformers = require("transformers", "a DiffusionGemma checkpoint")
    try:
        model_type = json.loads((folder / "config.json").read_text()).get("model_type")
    except (OSError, ValueError) as exc:
        raise TokenDiffError(f"{folder}/config.json could not be read ({type(exc).__name__}); give a folder "
                             "written by save_pretrained") from None  # fmt: skip
    if model_type != MODEL_TYPE:
        raise TokenDiffError(
            f"{folder} holds model_type={model_type!r}, not {MODEL_TYPE!r}; load it with its own loader"
        )
    try:
        backbone = transformers.DiffusionGemmaForBlockDiffusion.from_pretrained(
            str(folder), dtype=dtype if dtype is not None else "auto"
        )
    except (OSError, ValueError, KeyError) as exc:
        first = first_line(exc)
        raise TokenDiffError(f"{folder} could not be loaded as a DiffusionGemma ({first}); save it again") from None
    tokenizer = None
    if (folder / "tokenizer_config.json").is_file():
        from tokendiff.data.hf_tokenizer import HFTokenizer

        tokenizer = HFTokenizer.load(folder)
    vocab = None if tokenizer is None else tokenizer.vocab_size
    mask = None if tokenizer is None else tokenizer.hf_mask_id
    return DiffusionGemmaLM(backbone.to(device).eval(), vocab, mask, tokenizer)
