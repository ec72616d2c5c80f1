"""The run directory: checked before any work, created once, resumed in place, never overwritten unless asked.

A run directory holds ``log.jsonl``, ``checkpoints/step_*/`` and ``final/`` (layout in
:mod:`tokendiff.checkpoint`). This module is the one place that decides where a run writes:

- a fresh run (``tokendiff train output_dir=D``) needs ``D`` to be new, empty, or the leftover of a
  start that saved no checkpoint; a directory that holds a checkpoint is refused (exit 2) unless
  ``overwrite=true``, which moves the old run aside to ``D.replaced-<time>`` instead of mixing two
  runs' checkpoints and logs;
- a start that failed before its first checkpoint (a bad learning rate, a missing extra, Ctrl-C while
  compiling) leaves only ``log.jsonl``: it holds no run to resume, so the corrected command goes ahead,
  and the old log is kept beside it as ``log.<time>.jsonl`` (a log is never lost);
- :func:`check_run_directory` decides all of this without touching the disk, so the CLI calls it
  before any work, and :func:`create_run_directory` acts on it only after every other check passed;
- a resumed run (``resume=R``) writes into the run directory that holds ``R``, whatever ``output_dir``
  its saved config names (a copied run continues in the copy).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from tokendiff.checkpoint import CHECKPOINTS, FINAL
from tokendiff.errors import TokenDiffError

__all__ = [
    "check_run_directory",
    "creatable_problem",
    "create_run_directory",
    "run_directory_of",
    "holds_a_run",
    "run_of_file",
]

LOG = "log.jsonl"
RUN_FILES = (LOG, FINAL, CHECKPOINTS)


def holds_a_run(path: Path) -> bool:
    """Whether ``path`` holds a run to resume: a final or periodic checkpoint (a log alone is a failed start)."""
    path = Path(path)
    return (path / FINAL).exists() or (path / CHECKPOINTS).is_dir() and any((path / CHECKPOINTS).iterdir())


def run_of_file(path: Path) -> Path | None:
    """The run directory ``path`` belongs to (its log, or anything in its checkpoints), or None."""
    path = Path(path).expanduser().absolute()
    for parent in path.parents:
        inside = path.relative_to(parent).parts[0]
        if inside in RUN_FILES and any((parent / name).exists() for name in RUN_FILES):
            return parent
    return None


def creatable_problem(path: Path) -> str | None:
    """Why a directory cannot be made at ``path`` and written in, or None. The nearest existing ancestor
    must be a directory in which a probe directory can be made (and is removed at once): permission bits
    alone do not tell, e.g. for root under /proc. Nothing is left behind."""
    import tempfile

    for parent in [path, *path.parents]:
        if not parent.exists():
            continue
        if not parent.is_dir():
            return f"{parent} is a file, not a directory"
        try:
            os.rmdir(tempfile.mkdtemp(dir=parent, prefix=".tokendiff-write-test-"))
        except OSError as exc:
            return f"cannot create a directory in {parent} ({exc.strerror}): not writable"
        return None
    return None


def _check_creatable(path: Path, what: str) -> None:
    problem = creatable_problem(path)
    if problem:
        raise TokenDiffError(f"{what}={str(path)!r}: {problem}; choose another path")


def check_run_directory(output_dir: str | None, overwrite: bool = False) -> Path:
    """The absolute directory of a fresh run, checked without touching the disk (see the module docstring)."""
    if output_dir is None or not str(output_dir).strip():
        raise TokenDiffError("output_dir is empty; name the run directory, e.g. output_dir=out/run1")
    path = Path(output_dir).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise TokenDiffError(f"output_dir={str(output_dir)!r} is a file, not a directory; choose another path")
    if holds_a_run(path) and not overwrite:
        raise TokenDiffError(
            f"output_dir={str(output_dir)!r} already holds a run; continue it with resume={output_dir}, "
            "pick a new output_dir, or pass overwrite=true to move the old run aside"
        )
    inside = run_of_file(path)
    if inside is not None and inside != path:
        raise TokenDiffError(
            f"output_dir={str(output_dir)!r} lies inside the files of the run in {inside}; choose another path"
        )
    _check_creatable(path, "output_dir")
    return path


def create_run_directory(output_dir: str | None, overwrite: bool = False) -> Path:
    """Check again (:func:`check_run_directory`), then make the run directory: an old run moved aside
    with ``overwrite=true``, a failed start's log kept under another name, the directory created and
    proven writable."""
    path = check_run_directory(output_dir, overwrite)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if holds_a_run(path):  # overwrite=true (checked above)
        aside = path.with_name(f"{path.name}.replaced-{stamp}")
        os.replace(path, aside)
        print(f"overwrite=true: moved the old run to {aside}", flush=True)
    elif (path / LOG).exists():
        kept = path / f"log.{stamp}.jsonl"
        os.replace(path / LOG, kept)
        print(f"note: {path} held the log of a start that saved no checkpoint; kept as {kept.name}", flush=True)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".tokendiff-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise TokenDiffError(
            f"output_dir={str(path)!r} is not writable ({exc.strerror}); choose another path"
        ) from None
    return path


def run_directory_of(checkpoint: Path) -> Path:
    """The run directory that holds ``checkpoint`` (``<run>/final`` or ``<run>/checkpoints/step_N``)."""
    checkpoint = Path(checkpoint).resolve()
    if checkpoint.name == FINAL:
        run = checkpoint.parent
    elif checkpoint.parent.name == CHECKPOINTS:
        run = checkpoint.parent.parent
    else:
        raise TokenDiffError(
            f"resume={str(checkpoint)!r} is not inside a run directory (<run>/final or <run>/checkpoints/step_N); "
            "resume from the run directory itself"
        )
    if not os.access(run, os.W_OK | os.X_OK):
        raise TokenDiffError(
            f"resume={str(run)!r} is not writable; copy the run somewhere writable and resume the copy"
        )
    return run
