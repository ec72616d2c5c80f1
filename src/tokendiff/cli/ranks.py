"""The processes of one run (``system.num_processes``, torchrun, accelerate launch): accelerate's view
of them, and work that a leading process does first while the others wait to read what it made."""

from __future__ import annotations

from tokendiff.errors import TokenDiffError

__all__ = ["process_state", "leader_first"]


def process_state(device: str):
    """accelerate's view of the processes of this run (one, unless started by accelerate launch / torchrun)."""
    from accelerate import PartialState

    return PartialState(cpu=device == "cpu")


def leader_first(procs, work, follower=None, local: bool = False):
    """``work()`` on the leading process (the main one, or each machine's first with ``local``), then
    ``(follower or work)()`` on the others, which find what the leader made. A leader's TokenDiffError is
    the run's one-line error: every process raises it (the main one prints it) instead of waiting in a
    barrier for a leader that has stopped."""
    if procs.num_processes == 1:
        return work()
    from accelerate.utils import gather_object

    leader = procs.is_local_main_process if local else procs.is_main_process
    result, error = None, None
    if leader:
        try:
            result = work()
        except TokenDiffError as exc:
            error = exc
    messages = [m for m in gather_object([None if error is None else str(error)]) if m]
    if messages:
        raise error if error is not None else TokenDiffError(messages[0])
    return result if leader else (follower or work)()
