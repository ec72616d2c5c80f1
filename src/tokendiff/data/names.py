"""Prepared corpora by name: ``tokendiff prepare data.input=x.jsonl data.dataset=mycorpus`` records the
name, and ``tokendiff train data.dataset=mycorpus`` (without data.input) finds the corpus again.

The index is one JSON file per name, ``<prepared_dir>/names/<name>.json``::

    {"name": "mycorpus", "prepared": "mycorpus-char-1f2e3d4c5b6a",
     "data": {"input": "/abs/x.jsonl", "text_column": "text", "tokenizer": "char", ...}}

``prepared`` is the directory's name inside the prepared-data cache (so the cache can move as a whole),
and ``data`` the settings it was prepared with, enough to prepare it again when the cache was cleared.
A name is a pointer: preparing other data under the same name moves it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from tokendiff.atomic import write_text
from tokendiff.data.paths import prepared_dir
from tokendiff.errors import TokenDiffError

__all__ = ["NamedCorpus", "find_name", "record_name", "prepared_names", "check_name", "safe_name"]

NAMES_DIR = "names"
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")


def safe_name(text: str) -> str:
    """``text`` made into a corpus name: every other character becomes ``_`` (for names taken from files)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", text).lstrip(".-")
    return name or "corpus"


def check_name(name: str) -> None:
    if not NAME.fullmatch(name):
        raise TokenDiffError(
            f"data.dataset={name!r} cannot name a prepared corpus; use letters, digits, '_', '.' and '-' "
            "(starting with a letter, digit or '_')"
        )


@dataclass
class NamedCorpus:
    """An entry of the index."""

    name: str
    root: Path  # the prepared directory
    settings: dict  # the data.* settings it was prepared with

    @property
    def exists(self) -> bool:
        return (self.root / "meta.json").is_file()


def _index(name: str) -> Path:
    return prepared_dir() / NAMES_DIR / f"{name}.json"


def find_name(name: str) -> NamedCorpus | None:
    """The corpus recorded under ``name``, or None."""
    if not NAME.fullmatch(name):
        return None
    path = _index(name)
    if not path.is_file():
        return None
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
        return NamedCorpus(entry["name"], prepared_dir() / entry["prepared"], dict(entry["data"]))
    except (ValueError, TypeError, KeyError):  # not JSON, not UTF-8, not the layout above
        raise TokenDiffError(
            f"{path} is damaged; delete it and prepare the corpus again "
            f"(tokendiff prepare data.input=<file or folder> data.dataset={name})"
        ) from None


def record_name(name: str, root: Path, settings: dict) -> None:
    """Point ``name`` at the prepared directory ``root`` (inside the cache), written atomically."""
    check_name(name)
    path = _index(name)
    entry = {"name": name, "prepared": Path(root).name, "data": settings}
    try:
        write_text(path, json.dumps(entry, indent=2))
    except OSError as exc:
        raise TokenDiffError(
            f"cannot record the name {name!r} in {path.parent} ({exc.strerror}); set TOKENDIFF_CACHE to a "
            "writable folder"
        ) from None


def prepared_names() -> list[str]:
    """Every recorded name, sorted."""
    folder = prepared_dir() / NAMES_DIR
    return sorted(p.stem for p in folder.glob("*.json") if NAME.fullmatch(p.stem)) if folder.is_dir() else []
