"""Speed against quality of tokendiff's samplers: tokens/s, generative perplexity and unigram entropy.

What is measured
    For each sampler setting below, ``tokendiff.samplers.text.generate`` draws ``--num-samples`` samples of
    the checkpoint's full context (wall time -> tokens/s), and ``tokendiff.evaluation.samples`` scores them
    under an autoregressive reference checkpoint (generative perplexity; lower is more likely text) with
    their unigram entropy (bits per token; collapsing samples lose it) and 4-gram repetition. The same for
    real validation text is the yardstick. The reference plays the role GPT-2 plays in the literature, here
    a model trained on the same corpus.

Settings (``--settings`` picks a subset): ``ancestral_plain`` (MDLM's exact step, steps = length, no cache),
``ancestral`` (the same, cached), ``confidence_L/4``, ``threshold_0.9`` and ``threshold_0.7`` (parallel
decoding, steps = length as the upper bound), ``block32_confidence`` (block-wise, L/4 steps),
``remask_2L`` (ReMDM cap 0.02 with twice the steps).

Usage::

    python bench/sample_quality.py --checkpoint <masked run> --reference <autoregressive run>

Writes ``bench/results/sample_quality.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def settings(length: int) -> dict[str, dict]:
    return {
        "ancestral_plain": {"steps": length, "cache": False},
        "ancestral": {"steps": length},
        "confidence_L/4": {"steps": length // 4, "strategy": "confidence"},
        "threshold_0.9": {"steps": length, "strategy": "threshold", "threshold": 0.9},
        "threshold_0.7": {"steps": length, "strategy": "threshold", "threshold": 0.7},
        "block32_confidence": {"steps": length // 4, "strategy": "confidence", "block_size": 32},
        "remask_2L": {"steps": 2 * length, "remask": "cap", "remask_eta": 0.02},
    }


def main(argv=None) -> int:
    from tokendiff.build import build_dataset
    from tokendiff.checkpoint import load_checkpoint
    from tokendiff.evaluation.samples import generative_perplexity, text_statistics
    from tokendiff.samplers.text import generate

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="a masked diffusion run")
    p.add_argument("--reference", required=True, help="an autoregressive run of the same corpus")
    p.add_argument("--num-samples", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--settings", nargs="*", default=None)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "sample_quality.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    ckpt, ref = load_checkpoint(args.checkpoint), load_checkpoint(args.reference)
    length = ckpt.config.model.block_size
    chosen = settings(length)
    names = args.settings or list(chosen)
    rows = {}
    for name in names:
        kwargs = chosen[name]
        start = time.perf_counter()
        texts, stats = generate(
            ckpt.model, ckpt.kernel, ckpt.tokenizer, num_samples=args.num_samples, length=length, seed=args.seed,
            batch_size=args.num_samples, **kwargs,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        ids = [ref.tokenizer.encode(t) for t in texts]
        rows[name] = {
            "settings": kwargs,
            "tokens_per_s": args.num_samples * length / seconds,
            "model_calls": stats["model_calls"],
            **generative_perplexity(ref.model, ids),
            **text_statistics(ids),
            "example": texts[0][:200],
        }
        r = rows[name]
        print(
            f"{name:20s} {r['tokens_per_s']:8.0f} tokens/s  {r['model_calls']:4d} calls  gen ppl "
            f"{r['generative_perplexity']:6.2f}  entropy {r['unigram_entropy_bits']:.3f}  rep4 {r['repetition_4']:.3f}",
            flush=True,
        )
    real = build_dataset(ref.config).split("val").windows(length, args.num_samples).tolist()
    rows["real_text"] = {**generative_perplexity(ref.model, real), **text_statistics(real)}
    print(f"{'real_text':20s} gen ppl {rows['real_text']['generative_perplexity']:.2f}  "
          f"entropy {rows['real_text']['unigram_entropy_bits']:.3f}")  # fmt: skip
    base = rows.get("ancestral_plain")
    if base:
        for r in rows.values():
            if "tokens_per_s" in r:
                r["speedup_vs_plain"] = r["tokens_per_s"] / base["tokens_per_s"]
    result = {
        "benchmark": "sample_quality",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "args": {**vars(args), "out": str(args.out)},
        "length": length,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
