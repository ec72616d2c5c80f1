"""Where the documents of a text corpus come from, and how they are split into train and validation.

A source is one of

- :class:`LocalFiles` (``data.input``): ``.txt`` files are one document each; ``.jsonl`` / ``.json`` /
  ``.parquet`` files hold one document per row, in the column ``data.text_column``, read with
  ``datasets.load_dataset("json" | "parquet")``; a folder contributes all such files, sorted by path;
- :class:`HubDataset` (``data.dataset=hf``): ``datasets.load_dataset(data.hf_path, data.hf_name)``, or
  ``load_from_disk`` for a folder written by ``save_to_disk``;
- :class:`PlainText`: one text already read (the known datasets, e.g. Tiny Shakespeare).

Each has a ``digest`` (what its prepared corpus is cached under: the files' bytes, or the dataset's
fingerprint) and ``load(workdir)``, which returns its documents by split: ``{"train": ..., "val": ...}``
when the source has a validation split of its own, else ``{"all": ...}`` for :func:`split_documents`
to cut. Documents that are empty or only whitespace are dropped (JSON rows of ``null`` too).

Reading JSON and Parquet, and hub datasets, needs ``datasets`` (``pip install 'tokendiff[hf]'``);
plain text does not.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from itertools import groupby
from pathlib import Path

import numpy as np

from tokendiff.data.paths import sha256_of
from tokendiff.errors import TokenDiffError
from tokendiff.extras import require

__all__ = ["Documents", "LocalFiles", "HubDataset", "PlainText", "split_documents", "val_start", "corpus_files"]

ROW_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}  # suffix -> datasets builder
SUFFIXES = (".txt", *ROW_FORMATS)
VAL_SPLITS = ("validation", "valid", "val", "test")  # a hub dataset's validation split, in order of preference


def _datasets(why: str):
    """``import datasets``, quiet: its progress bars and logged errors would break the one-line errors
    (what went wrong reaches the user in the error tokendiff raises)."""
    datasets = require("datasets", why)
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    return datasets


def _first_line(exc: Exception) -> str:
    """The first line of an error's message; for datasets' generic DatasetGenerationError, its cause's."""
    if type(exc).__name__ == "DatasetGenerationError" and (exc.__cause__ or exc.__context__):
        exc = exc.__cause__ or exc.__context__
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else type(exc).__name__


class Documents:
    """Documents in order: a list of strings, or the ``"text"`` column of a ``datasets.Dataset``."""

    def __init__(self, items):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def batches(self, size: int = 1000) -> Iterator[list[str]]:
        if isinstance(self.items, list):
            for i in range(0, len(self.items), size):
                yield self.items[i : i + size]
        else:
            for batch in self.items.iter(batch_size=size):
                yield batch["text"]

    def char_counts(self) -> np.ndarray:
        """Characters (code points) of each document, (N,) int64."""
        if isinstance(self.items, list):
            return np.fromiter((len(t) for t in self.items), dtype=np.int64, count=len(self.items))
        import pyarrow.compute as pc

        arrow = self.items.with_format("arrow")
        parts = [pc.utf8_length(t["text"]).to_numpy(zero_copy_only=False) for t in arrow.iter(batch_size=10_000)]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)

    def text(self, i: int) -> str:
        return self.items[i] if isinstance(self.items, list) else self.items[i]["text"]

    def slice(self, start: int, stop: int) -> "Documents":
        if isinstance(self.items, list):
            return Documents(self.items[start:stop])
        return Documents(self.items.select(range(start, stop)))  # contiguous: a view, no copy

    def joined(self, separator: str = "\n") -> str:
        return separator.join(t for batch in self.batches() for t in batch)

    def dataset(self):
        """As a ``datasets.Dataset`` with one column, ``text``."""
        if isinstance(self.items, list):
            return _datasets("tokenizing in several processes (data.num_proc)").Dataset.from_dict({"text": self.items})
        return self.items


def _without_blank(ds):
    """``ds`` without rows whose text is null, empty or only whitespace."""
    import pyarrow.compute as pc

    keep = [
        pc.fill_null(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(t["text"])), 0), False).to_numpy(
            zero_copy_only=False
        )
        for t in ds.with_format("arrow").iter(batch_size=10_000)
    ]
    keep = np.concatenate(keep) if keep else np.zeros(0, dtype=bool)
    return ds if keep.all() else ds.select(np.flatnonzero(keep), keep_in_memory=True)


