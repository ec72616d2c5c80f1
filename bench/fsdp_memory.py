"""Memory and step time per process of sharded training (FSDP2, ``system.fsdp=true``) against data parallelism
(DDP), on the CPU.

What is measured
    The same model (default: the ``small`` preset widened to 8 x 512, 25.8M parameters, windows of 128 tokens,
    4 per process) is trained by ``--processes`` processes (gloo, ``python -m torch.distributed.run
    --standalone``: what torchrun runs), once with DDP and once with ``system.fsdp=true``. Every process builds
    its trainer as ``tokendiff train`` does (:func:`tokendiff.build.build_training`, the Trainer of
    :func:`tokendiff.cli.train.trainer_from_config`). It times ``Trainer.train_step()`` (forward, loss, backward,
    gradient averaging, clipping, optimizer, EMA) for ``--steps`` steps after ``--warmup`` steps.

    Reported per process, for each engine:
    - the training state each process holds, in bytes, exactly: its parameters and EMA copy, its gradients (one
      per parameter, alive from backward to the optimizer step) and its optimizer moments. With FSDP these are
      the process's local shards (``DTensor.to_local()``).
    - its peak resident memory (``ru_maxrss``), and how far that peak rose above where it stood before the
      trainer was built. At that point each process already holds the whole initialised model and the data, in
      both engines: tokendiff initialises the whole model on every process, then shards it. Also its resident
      memory after the last step (``/proc/self/statm``), what it keeps between steps.
    - the median seconds per step.
    Runs on ``--threads`` threads per process (default 1), float32.

    Each engine runs twice: with glibc's malloc as it comes, and with ``MALLOC_MMAP_THRESHOLD_=65536``, which
    hands every tensor above 64 KiB back to the system when it is freed. As it comes, glibc raises that threshold
    to the size of the largest block freed (up to 32 MiB), so that it serves such blocks from its heap and keeps
    them. FSDP gathers each block's parameters, and computes its whole gradient, in buffers it frees after every
    use, many times per step. Those freed buffers stay resident, so the process's memory no longer follows what it
    holds. With the fixed threshold, resident memory follows the tensors that are alive.

Run::

    python bench/fsdp_memory.py                  # ~5 min on 2 cores; writes bench/results/fsdp_memory.json
    python bench/fsdp_memory.py --override model.n_layer=4 --steps 5 --out /tmp/fsdp_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_timing import time_train_steps  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
ALLOCATORS = {"glibc_default": {}, "mmap_threshold_64k": {"MALLOC_MMAP_THRESHOLD_": "65536"}}
MODEL = ["+experiment=small", "model.n_layer=8", "model.n_embd=512", "model.n_head=8", "model.block_size=128"]


def overrides(args, engine: str) -> list[str]:
    common = [*MODEL, *args.override, "training.batch_size=4", "model.dropout=0"]
    common += ["system.device=cpu", "system.compile=false", "system.dtype=float32", f"system.threads={args.threads}"]
    common += ["training.eval_iters=1", "training.eval_interval=0", "training.sample_interval=0"]
    common += [f"training.max_iters={args.warmup + args.steps}", f"system.fsdp={engine == 'fsdp'}"]
    return common


def resident_bytes() -> int:
    """This process's resident memory now (Linux)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def local_bytes(tensors) -> int:
    """Bytes of the distinct tensors this process holds (a DTensor: its local shard)."""
    from torch.distributed.tensor import DTensor

    seen, total = set(), 0
    for t in tensors:
        t = t.to_local() if isinstance(t, DTensor) else t
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()
    return total


