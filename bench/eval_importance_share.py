"""Standard error of evaluation's bound against the share of times drawn from the power law near t = 0.

``tokendiff eval`` draws its times from ``(1 - share) U[0, 1] + share * law(u^k)``
(:func:`tokendiff.objectives.times.importance_times`). The share moves only the Monte Carlo error, never
the bound: too large and the bulk of [0, 1] is sampled with uneven weights, too small and the t -> 0 tail
(log-divergent for masks, like t^-1/2 for GIDD's hybrid noise) comes back. For each checkpoint and share,
the same windows and draws per window go through ``evaluate_likelihood(importance_share=...)``.

    .venv/bin/python bench/eval_importance_share.py /work/runs_k/mdlm /work/runs_k/hybrid --shares 0.5 0.2 0.1 0.05 0.02
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from tokendiff import load_checkpoint
from tokendiff.build import build_dataset
from tokendiff.evaluation import evaluate_likelihood

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--shares", type=float, nargs="+", default=[0.5, 0.2, 0.1, 0.05, 0.02])
    p.add_argument("--windows", type=int, default=96, help="validation windows (the first ones)")
    p.add_argument("--draws", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "eval_importance_share.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = {"windows": args.windows, "draws": args.draws, "runs": {}}
    for path in args.checkpoints:
        ckpt = load_checkpoint(path)
        windows = build_dataset(ckpt.config).split("val").windows(ckpt.model.block_size, args.windows)
        rows = {}
        for share in args.shares:
            start = time.perf_counter()
            r = evaluate_likelihood(
                ckpt.model, ckpt.objective, windows, num_draws=args.draws, seed=0, importance_share=share
            )
            rows[str(share)] = {
                "nelbo_nats_per_token": r.nelbo_nats_per_token,
                "stderr": r.nelbo_nats_per_token_stderr,
                "below_t_min_nats_per_token": r.below_t_min_nats_per_token,
                "seconds": round(time.perf_counter() - start, 1),
            }
            nelbo, stderr = r.nelbo_nats_per_token, r.nelbo_nats_per_token_stderr
            print(f"{path} share {share}: {nelbo:.4f} +- {stderr:.4f}", flush=True)
        result["runs"][f"{Path(path).name} ({ckpt.kernel.name})"] = rows
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
