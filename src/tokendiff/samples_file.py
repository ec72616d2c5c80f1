"""The samples file: ``tokendiff sample sampling.output=samples.jsonl`` writes it, ``tokendiff score`` reads it.

One JSON object per line, one line per sample, in the order they were printed::

    {"index": 0, "text": "...", "checkpoint": "<checkpoint directory>", "step": 500, "seed": 0,
     "prompt": null, "template": null, "sampling": {<the sampling.* settings that made it>}}

The file is written whole or not at all (:mod:`tokendiff.atomic`). Reading needs only ``text``, so a
file of other JSON lines that each have one is scored too.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokendiff.atomic import staged_file
from tokendiff.errors import TokenDiffError

__all__ = ["write_samples", "read_samples"]

NOT_SETTINGS = ("output", "trajectory")  # where the outputs went, not what made the samples


def write_samples(path: str, texts: list[str], *, checkpoint, step: int, seed, prompt, template, sampling: dict):
    """Write ``texts`` with what made them: the checkpoint, its step, the seed, prompt, template and the
    ``sampling`` section of the config (a dict)."""
    record = {"checkpoint": str(checkpoint), "step": step, "seed": seed, "prompt": prompt}
    record |= {"template": template, "sampling": {k: v for k, v in sampling.items() if k not in NOT_SETTINGS}}
    lines = [json.dumps({"index": i, "text": t, **record}) + "\n" for i, t in enumerate(texts)]
    target = Path(path).expanduser()
    try:
        staged = staged_file(target)
    except OSError as exc:
        raise TokenDiffError(f"cannot write {target} ({exc.strerror}); choose another path") from None
    with staged as tmp:
        tmp.write_text("".join(lines))


def read_samples(path: str) -> list[str]:
    """The texts of a samples file written by ``tokendiff sample sampling.output=<file>.jsonl``."""
    p = Path(path).expanduser()
    if p.suffix != ".jsonl" or not p.is_file():
        raise TokenDiffError(
            f"samples={path!r} is not a .jsonl file; write one with tokendiff sample sampling.output=samples.jsonl"
        )
    texts = []
    for n, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        try:
            row = json.loads(line) if line.strip() else None
        except json.JSONDecodeError:
            row = None
        if line.strip() and not (isinstance(row, dict) and isinstance(row.get("text"), str)):
            raise TokenDiffError(
                f"samples={path!r}: line {n} is not a JSON object with a text; use the file tokendiff sample wrote"
            )
        if row:
            texts.append(row["text"])
    if not texts:
        raise TokenDiffError(f"samples={path!r} holds no samples")
    return texts
