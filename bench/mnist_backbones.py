"""Which image backbone trains best on a 2-core CPU? Equal wall-clock budget, same masked-diffusion loss.

Candidates (all time-agnostic, 3 input states per pixel, 2 logits per pixel out):
    patch4   tokendiff's ImagePatchTransformer, 4x4 patches (49 tokens), 6 layers x 256
    patch2   the same with 2x2 patches (196 tokens), 4 layers x 128
    convnet  a residual CNN at full 28x28 resolution, 8 blocks x 64 channels, dilations 1-2-4-8
             (the U-Net-like family: every pixel sees a 60-pixel receptive field)

Each is trained for ``--minutes`` with AdamW (lr 1e-3, cosine over the measured number of steps),
bf16 autocast, batch 64, on static binarized MNIST, then scored by the NELBO on the first
``--eval-images`` validation images (2 Monte Carlo draws). Reported: images/s, steps done, NELBO.
Run in one process one after the other, so the machine is the same for all.

    python bench/mnist_backbones.py --minutes 3
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from tokendiff.data.images import MnistData
from tokendiff.evaluation import evaluate_likelihood
from tokendiff.models.image import ImageConvNet, ImagePatchTransformer
from tokendiff.objectives import CleanObjective
from tokendiff.processes import AbsorbingKernel
from tokendiff.schedules import LogLinearSchedule

RESULTS = Path(__file__).resolve().parent / "results"


CANDIDATES = {
    "patch4": lambda: ImagePatchTransformer(patch=4, n_layer=6, n_head=4, n_embd=256),
    "patch2": lambda: ImagePatchTransformer(patch=2, n_layer=4, n_head=4, n_embd=128),
    "convnet": lambda: ImageConvNet(n_layer=8, n_embd=64),
}


def run(name, make, minutes, batch, train, val, eval_images):
    torch.manual_seed(0)
    model = make()
    params = sum(p.numel() for p in model.parameters())
    objective = CleanObjective(AbsorbingKernel(2, LogLinearSchedule()))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(0)

    # measure step time first (5 steps), then fix the number of steps so the cosine completes
    def step(i, total):
        lr = 1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(i / total, 1.0))))
        for group in opt.param_groups:
            group["lr"] = lr
        x = train.batch(batch, 784, g)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = objective.loss_terms(model, x, g).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.item()

    start = time.perf_counter()
    for i in range(5):
        step(i, 1000)
    per_step = (time.perf_counter() - start) / 5
    total = max(10, int(minutes * 60 / per_step))
    start = time.perf_counter()
    for i in range(5, total):
        step(i, total)
    seconds = time.perf_counter() - start
    model.eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        r = evaluate_likelihood(model, objective, val.windows(784, eval_images), num_draws=2, batch_size=250, seed=0)
    return {
        "params": params,
        "steps": total,
        "images_per_s": (total - 5) * batch / seconds,
        "nelbo_nats_per_image": r.nelbo_nats_per_token * 784,
        "nelbo_stderr": r.nelbo_nats_per_token_stderr * 784,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=3.0)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--eval-images", type=int, default=2000)
    p.add_argument("--only", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    args = p.parse_args()
    data = MnistData()
    train, val = data.split("train"), data.split("val")
    results = {}
    for name in args.only:
        results[name] = run(name, CANDIDATES[name], args.minutes, args.batch, train, val, args.eval_images)
        r = results[name]
        print(
            f"{name:8s} {r['params']:>10,} params  {r['images_per_s']:7.1f} img/s  {r['steps']:5d} steps  "
            f"NELBO {r['nelbo_nats_per_image']:.2f} ± {r['nelbo_stderr']:.2f} nats/image",
            flush=True,
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "mnist_backbones.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=2))


if __name__ == "__main__":
    main()
