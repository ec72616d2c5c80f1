"""Hugging Face ``transformers`` backbones as tokendiff models (``model.arch=hf``).

:class:`HFMaskedLM` wraps any ``AutoModelForMaskedLM`` (BERT, RoBERTa, ModernBERT, ...) as the
time-agnostic denoiser of masked diffusion, or any ``AutoModelForCausalLM`` (``model.causal=true``) as
the autoregressive yardstick. tokendiff ids put the mask last (id ``V``); the backbone keeps its own
numbering, with its mask at ``mask_id`` inside its vocabulary (see :mod:`tokendiff.data.hf_tokenizer`).
The wrapper maps ids in and logits out, so the kernels, objectives and samplers see ``(B, L, V)``
logits over real tokens only: the mask logit is never predicted.

Checkpoints of these models also hold the backbone as ``save_pretrained`` writes it (``<ckpt>/model``),
so ``AutoModelForMaskedLM.from_pretrained("<ckpt>/model")`` loads the trained denoiser.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tokendiff.errors import TokenDiffError
from tokendiff.extras import require
from tokendiff.models.base import Backbone

__all__ = ["HFMaskedLM", "load_hf_backbone"]


class HFMaskedLM(Backbone):
    """tokens (B, L) in tokendiff ids -> logits (B, L, V) over real tokens, through a transformers model.

    Args:
        backbone: a ``PreTrainedModel`` whose output has ``.logits`` (B, L, V_hf) with ``V_hf >= V + 1``.
        vocab_size: ``V``, the real tokens (the tokenizer's vocabulary without its mask).
        mask_id: the backbone's id of the mask token (``V`` when the mask was appended).
        block_size: the longest sequence to accept (at most the backbone's position table).
        causal: an autoregressive backbone (no mask is ever fed).
    """

    time_conditioning = False
    exports_pretrained = True  # export(): the backbone as save_pretrained writes it (transformers can load it)

    def __init__(self, backbone, vocab_size: int, mask_id: int, block_size: int, causal: bool = False):
        super().__init__()
        rows = backbone.get_input_embeddings().weight.shape[0]
        # the tokens, and the mask's row unless an autoregressive model's mask is last (never fed nor read)
        needed = vocab_size + (0 if causal and mask_id == vocab_size else 1)
        if rows < needed or not 0 <= mask_id <= vocab_size:
            raise TokenDiffError(
                f"the backbone has {rows} token embeddings but the tokenizer needs {needed}; use the backbone's "
                "own tokenizer (data.tokenizer=hf data.tokenizer_name=<the model's name>) or model.hf_config for "
                "fresh weights"
            )
        limit = getattr(backbone.config, "max_position_embeddings", None)
        if limit is not None and block_size > limit:
            raise TokenDiffError(
                f"model.block_size={block_size} exceeds the backbone's max_position_embeddings={limit}; "
                f"use model.block_size={limit} or less"
            )
        # some architectures hold fewer positions than the table says (RoBERTa offsets them by
        # pad_token_id + 1): one forward of a full block finds out now, not in the first training step
        was_training = backbone.training
        try:
            with torch.no_grad():
                backbone.eval()(input_ids=torch.zeros(1, block_size, dtype=torch.long))  # eval: no dropout draws
        except (IndexError, RuntimeError) as exc:
            why = str(exc).splitlines()[0][:100] if str(exc) else type(exc).__name__
            raise TokenDiffError(
                f"the backbone cannot read sequences of model.block_size={block_size} ({why}); "
                "use a smaller model.block_size"
            ) from None
        finally:
            backbone.train(was_training)
        self.backbone = backbone
        self.vocab_size = vocab_size
        self.mask_id = mask_id
        self.block_size = block_size
        self.causal = causal

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        B, L = x.shape
        if L > self.block_size:
            raise TokenDiffError(f"sequence length {L} exceeds model.block_size={self.block_size}; shorten the input")
        V, m = self.vocab_size, self.mask_id
        ids = torch.where(x == V, m, x + (x >= m).long())  # (B, L) in the backbone's numbering
        logits = self.backbone(input_ids=ids).logits  # (B, L, V_hf)
        if m == V:  # the mask is the last id: a view, not a copy of the largest tensor of the step
            return logits[..., :V]
        return torch.cat([logits[..., :m], logits[..., m + 1 : V + 1]], dim=-1)  # (B, L, V): the mask dropped

    def export(self, directory: Path, tokenizer=None) -> None:
        """Write the backbone (and an HF tokenizer) as ``save_pretrained`` does, into ``directory``."""
        self.backbone.save_pretrained(str(directory))
        if tokenizer is not None and getattr(tokenizer, "kind", None) == "hf":
            tokenizer.save(Path(directory))


def load_hf_backbone(*, name: str | None, config: str | None, causal: bool, vocab_size: int, saved: Path | None = None):
    """The transformers model of ``model.hf_name`` (pretrained) or ``model.hf_config`` (fresh weights).

    ``saved``: a checkpoint's ``model/`` folder: build the architecture from its config.json (no download;
    the weights come from the checkpoint). A fresh model gets ``vocab_size + 1`` embeddings (the tokens
    and the mask); a pretrained one keeps its own, and must cover them.
    """
    transformers = require("transformers", "model.arch=hf")
    auto = transformers.AutoModelForCausalLM if causal else transformers.AutoModelForMaskedLM
    what = "model.hf_name" if name else "model.hf_config"
    try:
        # float32 weights whatever the checkpoint's dtype (transformers 5 keeps a bf16 checkpoint in bf16,
        # where AdamW's small updates vanish); mixed precision is accelerate's autocast (system.dtype)
        if saved is not None:
            return auto.from_config(transformers.AutoConfig.from_pretrained(str(saved))).float()
        if name is not None:
            model = auto.from_pretrained(name).float()
            rows = model.get_input_embeddings().weight.shape[0]
            if not causal and rows == vocab_size:  # its tokenizer had no mask: tokendiff appended one (id V)
                model.resize_token_embeddings(vocab_size + 1)
            return model
        path = Path(config).expanduser()
        cfg = (
            transformers.AutoConfig.from_pretrained(str(path.parent if path.name == "config.json" else path))
            if path.exists()
            else transformers.AutoConfig.from_pretrained(config)
        )
        cfg.vocab_size = vocab_size + 1
        return auto.from_config(cfg).float()
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        source = saved if saved is not None else (name or config)
        raise TokenDiffError(
            f"{what}={str(source)!r} could not be loaded as a transformers "
            f"{'causal' if causal else 'masked'} LM ({first}); give a hub id (online), a folder written by "
            "save_pretrained, or download it first (huggingface-cli download NAME --local-dir <folder>)"
        ) from None