def _text_column(ds, column: str, where: str, datasets):
    """The column ``column`` of ``ds`` alone, named ``text``; a one-line error if it is missing or not text."""
    if column not in ds.column_names:
        raise TokenDiffError(
            f"{where} has no column {column!r}; its columns are {', '.join(ds.column_names)}: "
            "set data.text_column=<the one with the text>"
        )
    feature = ds.features[column]
    if not (isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")):
        raise TokenDiffError(
            f"column {column!r} of {where} holds {feature}, not text; set data.text_column=<a text column>"
        )
    ds = ds.select_columns([column])
    ds = ds if column == "text" else ds.rename_column(column, "text")
    # one string type for every source, so that files of several kinds concatenate (polars writes Parquet
    # text as large_string, JSON lines and .txt give string)
    return ds.cast_column("text", datasets.Value("string")) if feature.dtype != "string" else ds


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise TokenDiffError(f"{path} is not UTF-8 text; convert it (e.g. iconv -t utf-8)") from None


def _format(path: Path) -> str:
    """``text`` or the ``datasets`` builder that reads ``path``; any file not .jsonl/.json/.parquet is text."""
    return ROW_FORMATS.get(path.suffix.lower(), "text")


def corpus_files(inputs: list[str | Path]) -> list[Path]:
    """The files ``data.input`` names: files as given, a folder's .txt/.jsonl/.json/.parquet files sorted."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())
            if not found:
                raise TokenDiffError(
                    f"folder {path} has no .txt files (nor .jsonl, .json or .parquet); point data.input at text files"
                )
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise TokenDiffError(
                f"data.input {str(path)!r} does not exist; give a .txt, .jsonl, .json or .parquet file or a folder"
            )
    return files


class LocalFiles:
    """``data.input``: text, JSON lines, JSON or Parquet files (see the module docstring)."""

    def __init__(self, inputs: list[str | Path], text_column: str = "text"):
        self.files = corpus_files(inputs)
        self.text_column = text_column

    def digest(self) -> str:
        """sha256 of the contents (not the paths): one text file's own sha256 (as before this module
        existed), else of every file's sha256 and format in order, and the text column."""
        if len(self.files) == 1 and _format(self.files[0]) == "text":
            return sha256_of(self.files[0])[:12]
        lines = [f"column={self.text_column}"] + [f"{_format(f)}:{sha256_of(f)}" for f in self.files]
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:12]

    def load(self, workdir: Path) -> dict[str, Documents]:
        """All files' documents in order, as ``{"all": ...}``; ``datasets`` writes its Arrow files under ``workdir``."""
        runs = [(fmt, list(group)) for fmt, group in groupby(self.files, key=_format)]
        if all(fmt == "text" for fmt, _ in runs):
            return {"all": Documents([t for t in map(_read_text, self.files) if t.strip()])}
        datasets = _datasets(f"reading {', '.join(sorted({f.suffix for f in self.files if _format(f) != 'text'}))}")
        parts = []
        for fmt, group in runs:
            if fmt == "text":
                parts.append(datasets.Dataset.from_dict({"text": [_read_text(f) for f in group]}))
                continue
            where = str(group[0]) if len(group) == 1 else f"{group[0]} (and {len(group) - 1} more)"
            try:
                ds = datasets.load_dataset(
                    fmt, data_files=[str(f) for f in group], split="train", cache_dir=str(workdir / "datasets")
                )
            except Exception as exc:  # a malformed file surfaces as many kinds of error
                raise TokenDiffError(f"{where} cannot be read as {fmt} rows ({_first_line(exc)})") from None
            parts.append(_text_column(ds, self.text_column, where, datasets))
        ds = datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
        return {"all": Documents(_without_blank(ds))}


