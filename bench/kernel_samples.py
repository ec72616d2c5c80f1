"""Sample quality of each kernel against the number of reverse steps, scored by the autoregressive model.

For every diffusion checkpoint of ``bench/quality.py`` (masked, uniform, hybrid) draw ``--samples``
unprompted samples at each of ``--steps`` reverse steps (ancestral, temperature 1, seed 0), and score
them with the autoregressive checkpoint of the same run: its exact negative log-likelihood per character
("generative perplexity", in bits per char; lower = more like the text the AR model learned). The AR
model's own samples and real validation text are scored the same way as references. Also reported:
the share of distinct character 4-grams (low values = repetition).

This measures where a kernel wins when sampling is cheap (few steps) versus expensive, which the
NELBO alone does not show: uniform and hybrid noise let the sampler revise tokens it already wrote.

    .venv/bin/python bench/kernel_samples.py --samples 32 --steps 8 32 128
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from tokendiff import generate, load_checkpoint
from tokendiff.build import build_dataset
from tokendiff.evaluation import evaluate_likelihood

REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "bench" / "results" / "quality_runs"


def ar_bits_per_char(ar, texts: list[str]) -> float:
    """Mean exact NLL of ``texts`` under the AR checkpoint, bits per character (every text's own length)."""
    windows = [torch.tensor(ar.tokenizer.encode(t)[: ar.config.model.block_size + 1]) for t in texts]
    n = min(len(w) for w in windows)
    result = evaluate_likelihood(ar.model, ar.objective, torch.stack([w[:n] for w in windows]), batch_size=64)
    return result.nelbo_nats_per_token / math.log(2.0)


def distinct_4grams(texts: list[str]) -> float:
    grams = [t[i : i + 4] for t in texts for i in range(len(t) - 3)]
    return len(set(grams)) / max(1, len(grams))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=Path, default=RUNS)
    p.add_argument("--models", nargs="+", default=["mdlm", "udlm", "hybrid"])
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--steps", type=int, nargs="+", default=[8, 32, 128])
    p.add_argument(
        "--time-grids", nargs="+", default=["auto"], help="sampling.time_grid values, each a row (auto | linear | ...)"
    )
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "kernel_samples.json")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    ar = load_checkpoint(args.runs / "ar")
    length = ar.config.model.block_size
    val = build_dataset(ar.config).split("val").windows(length, args.samples)
    real = [ar.tokenizer.decode(row.tolist()) for row in val]
    ar_texts, _ = generate(ar.model, None, ar.tokenizer, num_samples=args.samples, length=length, seed=0)
    rows = [
        {
            "model": "real validation text",
            "steps": None,
            "ar_bits_per_char": ar_bits_per_char(ar, real),
            "distinct_4grams": distinct_4grams(real),
        },
        {
            "model": "ar",
            "steps": length,
            "ar_bits_per_char": ar_bits_per_char(ar, ar_texts),
            "distinct_4grams": distinct_4grams(ar_texts),
        },
    ]
    for name in args.models:
        ckpt = load_checkpoint(args.runs / name)
        for steps, grid in [(s, g) for g in args.time_grids for s in args.steps]:
            start = time.perf_counter()
            texts, stats = generate(
                ckpt.model,
                ckpt.kernel,
                ckpt.tokenizer,
                num_samples=args.samples,
                length=length,
                steps=steps,
                time_grid=grid,
                seed=0,
                batch_size=args.samples,
            )
            rows.append(
                {
                    "model": name if grid == "auto" else f"{name} ({grid} grid)",
                    "time_grid": grid,
                    "steps": steps,
                    "ar_bits_per_char": ar_bits_per_char(ar, texts),
                    "distinct_4grams": distinct_4grams(texts),
                    "seconds": time.perf_counter() - start,
                    "model_calls": stats["model_calls"],
                    "example": texts[0][:200],
                }
            )
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "example"}), flush=True)

    print(f"\n{'model':<22}{'steps':>7}{'AR bits/char':>14}{'distinct 4-grams':>18}")
    for r in rows:
        print(f"{r['model']:<22}{str(r['steps'] or '-'):>7}{r['ar_bits_per_char']:>14.3f}{r['distinct_4grams']:>18.3f}")
    args.out.write_text(
        json.dumps(
            {"benchmark": "kernel_samples", "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=2
        )
        + "\n"
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
