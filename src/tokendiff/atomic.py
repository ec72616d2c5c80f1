"""Files and directories written whole or not at all.

Everything tokendiff writes to be read later (checkpoints, prepared corpora, corpus names, downloads,
samples files, the image classifier) is built under a hidden temporary name beside its place and then
renamed into place in one step (``os.replace``, atomic within a file system). A crash, a full disk or
Ctrl-C mid-write leaves the previous version or nothing, never a half-written file that looks valid.

Creating the temporary file or directory is a call of its own, apart from the ``with`` block that
fills it, so that a caller can name the fix for a place it cannot write to (a read-only cache) without
taking an error of the work inside the block (an unreadable input) for one::

    try:
        staged = staged_file(path)  # mkdir and the hidden temporary file: OSError here is the place's
    except OSError as exc:
        raise TokenDiffError(f"cannot write {path} ({exc.strerror}); choose another path") from None
    with staged as tmp:  # on a normal exit tmp replaces path; on an exception it is removed
        tmp.write_text(text)
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["Staged", "staged_file", "staged_directory", "write_text"]


class Staged:
    """A hidden temporary file or directory beside ``target``; the ``with`` block gives its path.

    Leaving the block normally moves it into place (replacing an older ``target``); leaving it by an
    exception (Ctrl-C included) removes it and leaves ``target`` as it was.
    """

    def __init__(self, target: Path, tmp: Path):
        self.target, self.tmp = target, tmp

    def __enter__(self) -> Path:
        return self.tmp

    def __exit__(self, exc_type, exc, traceback) -> None:
        try:
            if exc_type is None:
                _publish(self.tmp, self.target)
        finally:
            if self.tmp.is_dir():
                shutil.rmtree(self.tmp, ignore_errors=True)
            else:
                self.tmp.unlink(missing_ok=True)


def _publish(tmp: Path, target: Path) -> None:
    """Rename ``tmp`` to ``target``. A directory cannot replace a directory that has files, so an old
    one is first moved aside and removed only once the new one is in place: at every moment one of
    them is complete."""
    if tmp.is_dir() and target.exists():
        old = target.with_name(f".{target.name}-old-{os.getpid()}")
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


def staged_file(target: str | Path) -> Staged:
    """An empty hidden file beside ``target`` (its folder created if missing) to write ``target`` through."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}-")
    os.close(fd)  # writers open the path themselves (safetensors and numpy take a path or their own file)
    return Staged(target, Path(tmp))


def staged_directory(target: str | Path) -> Staged:
    """An empty hidden directory beside ``target`` (its folder created if missing) to build ``target`` in."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return Staged(target, Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-tmp-")))


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all (an ``OSError`` says why it could not)."""
    with staged_file(path) as tmp:
        tmp.write_text(text)
