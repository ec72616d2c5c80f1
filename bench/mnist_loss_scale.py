"""Scale of each ambient loss and of its gradient, on one checkpoint and the same corrupted images.

The consistency loss is zero for the true conditionals and positive otherwise, but how much does it
move a model? This prints, per image, the easy loss (t >= t_n), the consistency loss (squared and KL)
and the imputation loss (t < t_n) and the norm of each one's gradient, at the same times drawn for all.

    python bench/mnist_loss_scale.py bench/results/mnist_runs/easy --images 32
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from tokendiff.checkpoint import load_checkpoint
from tokendiff.data.images import MnistData
from tokendiff.objectives.ambient import AmbientObjective

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--observed-fraction", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "mnist_loss_scale.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    ckpt = load_checkpoint(args.checkpoint)
    model = ckpt.model.train()
    y = MnistData(observed_fraction=args.observed_fraction).split("train").windows(784)[: args.images]
    q = args.observed_fraction
    objectives = {
        "easy": AmbientObjective(ckpt.kernel, q),
        "consistency (squared)": AmbientObjective(ckpt.kernel, q, divergence="squared"),
        "consistency (kl)": AmbientObjective(ckpt.kernel, q, divergence="kl"),
        "imputation": AmbientObjective(ckpt.kernel, q, hard_loss="imputation"),
    }
    losses = {
        "easy": objectives["easy"].easy_terms,
        "consistency (squared)": objectives["consistency (squared)"].consistency_terms,
        "consistency (kl)": objectives["consistency (kl)"].consistency_terms,
        "imputation": objectives["imputation"].imputation_terms,
    }
    results = {}
    for name, terms in losses.items():
        t_n = objectives[name].t_n
        g = torch.Generator().manual_seed(0)
        u = torch.rand(y.shape[0], generator=g)
        t = t_n + (1 - t_n) * u if name == "easy" else t_n * u
        model.zero_grad()
        loss = terms(model, y, t, g).sum(1).mean()  # nats per image
        loss.backward()
        grad = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in model.parameters())).item()
        results[name] = {"loss_per_image": loss.item(), "grad_norm": grad}
        print(f"{name:>22}: loss per image {loss.item():10.4f}   gradient norm {grad:10.4f}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"args": vars(args), "results": results}, indent=2, default=str))


if __name__ == "__main__":
    main()
