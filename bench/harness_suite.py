"""tokendiff checkpoints scored by lm-evaluation-harness on the play's local task suite, with the backend's speed.

What is measured
    For each ``--runs name=path`` (a masked quickstart model, the autoregressive model of the same size, a
    BD3-LM recipe, ...), the ``tokendiff`` lm-eval backend on the three tasks of
    ``tokendiff.harness.tasks.write_play_tasks`` (two choices: a line of the play against its shuffle; rolling
    perplexity of passages; generation of a speech's first line), one task at a time so that each is timed:
    requests per second of ``loglikelihood`` (``td_choice``, ``--mc-num`` draws, ``greedy=false``: multiple
    choice does not read ``is_greedy``) and of ``generate_until`` (``td_gen``, ``--max-gen-toks`` tokens, the
    backend's default sampler: one token per step, blocks of 32 for masked models), timed inside the backend
    (the harness's own work left out). Diffusion models' numbers
    are bounds (their log-likelihoods lower bounds); the autoregressive model's are exact.

Usage::

    python bench/harness_suite.py --runs mdlm=<run> ar=<run> bd3=<run> [--mc-num 32] [--threads 1]

Writes ``bench/results/harness_suite.json`` (``--out``) and prints the table of ``docs/evaluation.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
METRICS = {"td_choice": "acc,none", "td_ppl": "bits_per_byte,none", "td_gen": "exact_match,none"}


def main(argv=None) -> int:
    from tokendiff.harness.backend import TokendiffLM
    from tokendiff.harness.run import run_harness
    from tokendiff.harness.tasks import write_play_tasks

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", nargs="+", required=True, metavar="NAME=PATH")
    p.add_argument("--mc-num", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-gen-toks", type=int, default=64)
    p.add_argument("--choices", type=int, default=40)
    p.add_argument("--prompts", type=int, default=16, help="generation requests (td_gen documents)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "harness_suite.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = Path(os.environ.get("TOKENDIFF_DATA", REPO.parent / "shared" / "data"))
    tasks = Path(tempfile.mkdtemp(prefix="td_tasks_"))
    write_play_tasks(tasks, (data / "tinyshakespeare" / "input.txt").read_text(), choices=args.choices,
                     prompts=args.prompts, max_gen_toks=args.max_gen_toks)  # fmt: skip
    os.environ.setdefault("HF_HOME", str(tasks / "hf"))
    rows = {}
    for spec in args.runs:
        name, _, path = spec.partition("=")
        lm = TokendiffLM(checkpoint=path, mc_num=args.mc_num, batch_size=args.batch_size, greedy=False, device="cpu")
        row = {"checkpoint": str(lm.ckpt.path), "step": lm.ckpt.step, "kernel": lm.get_model_info()["kernel"]}
        for (task, metric), kind in zip(METRICS.items(), ("loglikelihood", "loglikelihood_rolling", "generate_until")):
            before = list(lm.timing[kind])
            result = run_harness(lm, [task], include_path=str(tasks))
            seconds, requests = (now - then for now, then in zip(lm.timing[kind], before))
            row[task] = {"metric": metric, "value": result["results"][task][metric], "requests": requests,
                         "seconds": seconds, "requests_per_s": requests / seconds}  # fmt: skip
            if task == "td_ppl":
                row[task]["word_perplexity"] = result["results"][task]["word_perplexity,none"]
            if task == "td_gen":
                row[task]["chrf"] = result["results"][task]["chrf,none"]
        rows[name] = row
        print(json.dumps({name: row}), flush=True)
    print(f"\n{'model':10s} {'choice acc':>10s} {'ppl bits/byte':>14s} {'gen chrF':>10s} "
          f"{'loglik req/s':>13s} {'gen req/s':>10s}")  # fmt: skip
    for name, r in rows.items():
        print(f"{name:10s} {r['td_choice']['value']:10.3f} {r['td_ppl']['value']:14.3f} {r['td_gen']['chrf']:10.2f} "
              f"{r['td_choice']['requests_per_s']:13.2f} {r['td_gen']['requests_per_s']:10.3f}")  # fmt: skip
    result = {
        "benchmark": "harness_suite",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "args": {**vars(args), "out": str(args.out)},
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
