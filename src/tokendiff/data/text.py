"""Text corpora as nanoGPT-style token files: ``train.bin`` / ``val.bin`` (uint16 or uint32 memmaps),
``meta.json`` and the tokenizer, in one prepared directory.

Documents (from files, a hub dataset or a known text: :mod:`tokendiff.data.sources`) become one token
stream per split. A tokenizer trained here (``char``, ``bpe``) encodes the documents joined by ``"\\n"``;
a pretrained one (``hf``) encodes each document alone and puts its EOS token between documents (the
tokens of ``"\\n"`` if it has none), so that a model sees where one document ends.

Prepared directories are cached by content under :func:`cache_name`; names given with ``data.dataset``
are recorded in :mod:`tokendiff.data.names`.

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

from tokendiff.data.names import NamedCorpus, check_name, find_name, prepared_names, record_name, safe_name
from tokendiff.data.paths import KNOWN_FILES, data_dir, fetch, prepared_dir
from tokendiff.data.sources import Documents, HubDataset, LocalFiles, PlainText, split_documents
from tokendiff.data.tokenizers import load_tokenizer, train_tokenizer
from tokendiff.errors import TokenDiffError

__all__ = [
    "read_corpus",
    "prepare_text",
    "prepare_corpus",
    "TokenSplit",
    "resolve_dataset",
    "resolve_eval_corpus",
    "cache_name",
    "PreparedText",
]

DATASETS = {"shakespeare_char": ("tinyshakespeare", "char"), "shakespeare": ("tinyshakespeare", "bpe")}
RESERVED = {*DATASETS, "hf"}  # data.dataset values that never name a prepared corpus
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
    if not 0.0 < val_fraction < 1.0:
        raise TokenDiffError(f"data.val_fraction={val_fraction} must lie in (0, 1), e.g. 0.1")
    out_dir = Path(out_dir)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}-"))
    except OSError as exc:
        raise TokenDiffError(
            f"cannot write prepared data to {out_dir.parent} ({exc.strerror}); set TOKENDIFF_CACHE to a writable folder"
        ) from None
    work = tmp / ".work"  # Arrow files of datasets (read rows, token ids); removed before the rename
    try:
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
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
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


def cache_name(name: str, tokenizer, vocab_size: int, val_fraction: float, digest: str) -> str:
    """The prepared directory's name: ``{name}-{tokenizer}[-val{fraction}]-{digest}``.

    ``tokenizer``: ``char``, ``bpe-{vocab_size}`` (trained on the corpus, so the corpus digest fixes them),
    or ``{kind}-{fingerprint}`` for a given tokenizer object (pretrained, or a checkpoint's), so that two
    tokenizers never share a prepared corpus. ``digest``: the source's content (sources.py).
    """
    if isinstance(tokenizer, str):
        tok = f"{tokenizer}-{vocab_size}" if tokenizer == "bpe" else tokenizer
    else:
        tok = f"{tokenizer.kind}-{tokenizer.fingerprint()[:12]}"
    split = "" if val_fraction == 0.1 else f"-val{val_fraction:g}"  # the default keeps existing cache names
    return f"{name}-{tok}{split}-{digest}"


def _known_text(dataset: str, configured_data_dir: str | None) -> PlainText:
    path = fetch(KNOWN_FILES[DATASETS[dataset][0]], data_dir(configured_data_dir))
    return PlainText(path.read_text(encoding="utf-8"))


def _unknown(dataset: str) -> TokenDiffError:
    prepared = ", ".join(prepared_names()) or "none yet"
    return TokenDiffError(
        f"data.dataset={dataset!r} is unknown; use one of {sorted(DATASETS)}, a corpus prepared by name ({prepared}; "
        "tokendiff prepare data.input=<file or folder> data.dataset=<name>), or give data.input=<file or folder>"
    )


def _cached(root: Path, prepare) -> PreparedText:
    return PreparedText(root) if (root / "meta.json").exists() else prepare()


def resolve_dataset(
    dataset: str,
    inputs: list[str] | None,
    tokenizer: str,
    vocab_size: int,
    configured_data_dir: str | None,
    min_tokens: int,
    val_fraction: float = 0.1,
    *,
    text_column: str = "text",
    hf_path: str | None = None,
    hf_name: str | None = None,
    tokenizer_name: str | None = None,
    num_proc: int | None = None,
) -> PreparedText:
    """Find (or build, once) the prepared corpus for a config.

    ``dataset``: a known name (``shakespeare_char``, ``shakespeare``: their text and tokenizer, unless
    ``tokenizer="hf"`` overrides the tokenizer), ``hf`` (``hf_path``: a Hugging Face dataset), a name an
    earlier preparation recorded, or any name together with ``inputs`` (then recorded under it).
    ``tokenizer``: ``char`` | ``bpe`` (trained on the corpus) | ``hf`` (pretrained: ``tokenizer_name``).
    The cache key (:func:`cache_name`) holds the name, the tokenizer (kind and vocabulary size, or a
    pretrained tokenizer's fingerprint), the validation share and the source's content digest.
    """
    if inputs:
        source, name = LocalFiles(inputs, text_column), dataset
    elif dataset == "hf":
        source = HubDataset(hf_path, hf_name, text_column)
        name = "hf-" + safe_name(Path(hf_path).name + (f"-{hf_name}" if hf_name else ""))
    elif dataset in DATASETS:
        source, name = _known_text(dataset, configured_data_dir), dataset
        tokenizer = tokenizer if tokenizer == "hf" else DATASETS[dataset][1]  # a known dataset fixes its own
    else:
        named = find_name(dataset)
        if named is None:
            raise _unknown(dataset)
        prepared = _named_corpus(named, tokenizer, tokenizer_name, vocab_size, configured_data_dir, min_tokens)
        for split in ("train", "val"):
            prepared.split(split).check_length(min_tokens)
        return prepared
    record = bool(inputs) and dataset not in RESERVED
    if record:
        check_name(dataset)  # before the work of preparing
    tok = tokenizer
    if tokenizer == "hf":
        from tokendiff.data.hf_tokenizer import HFTokenizer

        tok = HFTokenizer.from_name(tokenizer_name, data_dir(configured_data_dir))
    root = prepared_dir() / cache_name(name, tok, vocab_size, val_fraction, source.digest())
    prepared = _cached(root, lambda: prepare_corpus(source, root, tok, vocab_size, val_fraction, min_tokens, num_proc))
    for split in ("train", "val"):
        prepared.split(split).check_length(min_tokens)
    if record:
        settings = {
            "input": [str(Path(i).expanduser().resolve()) for i in inputs],
            "text_column": text_column,
            "tokenizer": tokenizer,
            "tokenizer_name": _absolute_if_path(tokenizer_name),
            "vocab_size": vocab_size,
            "val_fraction": val_fraction,
        }
        record_name(dataset, root, settings)
    return prepared


def _absolute_if_path(name: str | None) -> str | None:
    """A tokenizer name as recorded: a file or folder by its absolute path, a hub id (or gpt2) as given."""
    return str(Path(name).expanduser().resolve()) if name and Path(name).expanduser().exists() else name


def _named_corpus(
    named: NamedCorpus, tokenizer: str, tokenizer_name, vocab_size: int, configured_data_dir, min_tokens: int
) -> PreparedText:
    """The corpus recorded under a name; prepared again from its recorded settings if the cache lost it."""
    s = named.settings
    asked = (tokenizer, _absolute_if_path(tokenizer_name), vocab_size if tokenizer == "bpe" else None)
    recorded = (s["tokenizer"], s["tokenizer_name"], s["vocab_size"] if s["tokenizer"] == "bpe" else None)
    if tokenizer != "char" and asked != recorded:  # char is the default: only bpe and hf are asked for on purpose
        raise TokenDiffError(
            f"data.dataset={named.name!r} was prepared with data.tokenizer={s['tokenizer']}"
            + (f" data.tokenizer_name={s['tokenizer_name']}" if s["tokenizer_name"] else "")
            + (f" data.vocab_size={s['vocab_size']}" if s["tokenizer"] == "bpe" else "")
            + f"; drop the data.tokenizer settings, or prepare it again with them (tokendiff prepare "
            f"data.input=<file or folder> data.dataset={named.name} data.tokenizer=...)"
        )
    if named.exists:
        return PreparedText(named.root)
    missing = [i for i in s["input"] if not Path(i).exists()]
    if missing:
        raise TokenDiffError(
            f"data.dataset={named.name!r}: its prepared files ({named.root}) are gone and so is {missing[0]}, "
            "which it was prepared from; prepare it again (tokendiff prepare data.input=<file or folder> "
            f"data.dataset={named.name})"
        )
    return resolve_dataset(
        named.name,
        s["input"],
        s["tokenizer"],
        s["vocab_size"],
        configured_data_dir,
        min_tokens,
        s["val_fraction"],
        text_column=s["text_column"],
        tokenizer_name=s["tokenizer_name"],
    )


def resolve_eval_corpus(
    spec: str,
    tokenizer,
    configured_data_dir: str | None,
    text_column: str = "text",
    val_fraction: float = 0.1,
    num_proc: int | None = None,
) -> PreparedText:
    """``eval.data``: the corpus ``spec`` names, tokenized with ``tokenizer`` (a checkpoint's), for zero-shot
    evaluation. ``spec``: a prepared corpus's name, a known dataset, or a file or folder (read as
    ``data.input`` is, with ``text_column`` and ``val_fraction``).

    A named corpus prepared with this very tokenizer is used as it is; otherwise the documents are
    tokenized with ``tokenizer`` (never a tokenizer trained on them) into a directory cached under the
    tokenizer's fingerprint (:func:`cache_name`).
    """
    named = find_name(spec)
    if named is not None:
        if named.exists and PreparedText(named.root).tokenizer().fingerprint() == tokenizer.fingerprint():
            return PreparedText(named.root)
        s = named.settings
        source, name, val_fraction = LocalFiles(s["input"], s["text_column"]), spec, s["val_fraction"]
    elif spec in DATASETS:
        source, name = _known_text(spec, configured_data_dir), spec
    elif Path(spec).expanduser().exists():
        source, name = LocalFiles([spec], text_column), safe_name(Path(spec).expanduser().resolve().stem)
    else:
        raise TokenDiffError(
            f"eval.data={spec!r} is neither a corpus prepared by name ({', '.join(prepared_names()) or 'none yet'}), "
            f"a known dataset ({', '.join(sorted(DATASETS))}) nor a file or folder that exists"
        )
    root = prepared_dir() / cache_name(name, tokenizer, 0, val_fraction, source.digest())
    return _cached(root, lambda: prepare_corpus(source, root, tokenizer, 0, val_fraction, 1, num_proc))
