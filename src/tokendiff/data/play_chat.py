"""``data.dataset=shakespeare_chat``: a small instruction set made from Tiny Shakespeare, for the SFT example.

Each example asks who speaks after a speech of the play and answers with the next speech, in the play's own
layout (``NAME:`` on a line, then the words)::

    {"prompt": "ROMEO:\\nO, she doth teach the torches to burn bright!\\nWho speaks next?",
     "response": "JULIET:\\n..."}

Consecutive speeches of the play form one example when the two fit ``max_chars`` together; the first
``count`` of them are kept, in the play's order (so the validation split, the last examples, is a later
part of the play). A character model trained on the play knows every character of these examples and of
the plain chat template (:mod:`tokendiff.data.chat`).
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["who_speaks_next", "write_who_speaks_next", "QUESTION"]

QUESTION = "Who speaks next?"


def _speeches(text: str) -> list[tuple[str, str]]:
    """``(name, words)`` of every speech: blocks between blank lines that start with ``NAME:``."""
    out = []
    for block in text.split("\n\n"):
        head, sep, words = block.strip("\n").partition(":\n")
        if sep and head and "\n" not in head and words.strip():
            out.append((head, words.strip("\n")))
    return out


def who_speaks_next(text: str, count: int = 400, max_chars: int = 200) -> list[dict]:
    """The first ``count`` ``{"prompt", "response"}`` pairs of consecutive speeches of ``text`` whose prompt and
    response hold at most ``max_chars`` characters together."""
    speeches = _speeches(text)
    pairs = []
    for (name, words), (next_name, next_words) in zip(speeches, speeches[1:]):
        prompt = f"{name}:\n{words}\n{QUESTION}"
        response = f"{next_name}:\n{next_words}"
        if len(prompt) + len(response) <= max_chars:
            pairs.append({"prompt": prompt, "response": response})
            if len(pairs) == count:
                break
    return pairs


def write_who_speaks_next(text: str, path: Path, count: int = 400, max_chars: int = 200) -> Path:
    """Write :func:`who_speaks_next`'s pairs to ``path`` (.jsonl), once per content: an existing file is kept."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(p) + "\n" for p in who_speaks_next(text, count, max_chars)))
        tmp.replace(path)
    return path
