"""Speed against quality of tokendiff's samplers: tokens/s, generative perplexity and unigram entropy.

What is measured
    For each sampler setting below, ``tokendiff.samplers.text.generate`` draws ``--num-samples`` samples of
    the checkpoint's full context (wall time -> tokens/s), and ``tokendiff.evaluation.samples`` scores them
    under an autoregressive reference checkpoint (generative perplexity; lower is more likely text) with
    their unigram entropy (bits per token; collapsing samples lose it) and 4-gram repetition. The same for
    real validation text is the yardstick. The reference plays the role GPT-2 plays in the literature, here
    a model trained on the same corpus.

Settings (``--settings`` picks a subset) of the masked model (``--checkpoint``): ``ancestral_plain`` (MDLM's
exact step, steps = length, no cache: the baseline every speedup is relative to), ``ancestral`` (the same,
cached), ``ancestral_L/4`` ... ``ancestral_L/32`` (fewer steps), ``confidence_L/4``, ``threshold_0.9`` and
``threshold_0.7`` (parallel decoding, steps = length as the upper bound), ``block32_confidence``
(block-wise, L/4 steps), ``block16_dual`` and ``block16_dual_L/2`` (block-wise ancestral with Fast-dLLM's
approximate dual KV cache), ``remask_2L`` (ReMDM cap 0.02 with twice the steps). Of a block diffusion model
(``--block-checkpoint``, BD3-LM): ``bd3_plain`` (steps = length, no KV cache), ``bd3_kv`` (the exact KV
cache), ``bd3_kv_L/2``, ``bd3_kv_L/4``, ``bd3_kv_L/8`` (fewer steps per block), ``bd3_kv_threshold_0.9``.

Usage::

    python bench/sample_quality.py --checkpoint <masked run> --reference <autoregressive run> \
        [--block-checkpoint <block diffusion run>] [--length 256]

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
    """Sampler settings of the masked model: name -> generate() keywords."""
    return {
        "ancestral_plain": {"steps": length, "cache": False},
        "ancestral": {"steps": length},
        "ancestral_L/4": {"steps": length // 4},
        "ancestral_L/8": {"steps": length // 8},
        "ancestral_L/16": {"steps": length // 16},
        "ancestral_L/32": {"steps": length // 32},
        "confidence_L/4": {"steps": length // 4, "strategy": "confidence"},
        "threshold_0.9": {"steps": length, "strategy": "threshold", "threshold": 0.9},
        "threshold_0.7": {"steps": length, "strategy": "threshold", "threshold": 0.7},
        "block32_confidence": {"steps": length // 4, "strategy": "confidence", "block_size": 32},
        "block16_dual": {"steps": length, "block_size": 16, "kv_cache": "dual"},
        "block16_dual_L/2": {"steps": length // 2, "block_size": 16, "kv_cache": "dual"},
        "remask_2L": {"steps": 2 * length, "remask": "cap", "remask_eta": 0.02},
    }


def block_settings(length: int) -> dict[str, dict]:
    """Sampler settings of a block diffusion model (its blocks are its own)."""
    return {
        "bd3_plain": {"steps": length, "kv_cache": "none"},
        "bd3_kv": {"steps": length},
        "bd3_kv_L/2": {"steps": length // 2},
        "bd3_kv_L/4": {"steps": length // 4},
        "bd3_kv_L/8": {"steps": length // 8},
        "bd3_kv_threshold_0.9": {"steps": length, "strategy": "threshold", "threshold": 0.9},
    }


def sample_and_score(ckpt, ref, length: int, num_samples: int, seed: int, **kwargs) -> dict:
    """``num_samples`` samples of ``ckpt`` (loaded checkpoints) with ``generate`` keywords ``kwargs``, timed, and
    scored under the autoregressive ``ref``: tokens/s, model calls, generative perplexity, text statistics."""
    from tokendiff.evaluation.samples import generative_perplexity, text_statistics
    from tokendiff.samplers.text import generate

    start = time.perf_counter()
    texts, stats = generate(
        ckpt.model, ckpt.kernel, ckpt.tokenizer, num_samples=num_samples, length=length, seed=seed,
        batch_size=num_samples, **kwargs,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    ids = [ref.tokenizer.encode(t) for t in texts]
    return {
        "checkpoint": str(ckpt.path),
        "settings": kwargs,
        "tokens_per_s": num_samples * length / seconds,
        "model_calls": stats["model_calls"],
        **generative_perplexity(ref.model, ids),
        **text_statistics(ids),
        "example": texts[0][:200],
        "texts": texts,
    }


def main(argv=None) -> int:
    from tokendiff.build import build_dataset
    from tokendiff.checkpoint import load_checkpoint
    from tokendiff.evaluation.samples import generative_perplexity, text_statistics

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="a masked diffusion run")
    p.add_argument("--block-checkpoint", help="a block diffusion run (model.block_diffusion=true)")
    p.add_argument("--length", type=int, default=None, help="tokens per sample (default: the model's context)")
    p.add_argument("--reference", required=True, help="an autoregressive run of the same corpus")
    p.add_argument("--num-samples", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--settings", nargs="*", default=None)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "sample_quality.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    ckpt, ref = load_checkpoint(args.checkpoint), load_checkpoint(args.reference)
    block = load_checkpoint(args.block_checkpoint) if args.block_checkpoint else None
    length = args.length or ckpt.config.model.block_size
    chosen = {name: (ckpt, kw) for name, kw in settings(length).items()}
    if block is not None:
        chosen |= {name: (block, kw) for name, kw in block_settings(length).items()}
    names = args.settings or list(chosen)
    rows = {}
    for name in names:
        model, kwargs = chosen[name]
        rows[name] = sample_and_score(model, ref, length, args.num_samples, args.seed, **kwargs)
        rows[name].pop("texts")
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
    if base:  # issue 10's target: >= 10x plain ancestral at generative perplexity within 10%, entropy within 2%
        print(f"\n{'setting':22s} {'speedup':>8s} {'gen ppl':>8s} {'entropy':>8s}  target")
        for name, r in rows.items():
            if "tokens_per_s" not in r:
                continue
            r["speedup_vs_plain"] = r["tokens_per_s"] / base["tokens_per_s"]
            r["gen_ppl_vs_plain"] = r["generative_perplexity"] / base["generative_perplexity"] - 1
            r["entropy_vs_plain"] = r["unigram_entropy_bits"] / base["unigram_entropy_bits"] - 1
            r["meets_target"] = (
                r["speedup_vs_plain"] >= 10 and r["gen_ppl_vs_plain"] <= 0.10 and abs(r["entropy_vs_plain"]) <= 0.02
            )
            print(
                f"{name:22s} {r['speedup_vs_plain']:7.1f}x {r['gen_ppl_vs_plain']:+8.1%} "
                f"{r['entropy_vs_plain']:+8.1%}  {'met' if r['meets_target'] else '-'}"
            )
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
