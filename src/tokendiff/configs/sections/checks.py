"""The one helper every section's ``__post_init__`` raises through."""

from __future__ import annotations

from tokendiff.errors import TokenDiffError

__all__ = ["check"]


def check(ok: bool, message: str) -> None:
    """Raise ``message`` (one line, naming the ``section.key=value`` at fault) unless ``ok``."""
    if not ok:
        raise TokenDiffError(message)
