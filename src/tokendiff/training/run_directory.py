"""The run directory: created once, resumed in place, never overwritten unless asked.

A run directory holds ``log.jsonl``, ``checkpoints/step_*/`` and ``final/`` (layout in
:mod:`tokendiff.checkpoint`). This module is the one place that decides where a run writes:

- a fresh run (``tokendiff train output_dir=D``) needs ``D`` to be new or empty; a directory that
  already holds a run is refused (exit 2) unless ``overwrite=true``, which moves the old run aside to
  ``D.replaced-<time>`` instead of mixing two runs' checkpoints and logs;
- a resumed run (``resume=R``) writes into the run directory that holds ``R``, whatever ``output_dir``
  its saved config names (a copied run continues in the copy);
- the path is made absolute once, here, and checked to be writable before any work starts.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from tokendiff.checkpoint import CHECKPOINTS, FINAL
from tokendiff.errors import TokenDiffError

__all__ = ["create_run_directory", "run_directory_of", "holds_a_run"]

RUN_FILES = ("log.jsonl", FINAL, CHECKPOINTS)


def holds_a_run(path: Path) -> bool:
    return any((path / name).exists() for name in RUN_FILES)


def _check_writable(path: Path, what: str) -> None:
    """Create ``path`` (and parents) and prove a file can be written in it."""
    for parent in [path, *path.parents]:
        if parent.exists() and not parent.is_dir():
            raise TokenDiffError(f"{what}={str(path)!r}: {parent} is a file, not a directory; choose another path")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".tokendiff-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise TokenDiffError(f"{what}={str(path)!r} is not writable ({exc.strerror}); choose another path") from None


def create_run_directory(output_dir: str | None, overwrite: bool = False) -> Path:
    """The absolute directory of a fresh run, checked and created (see the module docstring)."""
    if output_dir is None or not str(output_dir).strip():
        raise TokenDiffError("output_dir is empty; name the run directory, e.g. output_dir=out/run1")
    path = Path(output_dir).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise TokenDiffError(f"output_dir={str(output_dir)!r} is a file, not a directory; choose another path")
    if path.is_dir() and holds_a_run(path):
        if not overwrite:
            raise TokenDiffError(
                f"output_dir={str(output_dir)!r} already holds a run; continue it with resume={output_dir}, "
                "pick a new output_dir, or pass overwrite=true to move the old run aside"
            )
        aside = path.with_name(f"{path.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(path, aside)
        print(f"overwrite=true: moved the old run to {aside}", flush=True)
    _check_writable(path, "output_dir")
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
    _check_writable(run, "resume")
    return run