def measure(args, engine: str) -> dict | None:
    """One engine, in this process (one of several): build the trainer as `tokendiff train` does, time its steps,
    count bytes. Returns every process's figures on the main process, None on the others."""
    import torch
    from accelerate.utils import gather_object

    from tokendiff.build import build_training
    from tokendiff.cli.ranks import leader_first, process_state
    from tokendiff.cli.train import trainer_from_config
    from tokendiff.configs import compose_config

    procs = process_state("cpu")
    cfg = compose_config(overrides(args, engine))
    cfg.output_dir = tempfile.mkdtemp(prefix=f"fsdp_memory-{engine}-")
    parts = leader_first(procs, lambda: build_training(cfg), local=True)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # the whole model and the data
    trainer = trainer_from_config(cfg, parts.model, parts.objective, parts.tokenizer, parts.data)
    del parts
    times = time_train_steps(trainer, args.warmup, args.steps)
    model = trainer.raw_model
    params = list(model.parameters())
    ema = list(trainer.ema.module.parameters()) if trainer.ema is not None else []
    moments = [v for s in trainer.optimizer.optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    mine = {
        "rank": trainer.rank,
        "bytes": {
            "parameters": local_bytes(params),
            "ema": local_bytes(ema),
            "gradients": local_bytes(params),  # each gradient has its parameter's (local) shape and dtype
            "optimizer_state": local_bytes(moments),
        },
        "peak_rss_bytes": peak,
        "peak_rss_above_untrained_model_bytes": peak - before,
        "rss_after_steps_bytes": resident_bytes(),
        "seconds_per_step": {"median": statistics.median(times), "min": min(times), "max": max(times)},
    }
    mine["bytes"]["training_state_total"] = sum(mine["bytes"].values())
    everyone = gather_object([mine])
    if not trainer.is_main:
        return None
    return {
        "engine": engine,
        "processes": trainer.world,
        "parameters": model.num_parameters(),
        "per_process": sorted(everyone, key=lambda r: r["rank"]),
    }


def summarize(run: dict) -> dict:
    ranks = run["per_process"]
    return {
        "parameters": run["parameters"],
        "processes": run["processes"],
        "training_state_bytes_per_process": max(r["bytes"]["training_state_total"] for r in ranks),
        "bytes_per_process": ranks[0]["bytes"],
        "peak_rss_bytes_per_process": max(r["peak_rss_bytes"] for r in ranks),
        "peak_rss_above_untrained_model_bytes_per_process": max(
            r["peak_rss_above_untrained_model_bytes"] for r in ranks
        ),
        "rss_after_steps_bytes_per_process": max(r["rss_after_steps_bytes"] for r in ranks),
        "seconds_per_step_median": statistics.median(r["seconds_per_step"]["median"] for r in ranks),
        "per_process": ranks,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per engine")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="launches of each engine and allocator, interleaved")
    parser.add_argument("--threads", type=int, default=1, help="system.threads per process (1: 2 processes, 2 cores)")
    parser.add_argument(
        "--override", action="append", default=[], help="further config overrides, e.g. model.n_layer=4"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "fsdp_memory.json")
    parser.add_argument("--child", choices=["ddp", "fsdp"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # one process of a launched run
        result = measure(args, args.child)
        if result is not None:
            print("RESULT " + json.dumps(result), flush=True)
        sys.stdout.flush()
        os._exit(0)  # as `tokendiff train` leaves a process group: without gloo's teardown
    forwarded = [f"--steps={args.steps}", f"--warmup={args.warmup}", f"--threads={args.threads}"]
    forwarded += [f"--override={o}" for o in args.override]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(args.processes)]
    rounds: dict[str, dict[str, list[dict]]] = {a: {"ddp": [], "fsdp": []} for a in ALLOCATORS}
    for _ in range(args.rounds):  # ddp, fsdp, ddp, fsdp, ...: a load that comes and goes hits both
        for allocator, malloc_env in ALLOCATORS.items():
            for engine in ("ddp", "fsdp"):
                cmd = [*launcher, __file__, *forwarded, f"--child={engine}"]
                print("$", " ".join(f"{k}={v}" for k, v in malloc_env.items()), " ".join(cmd), flush=True)
                env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": str(args.threads), **malloc_env}
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
                if proc.returncode or not lines:
                    sys.exit(f"{engine} failed:\n{proc.stderr[-3000:]}")
                rounds[allocator][engine].append(summarize(json.loads(lines[-1][len("RESULT ") :])))
                s = rounds[allocator][engine][-1]
                print(
                    f"{allocator} {engine}: {s['seconds_per_step_median']:.3f} s/step, training state "
                    f"{s['training_state_bytes_per_process'] / 2**20:.1f} MiB/process, peak RSS "
                    f"{s['peak_rss_bytes_per_process'] / 2**20:.0f} MiB/process "
                    f"(+{s['peak_rss_above_untrained_model_bytes_per_process'] / 2**20:.0f} MiB over the untrained "
                    f"model), {s['rss_after_steps_bytes_per_process'] / 2**20:.0f} MiB after the steps",
                    flush=True,
                )
    summary, ratios = {}, {}
    for allocator, engines in rounds.items():
        summary[allocator] = {}
        for engine, results in engines.items():
            memory = {k: max(r[k] for r in results) for k, v in results[0].items() if isinstance(v, int)}
            summary[allocator][engine] = {
                **results[0],
                **memory,
                "seconds_per_step_median": statistics.median(r["seconds_per_step_median"] for r in results),
                "seconds_per_step_by_round": [r["seconds_per_step_median"] for r in results],
                "per_process": [r["per_process"] for r in results],
            }
        runs = summary[allocator]
        ratios[allocator] = {
            key: runs["fsdp"][key] / runs["ddp"][key]
            for key in (
                "training_state_bytes_per_process",
                "peak_rss_bytes_per_process",
                "peak_rss_above_untrained_model_bytes_per_process",
                "rss_after_steps_bytes_per_process",
                "seconds_per_step_median",
            )
        }
    result = {
        "benchmark": "fsdp_memory",
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "args": {k: v for k, v in vars(args).items() if k not in ("child", "out")},
        "overrides": overrides(args, "fsdp")[:-1],
        "allocators": {k: v or "glibc malloc as it comes" for k, v in ALLOCATORS.items()},
        "runs": summary,
        "fsdp_over_ddp": ratios,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["fsdp_over_ddp"], indent=2))


if __name__ == "__main__":
    main()
