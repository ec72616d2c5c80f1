"""Ctrl-C between two training steps: the loop stops where the optimizer step and the step counter agree."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading

__all__ = ["interrupts_between_steps"]


@contextlib.contextmanager
def interrupts_between_steps(notice=None):
    """Ctrl-C (SIGINT) during the block sets a flag, read by calling the yielded function, instead of
    raising wherever the interpreter is: the loop stops between two steps, so the optimizer step and the
    step counter always change together. A second Ctrl-C raises KeyboardInterrupt at once.

    ``notice()``, if given, is called at the first Ctrl-C: a line to print at once when the step in flight
    will take long (the first step of a compiled model compiles it), so the user knows the key was heard.
    """
    state = {"interrupted": False}
    if threading.current_thread() is not threading.main_thread():
        yield lambda: state["interrupted"]  # signal handlers can only be set in the main thread
        return

    def handler(signum, frame):
        if state["interrupted"]:
            raise KeyboardInterrupt
        state["interrupted"] = True
        line = notice() if notice else None
        if line:
            print(line, file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: state["interrupted"]
    finally:
        signal.signal(signal.SIGINT, previous)
