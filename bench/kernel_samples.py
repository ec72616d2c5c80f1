"""Sample quality of each kernel against the number of reverse steps, scored by the autoregressive model.

For every diffusion checkpoint of ``bench/quality.py`` (masked, uniform, hybrid) draw ``--samples``
unprompted samples at each of ``--steps`` reverse steps (ancestral, temperature 1, seed 0), and score
them with the autoregressive checkpoint of the same run: its exact negative log-likelihood per character
("generative perplexity", in bits per char; lower = more like the text the AR model learned). The AR
model's own samples and real validation text are scored the same way as references. Both numbers come
from :mod:`tokendiff.evaluation.samples` (the code of ``tokendiff score``): ``ar_bits_per_char`` is
``log2`` of its generative perplexity (bits per token, which is bits per char for the character
tokenizer of these runs), and every row also carries its text statistics (unigram entropy, distinct-2/3,
4-gram repetition), of which ``distinct_4grams`` (the share of distinct character 4-grams; low values =
repetition) is the table's column.

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
from tokendiff.evaluation.samples import generative_perplexity, text_statistics

REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "bench" / "results" / "quality_runs"


def scores(ar, ids: list[list[int]]) -> dict:
    """The AR model's bits per char of token sequences ``ids`` (its tokenizer) and their text statistics."""
    perplexity = generative_perplexity(ar.model, ids, batch_size=64)["generative_perplexity"]
    stats = text_statistics(ids)
    # distinct 4-grams: text_statistics counts n = 2, 3 only; a 3-gram of adjacent pairs is one 4-gram
    distinct_4grams = text_statistics([list(zip(s, s[1:])) for s in ids])["distinct_3"]
    return {"ar_bits_per_char": math.log2(perplexity), "distinct_4grams": distinct_4grams, **stats}


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
    real = build_dataset(ar.config).split("val").windows(length, args.samples).tolist()
    ar_texts, _ = generate(ar.model, None, ar.tokenizer, num_samples=args.samples, length=length, seed=0)
    rows = [
        {"model": "real validation text", "steps": None, **scores(ar, real)},
        {"model": "ar", "steps": length, **scores(ar, [ar.tokenizer.encode(t) for t in ar_texts])},
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
                    "seconds": time.perf_counter() - start,
                    "model_calls": stats["model_calls"],
                    **scores(ar, [ar.tokenizer.encode(t) for t in texts]),
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
