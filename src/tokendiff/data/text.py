"""Text corpora as nanoGPT-style token files: ``train.bin`` / ``val.bin`` (uint16 or uint32 memmaps),
``meta.json`` and the tokenizer, in one prepared directory.

Batches are drawn by position from a generator seeded by ``(seed, step)``, so a resumed run sees
exactly the batches it would have seen without the interruption.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tokendiff.data.paths import KNOWN_FILES, data_dir, fetch, prepared_dir
from tokendiff.data.tokenizers import load_tokenizer, train_tokenizer
from tokendiff.errors import TokenDiffError

__all__ = ["read_corpus", "prepare_text", "TokenSplit", "resolve_dataset", "PreparedText"]

DATASETS = {"shakespeare_char": ("tinyshakespeare", "char"), "shakespeare": ("tinyshakespeare", "bpe")}


def read_corpus(inputs: list[str | Path]) -> str:
    """Concatenate text files; a directory contributes its ``*.txt`` files in sorted order."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            found = sorted(path.rglob("*.txt"))
            if not found:
                raise TokenDiffError(f"folder {path} has no .txt files; point data.input at text files")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise TokenDiffError(f"data.input {str(path)!r} does not exist; give a text file or a folder")
    parts = []
    for f in files:
        try:
            parts.append(f.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise TokenDiffError(f"{f} is not UTF-8 text; convert it (e.g. iconv -t utf-8)") from None
    return "\n".join(parts)


@dataclass
class PreparedText:
    """A prepared corpus directory."""

    root: Path

    @property
    def meta(self) -> dict:
        return json.loads((self.root / "meta.json").read_text())

    def split(self, name: str) -> "TokenSplit":
        meta = self.meta
        if name not in meta["splits"]:
            raise TokenDiffError(f"split {name!r} does not exist; use one of {sorted(meta['splits'])}")
        return TokenSplit(self.root / f"{name}.bin", np.dtype(meta["dtype"]), meta["splits"][name])

    def tokenizer(self):
        return load_tokenizer(self.root)


def prepare_text(
    text: str,
    out_dir: Path,
    tokenizer: str = "char",
    vocab_size: int = 2048,
    val_fraction: float = 0.1,
    min_tokens: int = 2,
) -> PreparedText:
    """Tokenize ``text`` into ``out_dir``: the last ``val_fraction`` of the text is the validation split.

    The directory is built beside its final place and renamed in one step, so an interrupted
    preparation never leaves a half-written corpus behind.
    """
    if not 0.0 < val_fraction < 1.0:
        raise TokenDiffError(f"data.val_fraction={val_fraction} must lie in (0, 1), e.g. 0.1")
    cut = int(len(text) * (1.0 - val_fraction))
    train_text, val_text = text[:cut], text[cut:]
    # Characters: the vocabulary is the whole text's (nanoGPT), else val would hold unknown chars.
    tok = train_tokenizer(tokenizer, text if tokenizer == "char" else train_text, vocab_size)
    dtype = np.uint16 if tok.vocab_size < 2**16 else np.uint32
    splits = {}
    out_dir = Path(out_dir)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}-"))
    except OSError as exc:
        raise TokenDiffError(
            f"cannot write prepared data to {out_dir.parent} ({exc.strerror}); set TOKENDIFF_CACHE to a writable folder"
        ) from None
    try:
        for name, part in (("train", train_text), ("val", val_text)):
            ids = np.asarray(tok.encode(part), dtype=dtype)
            if len(ids) < min_tokens:
                raise TokenDiffError(
                    f"the corpus is too short: its {name} split has {len(ids)} tokens but training "
                    f"needs at least {min_tokens} (model.block_size + 1); use more text or a smaller block_size"
                )
            ids.tofile(tmp / f"{name}.bin")
            splits[name] = {"tokens": int(len(ids)), "chars": len(part)}
        tok.save(tmp)
        meta = {"tokenizer": tok.kind, "vocab_size": tok.vocab_size, "dtype": np.dtype(dtype).name, "splits": splits}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return PreparedText(out_dir)


class TokenSplit:
    """A memory-mapped token file with random batches and deterministic evaluation windows."""

    def __init__(self, path: Path, dtype: np.dtype, info: dict):
        self.path = path
        self.tokens = np.memmap(path, dtype=dtype, mode="r")
        self.info = info

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def chars_per_token(self) -> float:
        return self.info["chars"] / max(self.info["tokens"], 1)

    def epoch_size(self, seq_len: int) -> int:
        """Sequences in one pass over the split."""
        return len(self) // seq_len

    def check_length(self, seq_len: int) -> None:
        if len(self) < seq_len:
            raise TokenDiffError(
                f"{self.path.name} has {len(self)} tokens, fewer than one sequence of {seq_len}; "
                "use more text or a smaller model.block_size"
            )

    def batch(self, batch_size: int, seq_len: int, generator: torch.Generator) -> torch.Tensor:
        """``batch_size`` windows of ``seq_len`` tokens at random offsets, (B, seq_len) int64."""
        starts = torch.randint(0, len(self) - seq_len + 1, (batch_size,), generator=generator)
        return torch.from_numpy(np.stack([self.tokens[s : s + seq_len] for s in starts.tolist()]).astype(np.int64))

    def windows(self, seq_len: int, max_windows: int | None = None) -> torch.Tensor:
        """Non-overlapping windows from the start, (N, seq_len) int64: the evaluation set."""
        n = len(self) // seq_len
        if max_windows:
            n = min(n, max_windows)
        return torch.from_numpy(np.asarray(self.tokens[: n * seq_len], dtype=np.int64).reshape(n, seq_len))


def resolve_dataset(
    dataset: str,
    inputs: list[str] | None,
    tokenizer: str,
    vocab_size: int,
    configured_data_dir: str | None,
    min_tokens: int,
    val_fraction: float = 0.1,
) -> PreparedText:
    """Find (or build, once) the prepared corpus for a config.

    ``dataset``: a known name (``shakespeare_char``, ``shakespeare``), or ``custom`` with ``inputs``.
    The cache key holds the text's sha256, the tokenizer kind, the vocabulary size and the validation share.
    """
    if inputs:
        text = read_corpus(inputs)
    elif dataset in DATASETS:
        remote, tokenizer = KNOWN_FILES[DATASETS[dataset][0]], DATASETS[dataset][1]
        text = fetch(remote, data_dir(configured_data_dir)).read_text(encoding="utf-8")
    else:
        raise TokenDiffError(
            f"data.dataset={dataset!r} is unknown; use one of {sorted(DATASETS)} or give data.input=<file or folder>"
        )
    if not text.strip():
        raise TokenDiffError("the corpus is empty; give data.input a file or folder with text in it")
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
    size = f"-{vocab_size}" if tokenizer == "bpe" else ""
    split = "" if val_fraction == 0.1 else f"-val{val_fraction:g}"  # the default keeps existing cache names
    root = prepared_dir() / f"{dataset}-{tokenizer}{size}{split}-{digest}"
    if (root / "meta.json").exists():
        prepared = PreparedText(root)
    else:
        prepared = prepare_text(text, root, tokenizer, vocab_size, val_fraction=val_fraction, min_tokens=min_tokens)
    for split in ("train", "val"):
        prepared.split(split).check_length(min_tokens)
    return prepared
