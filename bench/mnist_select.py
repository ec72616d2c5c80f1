"""Choose ambient settings or checkpoints from corrupted data alone (issue 11): the clean NELBO of each
model estimated on held-out *corrupted* validation images (``tokendiff.evaluation.ambient.corrupted_nelbo``:
the exact easy estimator above ``t_n``, multiple imputation by the model's own sequential sampler below).

No clean image is used: the validation images are corrupted at the training corruption level with a seed
the training set never used, as a user's held-out corrupted data would be.

    python bench/mnist_select.py /tmp/amb/naive_cont /tmp/amb/cons --images 1000
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from tokendiff.checkpoint import load_checkpoint
from tokendiff.data.corruption import corrupt_images
from tokendiff.data.images import MnistData
from tokendiff.evaluation.ambient import corrupted_nelbo

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoints", nargs="+", type=Path)
    p.add_argument("--images", type=int, default=1000, help="validation images (a fixed random subset)")
    p.add_argument("--observed-fraction", type=float, default=0.1)
    p.add_argument("--impute-rounds", type=int, default=16)
    p.add_argument("--low-nodes", type=int, default=8, help="quadrature nodes in [0, t_n]")
    p.add_argument("--high-nodes", type=int, default=4, help="quadrature nodes in [t_n, 1]")
    p.add_argument("--corruption-seed", type=int, default=777, help="the held-out images' observation masks")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "mnist_select.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    val = MnistData().split("val").windows(784).numpy().astype(np.uint8)
    order = np.random.default_rng(0).permutation(len(val))[: args.images]
    results = {}
    for path in args.checkpoints:
        ckpt = load_checkpoint(path)
        kernel = ckpt.kernel
        y, _ = corrupt_images(val[order], args.observed_fraction, args.corruption_seed, mask_value=kernel.mask_token_id)
        start = time.perf_counter()
        r = corrupted_nelbo(
            ckpt.model,
            kernel,
            torch.from_numpy(y.astype(np.int64)),
            args.observed_fraction,
            impute_rounds=args.impute_rounds,
            low_nodes=args.low_nodes,
            high_nodes=args.high_nodes,
            seed=1234,
        )
        r.pop("per_sequence")
        results[str(path)] = {"step": ckpt.step, "seconds": round(time.perf_counter() - start, 1), **r}
        print(
            f"{path}: step {ckpt.step}  below t_n {r['below_t_n']:7.2f} +- {r['below_t_n_stderr']:.2f}  above t_n "
            f"{r['above_t_n']:6.2f} +- {r['above_t_n_stderr']:.2f}  total {r['total']:7.2f} +- {r['total_stderr']:.2f}",
            flush=True,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"args": vars(args), "results": results, "time": time.ctime()}, indent=2, default=str)
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
