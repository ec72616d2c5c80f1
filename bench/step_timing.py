"""Seconds per training step of a built trainer: the unit ``bench/lora_memory.py`` and ``bench/fsdp_memory.py`` time.

``Trainer.train_step`` is the library's own step (every micro-batch, the optimizer, the EMA), so what is timed
is what a run does."""

from __future__ import annotations

import time


def time_train_steps(trainer, warmup: int, steps: int) -> list[float]:
    """Run ``warmup`` steps untimed (allocations, caches), then ``steps`` steps: their seconds, each."""
    for _ in range(warmup):
        trainer.train_step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        trainer.train_step()
        times.append(time.perf_counter() - start)
    return times
