"""The generative-perplexity-against-entropy frontier of one checkpoint's sampler settings (and MAUVE).

Generative perplexity alone rewards repetitive samples (a sampler that repeats "the the the" scores well), so
papers now report it against the samples' unigram entropy: each sampler setting is a point, and the settings
that no other beats on both (lower gen-PPL, higher entropy) form the frontier. Real validation text is
marked as the yardstick.

What is measured
    For every combination of ``--steps`` x ``--temperatures`` x ``--strategies`` x ``--remask``,
    ``bench/sample_quality.py``'s ``sample_and_score`` (``tokendiff.samplers.text.generate`` then
    ``tokendiff.evaluation.samples`` under the autoregressive ``--reference``) gives tokens/s, generative
    perplexity, unigram entropy (bits per token) and 4-gram repetition. Combinations the kernel cannot run
    (e.g. ``confidence`` for uniform noise) are listed as skipped with the reason. With ``--mauve``, MAUVE
    (the ``mauve-text`` package) between each setting's samples and as many windows of real validation
    text, on features from the reference's own last hidden state (mean over positions), so nothing is
    downloaded; MAUVE of that few samples is noisy: compare settings, not papers.

Usage::

    python bench/frontier.py --checkpoint <run> --reference <autoregressive run> \
        [--steps 32 128] [--temperatures 0.8 1.0] [--strategies ancestral confidence] [--remask none cap] [--mauve]

    a strategy may carry other sampling settings: ``--strategies ancestral entropy_bound:entropy_bound=0.5
    block_refinement:editing_threshold=0.9 ddim:corrector_steps=1``

Writes ``bench/results/frontier.json`` and ``frontier.png`` beside it (``--out``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sample_quality import REPO, sample_and_score  # noqa: E402


def strategy_spec(spec: str) -> tuple[str, dict]:
    """``entropy_bound:entropy_bound=0.5,temperature_start=0.8`` -> the strategy and its other sampling settings
    (numbers as numbers, ``none`` as None)."""
    strategy, _, rest = spec.partition(":")
    extra = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        extra[key] = None if value.lower() == "none" else json.loads(value) if value[:1].isdigit() else value
    return strategy, extra


def pareto(points: dict[str, tuple[float, float]]) -> list[str]:
    """Names of the points (gen-PPL, entropy) no other point beats on both: lower gen-PPL, higher entropy."""
    return [
        name
        for name, (ppl, ent) in points.items()
        if not any(p <= ppl and e >= ent and (p, e) != (ppl, ent) for p, e in points.values())
    ]


@torch.no_grad()
def features(ref, texts: list[str]) -> torch.Tensor:
    """(N, D) MAUVE features: the reference's last hidden state (its final norm's output), mean over positions."""
    norm = getattr(ref.model, "norm", None)
    if norm is None:
        raise SystemExit("--mauve needs a tokendiff transformer reference (its final norm gives the features)")
    out = []
    hook = norm.register_forward_hook(lambda module, args, output: out.append(output.mean(1)))
    try:
        for text in texts:
            ids = torch.tensor([ref.tokenizer.encode(text)[: ref.model.block_size]])
            ref.model(ids, None)
    finally:
        hook.remove()
    return torch.cat(out).float()


def mauve_score(ref, samples: list[str], real: list[str], seed: int) -> float:
    import mauve

    p, q = features(ref, real).numpy(), features(ref, samples).numpy()
    buckets = max(2, min(len(p), len(q)) // 10)  # mauve's own rule (N / 10 clusters), at least two
    out = mauve.compute_mauve(p_features=p, q_features=q, num_buckets=buckets, seed=seed, verbose=False)
    return float(out.mauve)


def plot(rows: dict, real: dict, front: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for name, r in rows.items():
        on = name in front
        ax.scatter(r["unigram_entropy_bits"], r["generative_perplexity"], c="C0" if on else "C7", s=30 if on else 15)
        ax.annotate(name, (r["unigram_entropy_bits"], r["generative_perplexity"]), fontsize=6, alpha=0.8)
    ordered = sorted(front, key=lambda n: rows[n]["unigram_entropy_bits"])
    ax.plot(
        [rows[n]["unigram_entropy_bits"] for n in ordered], [rows[n]["generative_perplexity"] for n in ordered], "C0-"
    )
    ax.scatter(
        real["unigram_entropy_bits"], real["generative_perplexity"], marker="*", s=200, c="C3", label="real text"
    )
    ax.set_xlabel("unigram entropy of the samples (bits per token)")
    ax.set_ylabel("generative perplexity under the reference")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("sampler settings: the frontier (blue) against real text (star)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    from tokendiff.build import build_dataset
    from tokendiff.checkpoint import load_checkpoint
    from tokendiff.errors import TokenDiffError
    from tokendiff.evaluation.samples import generative_perplexity, text_statistics

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="a diffusion run")
    p.add_argument("--reference", required=True, help="an autoregressive run of the same corpus")
    p.add_argument("--length", type=int, default=None, help="tokens per sample (default: the model's context)")
    p.add_argument("--steps", type=int, nargs="+", default=[32, 128])
    p.add_argument("--temperatures", type=float, nargs="+", default=[0.7, 0.85, 1.0])
    p.add_argument(
        "--strategies",
        nargs="+",
        default=["ancestral", "confidence"],
        help="each a strategy, with other sampling settings after a colon: entropy_bound:entropy_bound=0.5",
    )
    p.add_argument("--remask", nargs="+", default=["none"])
    p.add_argument("--num-samples", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mauve", action="store_true", help="MAUVE against real text (pip install mauve-text)")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "frontier.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    ckpt, ref = load_checkpoint(args.checkpoint), load_checkpoint(args.reference)
    length = args.length or ckpt.config.model.block_size
    split = build_dataset(ref.config).split("val")
    real_ids = split.windows(length, args.num_samples).tolist()
    real = {**generative_perplexity(ref.model, real_ids), **text_statistics(real_ids)}
    real_texts = [ref.tokenizer.decode(w) for w in real_ids]
    rows, skipped = {}, {}
    for steps, temperature, spec, remask in itertools.product(
        args.steps, args.temperatures, args.strategies, args.remask
    ):
        strategy, extra = strategy_spec(spec)
        name = f"{spec}_s{steps}_T{temperature:g}" + ("" if remask == "none" else f"_{remask}")
        kwargs = {"steps": steps, "temperature": temperature, "strategy": strategy, "remask": remask, **extra}
        try:
            row = sample_and_score(ckpt, ref, length, args.num_samples, args.seed, **kwargs)
        except TokenDiffError as e:  # a combination this kernel cannot run
            skipped[name] = str(e)
            continue
        texts = row.pop("texts")
        if args.mauve:
            row["mauve"] = mauve_score(ref, texts, real_texts, args.seed)
        rows[name] = row
        extra = f"  mauve {row['mauve']:.3f}" if args.mauve else ""
        print(f"{name:32s} gen ppl {row['generative_perplexity']:7.2f}  entropy {row['unigram_entropy_bits']:.3f}"
              f"  rep4 {row['repetition_4']:.3f}  {row['tokens_per_s']:6.0f} tokens/s{extra}", flush=True)  # fmt: skip
    if not rows:
        raise SystemExit(f"no setting ran: {skipped}")
    front = pareto({n: (r["generative_perplexity"], r["unigram_entropy_bits"]) for n, r in rows.items()})
    print(f"frontier: {', '.join(sorted(front, key=lambda n: rows[n]['unigram_entropy_bits']))}")
    print(f"real text: gen ppl {real['generative_perplexity']:.2f}  entropy {real['unigram_entropy_bits']:.3f}")
    result = {
        "benchmark": "frontier",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "args": {**vars(args), "out": str(args.out)},
        "checkpoint": str(ckpt.path),
        "reference": str(ref.path),
        "length": length,
        "rows": rows,
        "frontier": front,
        "skipped": skipped,
        "real_text": real,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    plot(rows, real, front, args.out.with_suffix(".png"))
    print(f"[{args.out} and {args.out.with_suffix('.png')} written]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
