"""Hugging Face ``transformers`` backbones as tokendiff models (``model.arch=hf``).

:class:`HFMaskedLM` wraps any ``AutoModelForMaskedLM`` (BERT, RoBERTa, ModernBERT, ...) as the
time-agnostic denoiser of masked diffusion, or any ``AutoModelForCausalLM`` (``model.causal=true``) as
the autoregressive yardstick, or (``model.adapt=a2d``) any ``AutoModelForCausalLM`` run with bidirectional
attention as a diffusion LM adapted from an autoregressive one (Dream, DiffuLLaMA; with
``model.logit_shift=true`` position ``i - 1``'s output predicts token ``i``, so the LM head keeps its job).
tokendiff ids put the mask last (id ``V``); the backbone keeps its own
numbering, with its mask at ``mask_id`` inside its vocabulary (see :mod:`tokendiff.data.hf_tokenizer`).
The wrapper maps ids in and logits out, so the kernels, objectives and samplers see ``(B, L, V)``
logits over real tokens only: the mask logit is never predicted.

Checkpoints of these models also hold the backbone as ``save_pretrained`` writes it (``<ckpt>/model``),
so ``AutoModelForMaskedLM.from_pretrained("<ckpt>/model")`` loads the trained denoiser
(``AutoModelForCausalLM`` for an adapted one: it is run with an all-zero 4D attention mask, see
:func:`bidirectional_mask`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from tokendiff.errors import TokenDiffError, first_line
from tokendiff.extras import require
from tokendiff.models.base import Backbone

__all__ = ["HFMaskedLM", "bidirectional_mask", "check_adaptable", "load_hf_backbone"]


class HFMaskedLM(Backbone):
    """tokens (B, L) in tokendiff ids -> logits (B, L, V) over real tokens, through a transformers model.

    Args:
        backbone: a ``PreTrainedModel`` whose output has ``.logits`` (B, L, V_hf) with ``V_hf >= V + 1``.
        vocab_size: ``V``, the real tokens (the tokenizer's vocabulary without its mask).
        mask_id: the backbone's id of the mask token (``V`` when the mask was appended).
        block_size: the longest sequence to accept (at most the backbone's position table).
        causal: an autoregressive backbone (no mask is ever fed).
        adapted: ``backbone`` is a causal LM, run here with bidirectional attention (``model.adapt=a2d``): it
            gets a 4D attention mask of zeros, which transformers uses as it is in place of its causal mask
            (:func:`load_hf_backbone` checks that the architecture honours it).
        logit_shift: position ``i``'s token is read from position ``i - 1``'s logits, position 0's from its
            own (Dream's shift, as :class:`~tokendiff.models.transformer.Transformer` does).
    """

    time_conditioning = False
    exports_pretrained = True  # export(): the backbone as save_pretrained writes it (transformers can load it)

    # no forward_cached; a logit_shift one could not have it anyway (a window's tail reads position start - 1)
    supports_kv_cache = False

    def __init__(
        self,
        backbone,
        vocab_size: int,
        mask_id: int,
        block_size: int,
        causal: bool = False,
        adapted: bool = False,
        logit_shift: bool = False,
    ):
        super().__init__()
        if causal and (adapted or logit_shift):
            raise TokenDiffError("adapted=True and logit_shift=True are for a bidirectional denoiser: drop causal=True")
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
                ids = torch.zeros(1, block_size, dtype=torch.long)
                mask = bidirectional_mask(backbone, ids) if adapted else None
                backbone.eval()(input_ids=ids, attention_mask=mask)  # eval: no dropout draws
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
        self.adapted = adapted
        self.logit_shift = logit_shift

    @classmethod
    def from_config(cls, m, vocab_size: int, *, tokenizer=None, saved: Path | None = None, block_diffusion=None):
        """The transformers model the ``model`` section ``m`` names (``hf_name`` or ``hf_config``; ``saved``: a
        checkpoint's exported folder), wrapped; ``tokenizer`` says where its mask sits in the backbone's ids."""
        if m.hf_name is not None and saved is None and getattr(tokenizer, "kind", None) != "hf":
            raise TokenDiffError(
                f"model.hf_name={m.hf_name!r} has pretrained weights, which need their own tokenizer: add "
                f"data.tokenizer=hf data.tokenizer_name={m.hf_name} (or use model.hf_config for fresh weights)"
            )
        adapt = m.adapt == "a2d"  # a causal LM run bidirectionally (Dream, DiffuLLaMA)
        backbone = load_hf_backbone(
            name=m.hf_name, config=m.hf_config, causal=m.causal, vocab_size=vocab_size, saved=saved, adapt=adapt
        )
        mask_id = getattr(tokenizer, "hf_mask_id", vocab_size)  # char / bpe tokenizers: the mask appended
        shift = m.logit_shift
        return cls(backbone, vocab_size, mask_id, m.block_size, causal=m.causal, adapted=adapt, logit_shift=shift)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def lora_root(self) -> torch.nn.Module:
        """LoRA goes into the transformers model: peft picks its default layers by its ``model_type``, and the
        adapter loads onto it with ``PeftModel.from_pretrained``."""
        return self.backbone

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        B, L = x.shape
        if L > self.block_size:
            raise TokenDiffError(f"sequence length {L} exceeds model.block_size={self.block_size}; shorten the input")
        V, m = self.vocab_size, self.mask_id
        ids = torch.where(x == V, m, x + (x >= m).long())  # (B, L) in the backbone's numbering
        mask = bidirectional_mask(self.backbone, ids) if self.adapted else None
        logits = self.backbone(input_ids=ids, attention_mask=mask).logits  # (B, L, V_hf)
        if m == V:  # the mask is the last id: a view, not a copy of the largest tensor of the step
            logits = logits[..., :V]
        else:
            logits = torch.cat([logits[..., :m], logits[..., m + 1 : V + 1]], dim=-1)  # (B, L, V): the mask dropped
        if self.logit_shift:  # position i's token read from position i - 1 (Dream); position 0 from itself
            logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)  # (B, L, V)
        return logits

    def export(self, directory: Path, tokenizer=None) -> None:
        """Write the backbone (and an HF tokenizer) as ``save_pretrained`` does, into ``directory``."""
        self.backbone.save_pretrained(str(directory))
        if tokenizer is not None and getattr(tokenizer, "kind", None) == "hf":
            tokenizer.save(Path(directory))


def bidirectional_mask(backbone, ids: torch.Tensor) -> torch.Tensor:
    """A 4D additive attention mask of zeros, (B, 1, L, L): every position attends to every other.

    transformers (5.x, ``masking_utils``) passes a 4D mask through as it is, in place of the causal mask it
    would build; eager attention adds it to the scores, and sdpa sets ``is_causal`` only without a mask. Its
    dtype is the one the attention scores have: autocast's under mixed precision, else the weights'.
    """
    B, L = ids.shape
    device = ids.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else backbone.dtype
    return torch.zeros(1, 1, L, L, dtype=dtype, device=ids.device).expand(B, 1, L, L)


def check_adaptable(backbone, what: str) -> None:
    """Refuse (one line) a backbone that ``model.adapt=a2d`` cannot make bidirectional: one whose own
    attention already sees later tokens (a masked LM), or one that ignores a 4D attention mask.

    The probe: change the last of 4 tokens and look at position 0's logits, without a mask (they must
    stay: causal) and with :func:`bidirectional_mask` (they must move)."""
    ids = torch.tensor([[0, 1, 1, 0], [0, 1, 1, 1]])
    was_training = backbone.training
    try:
        with torch.no_grad():
            plain = backbone.eval()(input_ids=ids).logits[:, 0].float()
            opened = backbone(input_ids=ids, attention_mask=bidirectional_mask(backbone, ids)).logits[:, 0].float()
    finally:
        backbone.train(was_training)
    tol = 1e-5 * (1.0 + plain.abs().max().item())  # kernels may differ in the last bits between rows
    if (plain[0] - plain[1]).abs().max().item() > tol:
        raise _not_autoregressive(what, "its position 0 sees later tokens")
    if (opened[0] - opened[1]).abs().max().item() <= tol:
        raise TokenDiffError(
            f"{what} ({type(backbone).__name__}) ignores a 4D attention mask, so model.adapt=a2d cannot make its "
            "attention bidirectional; use a causal LM whose attention takes one (GPT-2, Llama, Qwen2, ...)"
        )


def _not_autoregressive(what: str, why: str) -> TokenDiffError:
    return TokenDiffError(
        f"{what} is not an autoregressive model ({why}): model.adapt=a2d adapts a causal LM; drop model.adapt=a2d "
        "(and model.logit_shift) to train it as a masked LM, or name a causal LM"
    )


def _check_causal_architecture(transformers, name: str) -> None:
    """Refuse, before loading its weights, a pretrained model whose config.json names only architectures that
    are not causal LMs (``BertForMaskedLM``): ``AutoModelForCausalLM`` would load BERT as a bidirectional
    ``BertLMHeadModel``. A config without ``architectures`` is left to :func:`check_adaptable`."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    causal = set()
    for names in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values():
        causal.update([names] if isinstance(names, str) else names)
    archs = getattr(transformers.AutoConfig.from_pretrained(name), "architectures", None) or []
    if archs and not any(a in causal or a.endswith("ForCausalLM") for a in archs):
        raise _not_autoregressive(f"model.hf_name={name!r}", f"its config.json names {', '.join(archs)}")


def load_hf_backbone(
    *,
    name: str | None,
    config: str | None,
    causal: bool,
    vocab_size: int,
    saved: Path | None = None,
    adapt: bool = False,
):
    """The transformers model of ``model.hf_name`` (pretrained) or ``model.hf_config`` (fresh weights).

    ``saved``: a checkpoint's ``model/`` folder: build the architecture from its config.json (no download;
    the weights come from the checkpoint). A fresh model gets ``vocab_size + 1`` embeddings (the tokens
    and the mask); a pretrained one keeps its own, and must cover them. ``adapt`` (``model.adapt=a2d``): a
    causal LM to be run bidirectionally (:class:`HFMaskedLM` with ``adapted=True``), checked to allow it.
    """
    transformers = require("transformers", "model.arch=hf")
    auto = transformers.AutoModelForCausalLM if causal or adapt else transformers.AutoModelForMaskedLM
    what = "model.hf_name" if name else "model.hf_config"
    source = saved if saved is not None else (name or config)
    try:
        # float32 weights whatever the checkpoint's dtype (transformers 5 keeps a bf16 checkpoint in bf16,
        # where AdamW's small updates vanish); mixed precision is accelerate's autocast (system.dtype)
        if saved is not None:
            model = auto.from_config(transformers.AutoConfig.from_pretrained(str(saved))).float()
        elif name is not None:
            if adapt:
                _check_causal_architecture(transformers, name)
            model = auto.from_pretrained(name).float()
            rows = model.get_input_embeddings().weight.shape[0]
            if not causal and rows == vocab_size:  # its tokenizer had no mask: tokendiff appended one (id V)
                model.resize_token_embeddings(vocab_size + 1)
        else:
            path = Path(config).expanduser()
            cfg = (
                transformers.AutoConfig.from_pretrained(str(path.parent if path.name == "config.json" else path))
                if path.exists()
                else transformers.AutoConfig.from_pretrained(config)
            )
            cfg.vocab_size = vocab_size + 1
            model = auto.from_config(cfg).float()
    except TokenDiffError:  # a ValueError too: _check_causal_architecture's, already one line
        raise
    except (OSError, ValueError, KeyError) as exc:
        first = first_line(exc)
        raise TokenDiffError(
            f"{what}={str(source)!r} could not be loaded as a transformers "
            f"{'causal' if causal or adapt else 'masked'} LM ({first}); give a hub id (online), a folder written by "
            "save_pretrained, or download it first (huggingface-cli download NAME --local-dir <folder>)"
        ) from None
    if adapt:
        where = f"{what}={str(source)!r}" if saved is None else f"the checkpoint's model ({source})"
        check_adaptable(model, where)
    return model