class HubDataset:
    """``data.dataset=hf``: a Hugging Face dataset by name (hub or its local cache), a local folder of data
    files, or a folder written by ``save_to_disk``. Its ``train`` split, and its ``validation`` (else
    ``test``) split when it has one."""

    def __init__(self, path: str, name: str | None = None, text_column: str = "text"):
        self.path, self.name, self.text_column = path, name, text_column
        self._splits: dict | None = None
        self._fingerprints: list = []

    def _load(self) -> dict:
        if self._splits is not None:
            return self._splits
        datasets = _datasets("data.dataset=hf")
        where = f"data.hf_path={self.path!r}" + (f" data.hf_name={self.name!r}" if self.name else "")
        local = Path(self.path).expanduser()
        try:
            if (local / "dataset_dict.json").is_file() or (local / "state.json").is_file():
                loaded = datasets.load_from_disk(str(local))
            else:
                loaded = datasets.load_dataset(self.path, self.name)
        except Exception as exc:  # offline, not found, a bad configuration name: many kinds of error
            raise TokenDiffError(
                f"{where} could not be loaded ({_first_line(exc)}); without internet, download it where there "
                f"is (huggingface-cli download --repo-type dataset {self.path} --local-dir <folder>) and give "
                "data.hf_path=<folder>, or give data.input=<folder of .parquet/.jsonl files>, which reads offline"
            ) from None
        if isinstance(loaded, datasets.Dataset):
            splits = {"all": loaded}
        elif "train" not in loaded:
            raise TokenDiffError(f"{where} has the splits {sorted(loaded)} but no train split")
        else:
            val = next((s for s in VAL_SPLITS if s in loaded), None)
            splits = {"train": loaded["train"], "val": loaded[val]} if val else {"all": loaded["train"]}
        self._fingerprints = sorted((k, ds._fingerprint) for k, ds in splits.items())
        columns = {k: _text_column(ds, self.text_column, where, datasets) for k, ds in splits.items()}
        self._splits = {k: Documents(_without_blank(ds)) for k, ds in columns.items()}
        return self._splits

    def digest(self) -> str:
        """sha256 of the name, configuration, text column and the splits' ``datasets`` fingerprints."""
        self._load()
        key = json.dumps(["hf", self.path, self.name, self.text_column, self._fingerprints])
        return hashlib.sha256(key.encode()).hexdigest()[:12]

    def load(self, workdir: Path) -> dict[str, Documents]:
        return self._load()


class PlainText:
    """One text already in memory: a single document."""

    def __init__(self, text: str):
        self.text = text

    def digest(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()[:12]

    def load(self, workdir: Path) -> dict[str, Documents]:
        return {"all": Documents([self.text] if self.text.strip() else [])}


def val_start(char_counts: np.ndarray, val_fraction: float) -> int:
    """Index of the first validation document, for several documents (>= 2): the trailing documents whose
    characters come closest to ``val_fraction`` of all characters, at least one document in each split
    (on a tie, fewer documents).

    >>> val_start(np.array([50, 30, 10, 10]), 0.1), val_start(np.array([50, 30, 10, 10]), 0.25)
    (3, 2)
    """
    n = len(char_counts)
    assert n >= 2, "one document is cut by characters"
    tail = np.cumsum(char_counts[::-1])[: n - 1]  # characters of the last 1, 2, ..., n-1 documents
    k = int(np.argmin(np.abs(tail - val_fraction * char_counts.sum()))) + 1  # validation documents
    return n - k


def split_documents(splits: dict[str, Documents], val_fraction: float) -> tuple[Documents, Documents]:
    """Train and validation documents: the source's own validation split if it has one; else one document
    is cut at its last ``val_fraction`` of characters (nanoGPT's rule), and several are cut between whole
    documents (:func:`val_start`)."""
    if "val" in splits:
        train, val = splits["train"], splits["val"]
    else:
        docs = splits["all"]
        if len(docs) == 1:
            text = docs.text(0)
            cut = int(len(text) * (1.0 - val_fraction))
            return Documents([text[:cut]]), Documents([text[cut:]])
        start = val_start(docs.char_counts(), val_fraction) if len(docs) else 0
        train, val = docs.slice(0, start), docs.slice(start, len(docs))
    if len(train) == 0:
        raise TokenDiffError("the corpus is empty; give data.input a file or folder with text in it")
    return train, val
