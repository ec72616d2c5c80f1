"""Output files: checked before the work that writes them, and never a file that is not theirs to replace.

An output setting (``sampling.output``, ``sampling.trajectory``) may replace an existing file only when
tokendiff wrote it as such an output: a samples ``.jsonl`` (one JSON object with ``index`` and ``text``
per line), a trajectory ``.txt`` (``step | text`` lines), or an ``.html`` / image / animation that
carries tokendiff's mark (:func:`mark_options`, :data:`HTML_MARK`). Anything else is kept unless the
user asks with ``overwrite=true``; a file of a run (its ``log.jsonl``, anything under ``final/`` or
``checkpoints/``, or in a checkpoint directory) is never replaced, asked or not.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from tokendiff.errors import TokenDiffError

__all__ = ["check_output_file", "written_by_tokendiff", "mark_options", "HTML_MARK"]

MARK = "tokendiff"
HTML_MARK = f'<meta name="generator" content="{MARK}">'
EXIF_SOFTWARE = 0x0131  # the EXIF tag "Software"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif")
TRAJECTORY_LINE = re.compile(r"^\s*\d+ \| ")
CHECKPOINT_FILES = ("config.json", "model.safetensors")  # a checkpoint directory, even one copied out of its run


def mark_options(suffix: str) -> dict:
    """Keyword arguments of Pillow's ``Image.save`` that mark an image as tokendiff's output."""
    if suffix.lower() == ".gif":
        return {"comment": MARK}
    from PIL import Image

    exif = Image.Exif()
    exif[EXIF_SOFTWARE] = MARK
    return {"exif": exif}


def written_by_tokendiff(path: Path) -> bool:
    """Whether ``path`` is an output file tokendiff wrote (see the module docstring)."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            rows = [json.loads(line) for line in lines[:50]]
            return bool(rows) and all(isinstance(r, dict) and "index" in r and "text" in r for r in rows)
        if suffix == ".txt":
            lines = path.read_text(encoding="utf-8").splitlines()
            return bool(lines) and all(TRAJECTORY_LINE.match(line) for line in lines[:50])
        if suffix == ".html":
            return HTML_MARK in path.read_text(encoding="utf-8", errors="replace")[:4096]
        if suffix in IMAGE_SUFFIXES:
            from PIL import Image

            with Image.open(path) as img:
                comment = img.info.get("comment", b"")
                comment = comment.decode("latin-1") if isinstance(comment, bytes) else str(comment)
                return comment == MARK or img.getexif().get(EXIF_SOFTWARE) == MARK
    except (OSError, ValueError, UnicodeDecodeError):  # unreadable, not JSON, not an image: not ours
        return False
    return False


def _run_owning(p: Path) -> Path | None:
    from tokendiff.training.run_directory import run_of_file

    run = run_of_file(p)
    if run is None and all((p.parent / name).exists() for name in CHECKPOINT_FILES):
        return p.parent
    return run


def check_output_file(path: str, what: str, suffixes: tuple[str, ...], replace: bool = False) -> Path:
    """``path`` must end in one of ``suffixes``, not be a directory or a file of a run, not be a file that
    tokendiff did not write (unless ``replace``: the user's ``overwrite=true``), and lie where a directory
    can be created and written. ``what`` is the option name for the message, e.g. ``sampling.output``.
    Nothing is created: the writer makes the missing directories once the work is done."""
    p = Path(path).expanduser()
    if p.suffix.lower() not in suffixes:
        raise TokenDiffError(f"{what}={path!r}: use a file ending in {', '.join(suffixes)}")
    if p.is_dir():
        raise TokenDiffError(f"{what}={path!r} is a directory; give a file name")
    run = _run_owning(p)
    if run is not None:
        raise TokenDiffError(
            f"{what}={path!r} is a file of the run in {run}, which an output never replaces; "
            "write beside the run instead, e.g. samples.jsonl"
        )
    if p.exists() and not replace and not written_by_tokendiff(p):
        raise TokenDiffError(
            f"{what}={path!r} exists and is not a file tokendiff wrote; choose another path, or pass "
            "overwrite=true to replace it"
        )
    from tokendiff.training.run_directory import creatable_problem

    problem = creatable_problem(p.parent)
    if problem:
        raise TokenDiffError(f"{what}={path!r}: {problem}; choose another path")
    return p
