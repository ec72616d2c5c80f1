"""Output files are checked before the work that writes them (no minutes of sampling, then a crash)."""

from __future__ import annotations

import os
from pathlib import Path

from tokendiff.errors import TokenDiffError

__all__ = ["check_output_file"]


def check_output_file(path: str, what: str, suffixes: tuple[str, ...]) -> Path:
    """``path`` must end in one of ``suffixes``, not be a directory, and sit in a writable directory
    (created if missing). ``what`` is the option name for the message, e.g. ``sampling.output``."""
    p = Path(path).expanduser()
    if p.suffix.lower() not in suffixes:
        raise TokenDiffError(f"{what}={path!r}: use a file ending in {', '.join(suffixes)}")
    if p.is_dir():
        raise TokenDiffError(f"{what}={path!r} is a directory; give a file name")
    parent = p.parent
    for d in [parent, *parent.parents]:
        if d.exists() and not d.is_dir():
            raise TokenDiffError(f"{what}={path!r}: {d} is a file, not a directory; choose another path")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TokenDiffError(f"{what}={path!r}: cannot create {parent} ({exc.strerror}); choose another path") from None
    if not os.access(parent, os.W_OK):
        raise TokenDiffError(f"{what}={path!r}: {parent} is not writable; choose another path")
    return p
