"""Memory and step time of a LoRA fine-tune against a full fine-tune of the same base (``training.lora.r``).

What is measured
    A base checkpoint of the preset's model (``--preset``, default ``quickstart_mdlm``: the quickstart's 4 x 128
    masked diffusion LM, 0.87M parameters; ``--base-steps`` steps of training, the base's quality does not
    matter here) is fine-tuned twice from ``training.init_from``: every weight (``full``), and rank-``--r``
    adapters on the attention and MLP linears (``lora``). Each variant runs in a process of its own, built as
    ``tokendiff train`` builds it (:func:`tokendiff.build.build_training`, the Trainer of
    :func:`tokendiff.cli.train.trainer_from_config`), and times ``Trainer.train_step()`` (forward, loss,
    backward, clipping, optimizer, EMA) for ``--steps`` steps after ``--warmup`` steps.

    Reported per variant: total and trainable parameters; the training state in bytes, exactly: the distinct
    parameter tensors of the model and its EMA copy (LoRA's EMA shares the frozen base), the gradients (one
    per trainable parameter, alive from backward to the optimizer step), and the optimizer's state tensors
    (AdamW's two moments and step); the process's peak resident memory (``ru_maxrss``: includes Python,
    torch, peft with transformers (imported by both variants) and the data, so it says little for a model this
    small); the median seconds per step; and the size of a checkpoint on disk (``save_state``: the weights or
    adapter, and with the training state). Timed on ``--threads`` threads (default 1), float32 (``--dtype``).

Run::

    python bench/lora_memory.py                       # ~1-2 min on 2 cores; writes bench/results/lora_memory.json
    python bench/lora_memory.py --preset shakespeare_char --r 16 --out /tmp/lora_memory.json
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


def overrides(args, base: str | None) -> list[str]:
    common = [f"+experiment={args.preset}", "system.device=cpu", "system.compile=false", f"system.dtype={args.dtype}"]
    common += [f"system.threads={args.threads}"]
    common += ["training.eval_iters=1", "training.eval_interval=0", "training.sample_interval=0"]
    return common + ([f"training.init_from={base}"] if base else [])


def make_base(args, root: Path) -> Path:
    from tokendiff.cli.main import main

    out = root / "base"
    code = main(["train", *overrides(args, None), f"training.max_iters={args.base_steps}", f"output_dir={out}"])
    assert code == 0, code
    return out


def tensor_bytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()
    return total


def directory_bytes(path: Path, skip: str | None = None) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and (skip is None or skip not in p.parts))


def measure(args, variant: str, base: str) -> dict:
    """One variant, in this process: build the trainer as `tokendiff train` does, time its steps, count bytes."""
    import peft  # noqa: F401  both variants import it (and transformers with it), so their peak RSS compares
    import torch

    from tokendiff.build import build_training
    from tokendiff.cli.train import trainer_from_config
    from tokendiff.configs import compose_config
    from tokendiff.training.trainer_state import save_state

    lora = [f"training.lora.r={args.r}"] if variant == "lora" else []
    cfg = compose_config(overrides(args, base) + [f"training.max_iters={args.warmup + args.steps}", *lora])
    cfg.output_dir = tempfile.mkdtemp(prefix=f"lora_memory-{variant}-")
    parts = build_training(cfg)
    trainer = trainer_from_config(cfg, parts.model, parts.objective, parts.tokenizer, parts.data)
    times = time_train_steps(trainer, args.warmup, args.steps)
    model = trainer.raw_model
    trainable = [p for p in model.parameters() if p.requires_grad]
    params = tensor_bytes(list(model.parameters()) + list(trainer.ema.module.parameters() if trainer.ema else []))
    grads = sum(p.numel() * p.element_size() for p in trainable)
    moments = tensor_bytes(
        v for s in trainer.optimizer.optimizer.state.values() for v in s.values() if torch.is_tensor(v)
    )
    ckpt = save_state(trainer, Path(cfg.output_dir) / "final")
    return {
        "variant": variant,
        "dtype": trainer.dtype,
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in trainable),
        "bytes": {
            "parameters_model_and_ema": params,
            "gradients": grads,
            "optimizer_state": moments,
            "training_state_total": params + grads + moments,
        },
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "seconds_per_step": {"median": statistics.median(times), "min": min(times), "max": max(times)},
        "checkpoint_bytes": {
            "for_sampling": directory_bytes(ckpt, skip="training_state"),
            "with_training_state": directory_bytes(ckpt),
        },
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="quickstart_mdlm")
    parser.add_argument("--r", type=int, default=8, help="LoRA rank (training.lora.alpha: its default)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant and round")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="full, lora, full, lora, ...: each its own process")
    parser.add_argument("--base-steps", type=int, default=20)
    parser.add_argument("--dtype", default="float32", help="system.dtype (auto: bf16 where the CPU has it natively)")
    parser.add_argument("--threads", type=int, default=1, help="system.threads (1: steady timings on a busy CPU)")
    parser.add_argument("--out", type=Path, default=RESULTS / "lora_memory.json")
    parser.add_argument("--child", choices=["full", "lora"], help=argparse.SUPPRESS)
    parser.add_argument("--base", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # one variant in a fresh process, so that its peak RSS is its own
        print("RESULT " + json.dumps(measure(args, args.child, args.base)), flush=True)
        return
    root = Path(tempfile.mkdtemp(prefix="lora_memory-"))
    base = make_base(args, root)
    forwarded = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k not in ("child", "base", "out")]
    runs: dict[str, list[dict]] = {"full": [], "lora": []}
    for _ in range(args.rounds):
        for variant in ("full", "lora"):
            proc = subprocess.run(
                [sys.executable, __file__, *forwarded, f"--child={variant}", f"--base={base}"],
                capture_output=True,
                text=True,
                env={**os.environ, "TQDM_DISABLE": "1"},
            )
            lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode or not lines:
                sys.exit(f"{variant} failed:\n{proc.stderr[-3000:]}")
            runs[variant].append(json.loads(lines[-1][len("RESULT ") :]))
            print(f"{variant}: {runs[variant][-1]['seconds_per_step']['median']:.3f} s/step", flush=True)
    summary = {}
    for variant, results in runs.items():
        first = results[0]
        summary[variant] = {
            **{k: first[k] for k in ("dtype", "parameters", "trainable_parameters", "bytes", "checkpoint_bytes")},
            "peak_rss_bytes": max(r["peak_rss_bytes"] for r in results),
            "seconds_per_step_median": statistics.median(r["seconds_per_step"]["median"] for r in results),
            "seconds_per_step_by_round": [r["seconds_per_step"]["median"] for r in results],
        }
    full, lora = summary["full"], summary["lora"]
    ratios = {
        "trainable_parameters": lora["trainable_parameters"] / full["trainable_parameters"],
        "training_state_bytes": lora["bytes"]["training_state_total"] / full["bytes"]["training_state_total"],
        "optimizer_state_bytes": lora["bytes"]["optimizer_state"] / full["bytes"]["optimizer_state"],
        "peak_rss": lora["peak_rss_bytes"] / full["peak_rss_bytes"],
        "seconds_per_step": lora["seconds_per_step_median"] / full["seconds_per_step_median"],
        "checkpoint_with_training_state": (
            lora["checkpoint_bytes"]["with_training_state"] / full["checkpoint_bytes"]["with_training_state"]
        ),
    }
    result = {
        "benchmark": "lora_memory",
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "args": {k: v for k, v in vars(args).items() if k not in ("child", "base", "out")},
        "full": full,
        "lora": lora,
        "lora_over_full": ratios,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
