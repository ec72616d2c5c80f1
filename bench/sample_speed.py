"""Sampling speed of DiffusionSampler with the logits cache on and off.

What is measured
    Tokens per second and model calls of ``tokendiff.DiffusionSampler`` generating ``--batch-size``
    sequences of ``--length`` tokens (256 by default) from all-masked input, for several step counts
    (64, 256, 1024 by default), once with ``cache=True`` and once with ``cache=False``, with the same
    seed and the same per-row noise (``tokendiff.samplers.row_generators``). The two outputs must be
    identical (``torch.equal``, checked): the cache only skips model calls whose input did not change.

    The model is the 4-layer, 4-head, 256-wide transformer (vocab 65) with random weights, or the
    model of ``--checkpoint`` (loaded with ``tokendiff.load_checkpoint``).

Why a random-init model is fine
    The cost of sampling is (number of model calls) x (cost of one call) + per-step work that does
    not depend on the weights (log-probabilities, the reverse step, the Gumbel noise over V + 1
    values per position). A call is skipped when the previous step revealed no token anywhere in the
    batch. With the ancestral strategy each masked token is revealed at a step with probability
    ``(alpha_s - alpha_t) / (1 - alpha_t)``, which depends only on the schedule, not on the model;
    so how many calls are skipped depends only on the schedule, the number of steps and the number
    of masked positions (batch size x length), not on the weights (which token is revealed does
    depend on them, so a trained model's count differs from run to run but not in distribution).
    The table shows this expected count next to the measured one.

    The cache works on the whole batch: a call is skipped only when *no row* changed. With
    ``B x L`` masked positions and ``N`` steps of the log-linear schedule about
    ``N (1 - exp(-B L / N))`` calls remain, so greater batches skip fewer calls (at 1024 steps and
    256 tokens: ~226 calls for 1 sample, ~647 for 4, ~1005 for 16). Hence the default of 4 samples,
    what ``tokendiff sample`` draws by default; try ``--batch-size 1`` and ``16`` for the extremes.

Why ratios, side by side, in one run
    Absolute timings on a small shared CPU (2 cores here) drift between runs. Both settings run in
    the same process, back to back for each step count, and the speedup (a ratio) is what to read.

Full run::

    /work/venv/bin/python bench/sample_speed.py                      # random init
    /work/venv/bin/python bench/sample_speed.py --checkpoint out/shakespeare_char

Smoke test::

    /work/venv/bin/python bench/sample_speed.py --steps 8 32 --batch-size 2 --length 32 --threads 1 \
        --out /tmp/smoke_sample_speed.json

Writes ``bench/results/sample_speed.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

import tokendiff
from tokendiff.models import Transformer
from tokendiff.processes import AbsorbingKernel, Kernel
from tokendiff.samplers import DiffusionSampler, row_generators
from tokendiff.schedules import LogLinearSchedule

RESULTS = Path(__file__).resolve().parent / "results"


def expected_calls(kernel: Kernel, steps: int, masked: int) -> float:
    """Expected model calls of the cached ancestral loop from ``masked`` masked positions (all rows).

    Step 0 always calls the model; step i > 0 calls it when step i - 1 revealed at least one token.
    A masked token is revealed at step i with probability (alpha_{i+1} - alpha_i) / (1 - alpha_0),
    independently of the others and of the model. (Ignores the early stop when every token is
    revealed before the last step, which is negligible unless masked positions are few.)
    """
    times = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    alphas = kernel.alpha(times)
    alphas[-1] = 1.0
    p = (alphas[1:] - alphas[:-1]) / (1.0 - alphas[0])  # (N,) reveal step distribution
    changed = 1.0 - (1.0 - p[:-1]) ** masked  # step i revealed something, i = 0..N-2
    return 1.0 + float(changed.sum())


def run(model, kernel, x_init, steps, cache, seed, strategy, temperature):
    sampler = DiffusionSampler(model, kernel, steps=steps, temperature=temperature, strategy=strategy, cache=cache)
    gens = row_generators(seed, x_init.shape[0])
    start = time.perf_counter()
    out = sampler.sample(x_init, gens)
    return out, time.perf_counter() - start, sampler.model_calls


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--steps", type=int, nargs="+", default=[64, 256, 1024], help="reverse step counts")
    p.add_argument(
        "--batch-size",
        type=int,
        default=4,
        help="sequences sampled at once (4: what `tokendiff sample` does with its default num_samples=4)",
    )
    p.add_argument("--length", type=int, default=256, help="tokens per sequence (at most the model's block size)")
    p.add_argument("--checkpoint", default=None, help="a run or checkpoint directory; default: a random-init model")
    p.add_argument("--strategy", choices=["ancestral", "confidence"], default="ancestral")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=1, help="runs of each setting per step count; the median time counts")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--out", type=Path, default=RESULTS / "sample_speed.json")
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.checkpoint:
        ckpt = tokendiff.load_checkpoint(args.checkpoint)
        model, kernel = ckpt.model, ckpt.kernel
        if kernel is None:
            raise SystemExit(f"{ckpt.path} is an autoregressive model; this benchmark needs a masked diffusion one")
        source = str(ckpt.path)
    else:
        torch.manual_seed(args.seed)
        model = Transformer(vocab_size=65, n_layer=4, n_head=4, n_embd=256, block_size=256)
        kernel = AbsorbingKernel(65, LogLinearSchedule(eps=1e-3))
        source = "random init (4 layers x 4 heads x 256 wide, vocab 65)"
    model.eval()
    if args.length > model.block_size:
        raise SystemExit(f"--length {args.length} exceeds the model's block size {model.block_size}")
    time_conditioned = bool(model.time_conditioning)
    B, L = args.batch_size, args.length
    x_init = torch.full((B, L), kernel.mask_token_id, dtype=torch.long)
    tokens = B * L

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; model: {source}, "
        f"{model.num_parameters():,} parameters"
    )
    print(
        f"{B} samples x {L} tokens, strategy {args.strategy}, temperature {args.temperature}, "
        f"seed {args.seed}" + ("; time-conditioned model: the cache is disabled" if time_conditioned else ""),
        flush=True,
    )

    with torch.no_grad():  # warm-up: the first call of a process pays for allocations and kernel selection
        model(x_init, torch.ones(B))

    rows = []
    for steps in args.steps:
        times_off, times_on = [], []
        for rep in range(args.repeats):  # alternate which setting goes first
            order = (False, True) if rep % 2 == 0 else (True, False)
            for cache in order:
                out, seconds, calls = run(
                    model, kernel, x_init, steps, cache, args.seed, args.strategy, args.temperature
                )
                if cache:
                    out_on, calls_on = out, calls
                    times_on.append(seconds)
                else:
                    out_off, calls_off = out, calls
                    times_off.append(seconds)
        s_off, s_on = statistics.median(times_off), statistics.median(times_on)
        assert torch.equal(out_on, out_off), f"cache=True and cache=False gave different samples at {steps} steps"
        assert not (out_on == kernel.mask_token_id).any(), "masks remain after the last step"
        expected = expected_calls(kernel, steps, B * L) if args.strategy == "ancestral" else None
        rows.append(
            {
                "steps": steps,
                "no_cache": {
                    "seconds": s_off,
                    "all_seconds": times_off,
                    "tokens_per_s": tokens / s_off,
                    "model_calls": calls_off,
                },
                "cache": {
                    "seconds": s_on,
                    "all_seconds": times_on,
                    "tokens_per_s": tokens / s_on,
                    "model_calls": calls_on,
                },
                "expected_model_calls_cache": expected,
                "speedup": s_off / s_on,
                "identical": True,
            }
        )
        print(
            f"  {steps} steps: no cache {s_off:.1f}s ({calls_off} calls), cache {s_on:.1f}s ({calls_on} calls)",
            flush=True,
        )

    header = (
        f"{'steps':>6}{'tok/s no cache':>16}{'tok/s cache':>13}{'calls no cache':>16}"
        f"{'calls cache':>13}{'expected':>10}{'speedup':>9}  identical"
    )
    print()
    print(header)
    print("-" * len(header))
    for r in rows:
        exp = f"{r['expected_model_calls_cache']:.1f}" if r["expected_model_calls_cache"] is not None else "-"
        print(
            f"{r['steps']:>6}{r['no_cache']['tokens_per_s']:>16,.0f}{r['cache']['tokens_per_s']:>13,.0f}"
            f"{r['no_cache']['model_calls']:>16}{r['cache']['model_calls']:>13}{exp:>10}"
            f"{r['speedup']:>8.2f}x  {'yes' if r['identical'] else 'NO'}"
        )

    result = {
        "benchmark": "sample_speed",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "environment": {
            "torch": torch.__version__,
            "tokendiff": tokendiff.__version__,
            "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
        },
        "model": source,
        "parameters": model.num_parameters(),
        "time_conditioned": time_conditioned,
        "tokens_per_run": tokens,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
