"""Tokenizers: characters, or byte-level BPE trained on the corpus with Hugging Face ``tokenizers``;
pretrained ones from ``transformers`` live in :mod:`tokendiff.data.hf_tokenizer`.

All save into a directory and load back with :func:`load_tokenizer`, so a checkpoint carries its
own tokenizer. The character tokenizer is written by hand because ``tokenizers`` has no model that
maps each character to one id *and* rejects characters it never saw (its WordLevel model would
silently map them to an unknown token, which corrupts prompts without a word).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tokendiff.errors import TokenDiffError

__all__ = ["CharTokenizer", "BPETokenizer", "BinaryImageTokenizer", "load_tokenizer", "train_tokenizer"]

CHAR_FILE = "char_tokenizer.json"
BPE_FILE = "tokenizer.json"
IMAGE_FILE = "image_tokenizer.json"


class CharTokenizer:
    """One id per distinct character of the training text, in sorted order (nanoGPT's shakespeare_char).

    >>> tok = CharTokenizer.train("hello")
    >>> tok.encode("hole"), tok.vocab_size
    ([1, 3, 2, 0], 4)
    """

    eos_id: int | None = None  # no end-of-text token: a sample runs to its length

    kind = "char"

    def __init__(self, chars: list[str]):
        self.chars = list(chars)
        self.stoi = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def train(cls, text: str, vocab_size: int | None = None) -> "CharTokenizer":
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        unknown = sorted(set(text) - self.stoi.keys())
        if unknown:
            raise TokenDiffError(
                f"characters {''.join(unknown)!r} of {text[:40]!r} are not in this model's vocabulary; "
                "remove them (the model knows: " + repr("".join(self.chars))[:80] + ")"
            )
        return [self.stoi[c] for c in text]

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def fingerprint(self) -> str:
        """sha256 of the vocabulary: equal fingerprints encode every text the same way."""
        return hashlib.sha256(json.dumps(self.chars).encode()).hexdigest()

    def save(self, directory: Path) -> None:
        (Path(directory) / CHAR_FILE).write_text(json.dumps({"type": "char", "chars": self.chars}))

    @classmethod
    def load(cls, directory: Path) -> "CharTokenizer":
        path = Path(directory) / CHAR_FILE
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise TokenDiffError(f"{path} is damaged ({exc}); put back the file saved with the checkpoint") from None
        chars = data.get("chars") if isinstance(data, dict) else None
        if (
            not isinstance(data, dict)
            or data.get("type") != "char"
            or not isinstance(chars, list)
            or not all(isinstance(c, str) and len(c) == 1 for c in chars)
            or len(set(chars)) != len(chars)
        ):
            raise TokenDiffError(f"{path} is not a tokendiff character tokenizer; put back the file saved with it")
        return cls(chars)


class BPETokenizer:
    """Byte-level BPE (GPT-2 style) trained on the corpus; every string is encodable."""

    eos_id: int | None = None  # no end-of-text token: a sample runs to its length

    kind = "bpe"

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    @classmethod
    def train(cls, text: str, vocab_size: int = 2048) -> "BPETokenizer":
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        if vocab_size < 257:
            raise TokenDiffError(
                f"data.vocab_size={vocab_size} is too small for byte-level BPE (needs > 256); try 2048"
            )
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        lines = text.splitlines(keepends=True)
        tok.train_from_iterator((lines[i : i + 1000] for i in range(0, len(lines), 1000)), trainer)
        return cls(tok)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids

    def decode(self, ids) -> str:
        return self.tokenizer.decode([int(i) for i in ids])

    def fingerprint(self) -> str:
        """sha256 of the serialized tokenizer (vocabulary, merges, normalization)."""
        return hashlib.sha256(self.tokenizer.to_str().encode()).hexdigest()

    def save(self, directory: Path) -> None:
        self.tokenizer.save(str(Path(directory) / BPE_FILE))

    @classmethod
    def load(cls, directory: Path) -> "BPETokenizer":
        from tokenizers import Tokenizer

        try:
            return cls(Tokenizer.from_file(str(Path(directory) / BPE_FILE)))
        except Exception as exc:  # tokenizers raises a bare Exception on a bad file
            raise TokenDiffError(f"{directory / BPE_FILE} is not a valid tokenizer file ({exc})") from None


class BinaryImageTokenizer:
    """Binary images as pixel tokens: 0 and 1 (the mask is id 2). ``decode`` draws ASCII art, so that
    image samples show up readably in logs; there is no text to encode."""

    eos_id: int | None = None  # no end-of-text token: a sample runs to its length

    kind = "binary_image"
    vocab_size = 2

    def __init__(self, height: int = 28, width: int = 28):
        self.height, self.width = height, width

    def encode(self, text: str) -> list[int]:
        raise TokenDiffError(
            "an image model takes no text prompt; use sampling.inpaint=true to complete corrupted images"
        )

    def decode(self, ids) -> str:
        glyphs = {0: ".", 1: "#"}
        flat = [glyphs.get(int(i), "?") for i in ids]
        return "\n".join("".join(flat[r * self.width : (r + 1) * self.width]) for r in range(self.height))

    def fingerprint(self) -> str:
        return hashlib.sha256(f"binary_image:{self.height}x{self.width}".encode()).hexdigest()

    def save(self, directory: Path) -> None:
        data = {"type": self.kind, "height": self.height, "width": self.width}
        (Path(directory) / IMAGE_FILE).write_text(json.dumps(data))

    @classmethod
    def load(cls, directory: Path) -> "BinaryImageTokenizer":
        path = Path(directory) / IMAGE_FILE
        try:
            data = json.loads(path.read_text())
            return cls(int(data["height"]), int(data["width"]))
        except (ValueError, TypeError, KeyError) as exc:  # not JSON, not UTF-8, not {"height": int, "width": int}
            raise TokenDiffError(f"{path} is damaged ({exc!r}); put back the file saved with the checkpoint") from None


TOKENIZERS = {"char": CharTokenizer, "bpe": BPETokenizer}


def train_tokenizer(kind: str, text: str, vocab_size: int):
    if kind not in TOKENIZERS:
        raise TokenDiffError(f"data.tokenizer={kind!r} is unknown; use one of {sorted(TOKENIZERS)}")
    return TOKENIZERS[kind].train(text, vocab_size)


def load_tokenizer(directory):
    """Load whichever tokenizer ``directory`` holds."""
    from tokendiff.data.hf_tokenizer import HF_CONFIG_FILE, HFTokenizer

    directory = Path(directory)
    if (directory / HF_CONFIG_FILE).exists():  # before BPE_FILE: save_pretrained writes a tokenizer.json too
        return HFTokenizer.load(directory)
    if (directory / CHAR_FILE).exists():
        return CharTokenizer.load(directory)
    if (directory / BPE_FILE).exists():
        return BPETokenizer.load(directory)
    if (directory / IMAGE_FILE).exists():
        return BinaryImageTokenizer.load(directory)
    raise TokenDiffError(
        f"no tokenizer in {directory} (expected {CHAR_FILE}, {BPE_FILE} or {IMAGE_FILE}); "
        "was this directory written by tokendiff?"
    )
