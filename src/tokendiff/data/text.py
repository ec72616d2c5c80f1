"""Text corpora as nanoGPT-style token files: ``train.bin`` / ``val.bin`` (uint16 or uint32 memmaps),
``meta.json`` and the tokenizer, in one prepared directory.

Documents (from files, a hub dataset or a known text: :mod:`tokendiff.data.sources`) become one token
stream per split. A tokenizer trained here (``char``, ``bpe``) encodes the documents joined by ``"\\n"``;
a pretrained one (``hf``) encodes each document alone and puts its EOS token between documents (the
tokens of ``"\\n"`` if it has none), so that a model sees where one document ends.

Which prepared directory a config means, and its cache key, is :mod:`tokendiff.data.corpora`'s.

Batches are drawn by position from a generator seeded by ``(seed, step)``, so a resumed run sees
exactly the batches it would have seen without the interruption.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tokendiff.atomic import staged_directory
from tokendiff.data.sources import Documents, LocalFiles, PlainText, split_documents
from tokendiff.data.tokenizers import load_tokenizer, train_tokenizer
from tokendiff.errors import TokenDiffError

__all__ = ["read_corpus", "prepare_text", "prepare_corpus", "TokenSplit", "PreparedText"]

MIN_DOCS_PER_PROCESS = 20_000  # documents per tokenizing process (tokenizing_processes)


def read_corpus(inputs: list[str | Path]) -> str:
    """The documents of ``data.input`` files joined by ``"\\n"``; a folder contributes its .txt (and
    .jsonl/.json/.parquet) files in sorted order. Documents of only whitespace are left out."""
    with tempfile.TemporaryDirectory() as work:
        return LocalFiles(inputs).load(Path(work))["all"].joined()


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
    """Tokenize one text into ``out_dir``: the last ``val_fraction`` of it is the validation split."""
    return prepare_corpus(PlainText(text), out_dir, tokenizer, vocab_size, val_fraction, min_tokens)


def check_val_fraction(val_fraction: float) -> None:
    """The share of a corpus held out for validation (the one home of this rule; the config calls it)."""
    if not 0.0 < val_fraction < 1.0:
        raise TokenDiffError(f"data.val_fraction={val_fraction} must lie in (0, 1), e.g. 0.1")


def prepare_corpus(
    source,
    out_dir: Path,
    tokenizer="char",
    vocab_size: int = 2048,
    val_fraction: float = 0.1,
    min_tokens: int = 2,
    num_proc: int | None = None,
) -> PreparedText:
    """Tokenize the documents of ``source`` (:mod:`tokendiff.data.sources`) into ``out_dir``.

    ``tokenizer``: ``"char"`` or ``"bpe"`` to train one here (characters: on all the text, so that the
    validation split holds no unknown character, as nanoGPT; BPE: on the training documents), or a
    tokenizer object to use as it is (a pretrained one, or a checkpoint's for zero-shot evaluation).

    ``meta.json`` records each split's ``tokens`` and ``chars``: the characters of its documents. The
    separators between documents (``"\\n"``, or a pretrained tokenizer's EOS) are tokens the model is
    scored on but not characters of any document, so bits per character divide by the text alone.

    The directory is built beside its final place and renamed in one step, so an interrupted
    preparation never leaves a half-written corpus behind.
    """
    check_val_fraction(val_fraction)
    out_dir = Path(out_dir)
    try:
        staged = staged_directory(out_dir)  # renamed into place (replacing an older one) once complete
    except OSError as exc:
        raise TokenDiffError(
            f"cannot write prepared data to {out_dir.parent} ({exc.strerror}); set TOKENDIFF_CACHE to a writable folder"
        ) from None
    with staged as tmp:
        work = tmp / ".work"  # Arrow files of datasets (read rows, token ids); removed before the rename
        train, val = split_documents(source.load(work), val_fraction)
        tok = tokenizer
        if isinstance(tokenizer, str):
            train_text = train.joined()
            # characters: the whole text's, so that validation holds no unknown one (nanoGPT); BPE: train only
            vocab_text = train_text + val.joined() if tokenizer == "char" else train_text
            tok = train_tokenizer(tokenizer, vocab_text, vocab_size)
        dtype = np.uint16 if tok.vocab_size < 2**16 else np.uint32
        splits = {}
        for name, docs in (("train", train), ("val", val)):
            n = write_tokens(docs, tok, tmp / f"{name}.bin", dtype, num_proc, work)
            if n < min_tokens:
                raise TokenDiffError(
                    f"the corpus is too short: its {name} split has {n} tokens but training "
                    f"needs at least {min_tokens} (model.block_size + 2); use more text or a smaller block_size"
                )
            splits[name] = {"tokens": n, "chars": int(docs.char_counts().sum())}
        tok.save(tmp)
        meta = {"tokenizer": tok.kind, "vocab_size": tok.vocab_size, "dtype": np.dtype(dtype).name, "splits": splits}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        shutil.rmtree(work, ignore_errors=True)
    return PreparedText(out_dir)


def tokenizing_processes(requested: int | None, n_docs: int) -> int:
    """Processes that tokenize ``n_docs`` documents: ``data.num_proc`` if set, else up to 4 (one per core),
    one per ``MIN_DOCS_PER_PROCESS`` documents, so a small corpus stays in this process. Workers pay off
    only on large corpora: each costs about 0.7 s to start (``datasets`` forks it and sends it the
    tokenizer, 1.5 MB for GPT-2), while one process encodes about 30k short documents a second with GPT-2
    (measured on one core), and the Rust tokenizer already spreads each batch over threads."""
    if requested:
        return max(1, min(requested, n_docs))
    return max(1, min(4, os.cpu_count() or 1, n_docs // MIN_DOCS_PER_PROCESS))


def _encode_rows(batch: dict, tok, separator: list[int]) -> dict:
    """``datasets.map`` function: each document's ids followed by the separator."""
    return {"ids": [ids + separator for ids in tok.encode_batch(batch["text"])]}


def write_tokens(docs: Documents, tok, path: Path, dtype, num_proc: int | None, work: Path) -> int:
    """Write the token stream of ``docs`` to ``path`` (raw ``dtype`` values); return its length.

    A pretrained tokenizer (``kind == "hf"``) encodes every document alone, in batches, with ``tok.eos_id``
    between documents (``encode("\\n")`` without one); in several processes through ``datasets.Dataset.map``
    for a large corpus (:func:`tokenizing_processes`). Tokenizers trained here encode the documents joined
    by ``"\\n"``, as one text.
    """
    if tok.kind != "hf":
        ids = np.asarray(tok.encode(docs.joined("\n")), dtype=dtype)
        ids.tofile(path)
        return len(ids)
    separator = [tok.eos_id] if tok.eos_id is not None else tok.encode("\n")
    n = 0
    with open(path, "wb") as f:
        processes = tokenizing_processes(num_proc, len(docs))
        if processes == 1:
            for texts in docs.batches():
                flat = [i for ids in tok.encode_batch(texts) for i in (*ids, *separator)]
                np.asarray(flat, dtype=dtype).tofile(f)
                n += len(flat)
        else:
            import pyarrow.compute as pc
            from datasets import Features, Sequence, Value  # Sequence: datasets < 4 has no List

            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the workers are the parallelism
            work.mkdir(parents=True, exist_ok=True)
            encoded = docs.dataset().map(
                _encode_rows,
                batched=True,
                fn_kwargs={"tok": tok, "separator": separator},
                remove_columns=["text"],
                features=Features({"ids": Sequence(Value("int32"))}),
                num_proc=processes,
                cache_file_name=str(work / f"{path.stem}-ids.arrow"),
                new_fingerprint=f"tokendiff-{tok.fingerprint()[:16]}-{path.stem}",
            )
            for table in encoded.with_format("arrow").iter(batch_size=10_000):
                flat = pc.list_flatten(table["ids"]).to_numpy().astype(dtype)
                flat.tofile(f)
                n += len(flat)
    if n:  # no separator after the last document
        n -= len(separator)
        os.truncate(path, n * np.dtype(dtype).itemsize)
    return n


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
