"""Pretrained tokenizers from Hugging Face ``transformers`` (``data.tokenizer=hf``), in tokendiff's id space.

tokendiff's kernels put the mask at id ``V`` (the vocabulary size) and never predict it. A pretrained
tokenizer has its mask (if any) somewhere inside its vocabulary (BERT: 103 of 30522), so this class
renumbers: tokendiff id ``i`` is tokenizer id ``i`` below the tokenizer's mask id ``m`` and ``i + 1``
above it, and tokendiff's mask ``V`` is ``m``. A tokenizer without a mask (GPT-2) gets one appended as a
special token (``<|mask|>``): ``m = V`` and the renumbering is the identity; the tokenizer saved with a
checkpoint has it, so model and tokenizer agree for transformers users too.
:class:`~tokendiff.models.hf.HFMaskedLM` applies the same map to a transformers backbone, so it sees the
ids it was trained with.

Where a name comes from (``data.tokenizer_name``):

- ``gpt2``: OpenAI's GPT-2 BPE files (``encoder.json``, ``vocab.bpe``) under the data directory,
  downloaded with checksums when missing (``tokendiff.data.paths``), so it works offline;
- a ``tokenizer.json`` file (the ``tokenizers`` format);
- a folder with ``encoder.json`` and ``vocab.bpe`` (the GPT-2 release layout);
- a folder written by ``save_pretrained`` or a hub id (``bert-base-uncased``), through ``AutoTokenizer``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from tokendiff.errors import TokenDiffError, first_line
from tokendiff.extras import require

__all__ = ["HFTokenizer", "HF_CONFIG_FILE"]

APPENDED_MASK = "<|mask|>"
HF_CONFIG_FILE = "tokenizer_config.json"  # written by save_pretrained: marks a directory as holding one


def _gpt2(encoder: Path, merges: Path):
    transformers = require("transformers", "data.tokenizer=hf")
    return transformers.GPT2Tokenizer(vocab=str(encoder), merges=str(merges))


class HFTokenizer:
    """A ``transformers`` tokenizer with tokendiff's ids (mask last; see the module docstring)."""

    kind = "hf"

    def __init__(self, tokenizer, name: str | None = None):
        self.tokenizer = tokenizer
        self.name = name or getattr(tokenizer, "name_or_path", "") or "hf"
        if tokenizer.mask_token_id is None:
            tokenizer.add_special_tokens({"mask_token": APPENDED_MASK})  # id len(tokenizer) - 1 = V
        self.hf_mask_id = int(tokenizer.mask_token_id)  # the mask's id on the tokenizer's side
        self.vocab_size = len(tokenizer) - 1  # V: real tokens; tokendiff's mask is V
        eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
        self.eos_id = None if eos is None or eos == self.hf_mask_id else self._from_hf_id(int(eos))

    # ---------------------------------------------------------------- loading
    @classmethod
    def from_name(cls, name: str, data_root: Path | None = None) -> "HFTokenizer":
        """The tokenizer ``data.tokenizer_name`` names (see the module docstring for the forms)."""
        transformers = require("transformers", "data.tokenizer=hf")
        path = Path(name).expanduser()
        if name == "gpt2" and data_root is not None:
            from tokendiff.data.paths import KNOWN_FILES, fetch

            encoder = fetch(KNOWN_FILES["gpt2_encoder"], data_root)
            return cls(_gpt2(encoder, fetch(KNOWN_FILES["gpt2_merges"], data_root)), "gpt2")
        if path.is_file():
            try:
                return cls(transformers.PreTrainedTokenizerFast(tokenizer_file=str(path)), str(path))
            except Exception as exc:  # tokenizers raises a bare Exception on a bad file
                raise TokenDiffError(f"data.tokenizer_name={name!r} is not a tokenizer.json file ({exc})") from None
        if (path / "encoder.json").is_file() and (path / "vocab.bpe").is_file():
            return cls(_gpt2(path / "encoder.json", path / "vocab.bpe"), str(path))
        try:
            return cls(transformers.AutoTokenizer.from_pretrained(name), name)
        except (OSError, ValueError) as exc:
            first = first_line(exc)
            raise TokenDiffError(
                f"data.tokenizer_name={name!r} could not be loaded ({first}); give a hub id (online), a folder "
                "written by save_pretrained, a tokenizer.json file, or download it first "
                f"(huggingface-cli download {name} --local-dir <folder>) and name the folder"
            ) from None

    def save(self, directory: Path) -> None:
        self.tokenizer.save_pretrained(str(directory))

    @classmethod
    def load(cls, directory: Path) -> "HFTokenizer":
        transformers = require("transformers", "a checkpoint with a Hugging Face tokenizer")
        try:
            return cls(transformers.AutoTokenizer.from_pretrained(str(directory)))
        except Exception as exc:  # a damaged file surfaces as many kinds of error
            raise TokenDiffError(
                f"the tokenizer in {directory} is damaged ({type(exc).__name__}); put back the files saved with it"
            ) from None

    # ---------------------------------------------------------------- ids
    def _from_hf_id(self, h: int) -> int:
        return self.vocab_size if h == self.hf_mask_id else h - (h > self.hf_mask_id)

    def to_hf(self, ids: torch.Tensor) -> torch.Tensor:
        """tokendiff ids (mask = V) -> the tokenizer's ids (mask = its own)."""
        m = self.hf_mask_id
        return torch.where(ids == self.vocab_size, m, ids + (ids >= m).long())

    def encode(self, text: str, specials: bool = False) -> list[int]:
        """Ids of ``text``; ``specials``: read the tokenizer's special tokens in it as tokens (a chat template's
        output), not as text."""
        if specials:
            hf = self.tokenizer(text, add_special_tokens=False, split_special_tokens=False, verbose=False)["input_ids"]
            return self.from_hf_ids(hf)
        return self.encode_batch([text])[0]

    def from_hf_ids(self, ids: list[int]) -> list[int]:
        """The tokenizer's own ids (e.g. a chat template's, special tokens included) -> tokendiff ids."""
        return [self._from_hf_id(int(h)) for h in ids]

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """``encode`` of each text, in one call of the (Rust) tokenizer, which encodes a batch on several threads."""
        # split_special_tokens: a literal "[MASK]" or "<|endoftext|>" in the text stays text
        batch = self.tokenizer(texts, add_special_tokens=False, split_special_tokens=True, verbose=False)["input_ids"]
        m = self.hf_mask_id
        if m >= len(self.tokenizer):  # the mask was appended after the vocabulary: ids are unchanged
            return batch
        return [[h - (h > m) for h in ids] for ids in batch]

    def decode(self, ids) -> str:
        hf = self.to_hf(torch.as_tensor([int(i) for i in ids], dtype=torch.long)).tolist()
        return self.tokenizer.decode(hf, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def fingerprint(self) -> str:
        """sha256 of the serialized tokenizer and the mask placement."""
        backend_tokenizer = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend_tokenizer is not None:
            backend = backend_tokenizer.to_str()
        else:  # a tokenizer without a Rust backend (ByT5, CANINE): its class, vocabulary and special tokens
            vocab = sorted(self.tokenizer.get_vocab().items())
            backend = json.dumps([type(self.tokenizer).__name__, vocab, self.tokenizer.all_special_tokens])
        extra = json.dumps({"mask": self.hf_mask_id, "vocab": self.vocab_size})
        return hashlib.sha256((backend + extra).encode()).hexdigest()
