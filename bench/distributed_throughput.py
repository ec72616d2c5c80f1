"""Tokens per second of multi-process training on the CPU: one process against N (gloo, torchrun).

What is measured
    ``tokendiff train`` of the same model and per-process batch, launched (a) as one process and (b) as
    ``--processes`` processes with ``python -m torch.distributed.run --standalone`` (what ``torchrun``
    runs), each process with ``--threads`` threads. Step times come from the runs' own ``log.jsonl``
    (``train/time_ms`` of every step, the first ``--skip`` steps left out as warm-up); tokens per second
    = processes x batch_size x sequence length / median step time. The speedup is (b) over (a); perfect
    scaling would be ``--processes`` when the machine has a core per process.

Both runs go through the CLI exactly as a user launches them; the script only reads their logs.

Full run (2 cores: 1 thread per process)::

    python bench/distributed_throughput.py

Writes ``bench/results/distributed_throughput.json`` (``--out``); run directories go to
``bench/results/distributed_runs/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def launch(processes: int, overrides: list[str], out: Path, threads: int) -> Path:
    """Train with ``processes`` processes; returns the run directory."""
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    env.setdefault("TOKENDIFF_DATA", str(REPO.parent / "shared" / "data"))
    prefix = [sys.executable, "-m", "tokendiff"]
    if processes > 1:
        prefix = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
        prefix += ["-m", "tokendiff"]
    cmd = prefix + ["train", *overrides, f"system.threads={threads}", f"output_dir={out}"]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return out


def step_ms(run: Path, skip: int) -> list[float]:
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [r["train/time_ms"] for r in records if "train/time_ms" in r and r["step"] > skip]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="threads per process")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--skip", type=int, default=5, help="warm-up steps left out of the median")
    p.add_argument(
        "--override",
        action="append",
        default=["+experiment=quickstart_mdlm"],
        help="config overrides of both runs (default: the masked quickstart preset)",
    )
    p.add_argument("--out", type=Path, default=RESULTS / "distributed_throughput.json")
    args = p.parse_args(argv)
    common = [
        *args.override,
        f"training.max_iters={args.steps}",
        "training.log_interval=1",
        "training.eval_interval=0",
        "training.sample_interval=0",
        "training.checkpoint_interval=0",
        "training.eval_iters=1",
        "system.device=cpu",
        "system.compile=false",
        "sampling.steps=2",
    ]
    runs = RESULTS / "distributed_runs"
    result = {
        "benchmark": "distributed_throughput",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "args": {**vars(args), "out": str(args.out)},
    }
    from tokendiff.configs import compose_config  # the batch and sequence length the runs used

    cfg = compose_config([o for o in common if not o.startswith("system.threads")])
    tokens_per_process_step = cfg.training.batch_size * cfg.model.block_size
    for n in (1, args.processes):
        run = launch(n, common, runs / f"p{n}", args.threads)
        times = step_ms(run, args.skip)
        median = statistics.median(times)
        result[f"processes_{n}"] = {
            "median_step_ms": median,
            "tokens_per_s": n * tokens_per_process_step / (median / 1000.0),
            "steps_timed": len(times),
        }
        print(f"{n} process(es): {median:.1f} ms/step, {result[f'processes_{n}']['tokens_per_s']:,.0f} tokens/s")
    speedup = result[f"processes_{args.processes}"]["tokens_per_s"] / result["processes_1"]["tokens_per_s"]
    result["speedup"] = speedup
    print(f"speedup of {args.processes} processes over 1: {speedup:.2f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
