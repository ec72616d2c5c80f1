"""``tokendiff train ... system.num_processes=N``: one command starts N training processes.

torchrun and ``accelerate launch`` stay supported, but a user error in one of their workers ends in
the launcher's own traceback (``ChildFailedError``) after the worker's one line. This launcher is
tokendiff's own, so it can keep the promise of every command: one line and exit status 2 for a user
error, Ctrl-C saves a checkpoint and exits 130.

- The config, the run directory and the data are checked (and the data prepared) here, before any
  worker starts: most mistakes end before a process group exists.
- Each worker is ``python -m tokendiff train <the same arguments>`` with the environment torchrun
  would give it (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``); workers
  print from the main process only (``tokendiff.cli.main``), so a message appears once.
- The workers run in process groups of their own: a terminal's Ctrl-C reaches this process only, which
  hands each worker exactly one SIGINT per Ctrl-C (a second Ctrl-C stops them at once, as it does a
  single process). A worker that fails while the others wait in a collective would leave them waiting
  for gloo's 30-minute timeout; they are stopped after :data:`GRACE_SECONDS` instead.

We start the workers with ``subprocess`` rather than ``torch.multiprocessing`` or accelerate's
``notebook_launcher``: both fork or spawn this interpreter and report a worker's failure as an exception
with a traceback, and neither lets a Ctrl-C reach the workers as one signal each.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from tokendiff.errors import TokenDiffError

__all__ = ["launch_workers", "is_launched_worker", "GRACE_SECONDS"]

GRACE_SECONDS = 30.0  # how long the other workers may run on after one has failed


def is_launched_worker() -> bool:
    """Whether this process is one of several (started by this launcher, torchrun or accelerate launch)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_process_count(num_processes: int, device) -> None:
    """One line when ``system.num_processes`` asks for more GPUs than this machine has."""
    if device.type == "cuda":
        import torch

        if num_processes > torch.cuda.device_count():
            raise TokenDiffError(
                f"system.num_processes={num_processes} needs a GPU per process, and this machine has "
                f"{torch.cuda.device_count()}; use system.num_processes<={torch.cuda.device_count()} "
                "(or system.device=cpu)"
            )


def launch_workers(num_processes: int, argv: list[str]) -> int:
    """Run ``tokendiff train <argv>`` in ``num_processes`` workers; return the exit status of the run:
    the main worker's, or the first failing worker's when the main one did not fail."""
    port = _free_port()
    base = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(num_processes))
    base |= {"LOCAL_WORLD_SIZE": str(num_processes), "GROUP_RANK": "0", "ROLE_RANK": "0"}
    # the cores shared out (as torchrun does, without its warning); system.threads still sets torch's own
    base.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // num_processes)))
    workers = []
    interrupts = 0

    def forward(signum, frame):
        nonlocal interrupts
        interrupts += signum == signal.SIGINT
        for w in workers:
            if w.poll() is None:
                w.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for rank in range(num_processes):
            env = dict(base, RANK=str(rank), LOCAL_RANK=str(rank), ROLE_NAME="default")
            cmd = [sys.executable, "-m", "tokendiff", "train", *argv]
            workers.append(subprocess.Popen(cmd, env=env, process_group=0))
        return _wait(workers)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for w in workers:  # only after an error of ours: never leave a worker behind
            if w.poll() is None:
                w.kill()
                w.wait()


def _wait(workers) -> int:
    failed_at = None
    while any(w.poll() is None for w in workers):
        codes = [w.poll() for w in workers]
        if failed_at is None and any(c not in (None, 0) for c in codes):
            failed_at = time.monotonic()
        if failed_at is not None and time.monotonic() - failed_at > GRACE_SECONDS:
            for w in workers:
                if w.poll() is None:
                    w.terminate()
        time.sleep(0.1)
    codes = [w.returncode for w in workers]
    if codes[0] not in (0, -signal.SIGTERM) or all(c == 0 for c in codes):
        return _status(codes[0])
    return _status(next(c for c in codes if c != 0))


def _status(code: int) -> int:
    """A worker's exit status as a shell reports it (killed by signal N: 128 + N)."""
    return 128 - code if code < 0 else code
