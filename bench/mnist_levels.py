"""Where the NELBO of an MNIST model is lost: its integrand per noise level, above and below t_n.

The masked-diffusion NELBO is ``integral_0^1 I(t) dt`` with ``I(t) = E[w(t) sum_{i masked} -log
p(x_i | x_t)]`` (nats per image). A model trained on 10%-observed images only ever saw inputs with at
most 10% of the pixels visible, that is levels ``t >= t_n`` (``alpha(t_n) = 0.1``); what it does below
``t_n`` is extrapolation unless a loss (consistency) reaches there. This script splits the NELBO of each
checkpoint into the two parts with Gauss-Legendre quadrature in ``t`` on each side of ``t_n``, one draw
of ``x_t`` per image and node, and prints ``I(t)`` at every node, so the models can be compared level
by level against the oracle.

    python bench/mnist_levels.py bench/results/mnist_runs/{oracle,naive,easy,ambient} --images 500
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from tokendiff.checkpoint import load_checkpoint
from tokendiff.data.images import MnistData
from tokendiff.objectives.ambient import level_of_alpha

REPO = Path(__file__).resolve().parents[1]


@torch.no_grad()
def integrand(model, kernel, x: torch.Tensor, t: float, generator, batch: int = 250) -> tuple[float, float]:
    """``I(t)`` in nats per image over images ``x`` (N, 784): mean and standard error (one draw each).

    The kernel's own terms (``Kernel.corrupt``, ``Kernel.nelbo_terms``) at a fixed ``t``: what
    ``CleanObjective.loss_terms`` computes after drawing its times."""
    vals = []
    for s in range(0, x.shape[0], batch):
        xb = x[s : s + batch]
        tt = torch.full((xb.shape[0],), t)
        xt = kernel.corrupt(xb, tt, generator)
        terms = kernel.nelbo_terms(model(xt, tt), xb, xt, tt)  # (b, L)
        vals.append(terms.double().sum(1))
    v = torch.cat(vals)
    return v.mean().item(), (v.std().item() / len(v) ** 0.5)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoints", nargs="+", type=Path)
    p.add_argument("--images", type=int, default=500, help="images of the split (a fixed random subset)")
    p.add_argument("--split", default="test", choices=["val", "test"], help="val to choose settings, test to report")
    p.add_argument("--low-nodes", type=int, default=8, help="quadrature nodes in [0, t_n]")
    p.add_argument("--high-nodes", type=int, default=4, help="quadrature nodes in [t_n, 1]")
    p.add_argument("--observed-fraction", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "mnist_levels.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    test = MnistData().split(args.split).windows(784)
    order = np.random.default_rng(0).permutation(test.shape[0])[: args.images]
    x = test[torch.from_numpy(order)]
    results = {}
    for path in args.checkpoints:
        ckpt = load_checkpoint(path)
        kernel = ckpt.kernel  # the clean kernel, whatever the objective the model was trained with
        t_n = level_of_alpha(kernel, args.observed_fraction)
        parts = {}
        for side, (a, b, n) in {
            "below_t_n": (0.0, t_n, args.low_nodes),
            "above_t_n": (t_n, 1.0, args.high_nodes),
        }.items():
            nodes, weights = np.polynomial.legendre.leggauss(n)
            ts = a + (b - a) * (nodes + 1) / 2
            ws = weights * (b - a) / 2
            rows = []
            total, var = 0.0, 0.0
            for t, w in zip(ts, ws):
                gen = torch.Generator().manual_seed(1234)  # same masks for every model
                m, se = integrand(ckpt.model, kernel, x, float(t), gen)
                rows.append({"t": float(t), "visible": float(kernel.alpha(torch.tensor(t))), "I": m, "se": se})
                total += w * m
                var += (w * se) ** 2
            parts[side] = {"nats_per_image": total, "stderr": var**0.5, "nodes": rows}
        name = path.name
        results[name] = {"checkpoint": str(path), "step": ckpt.step, "t_n": t_n, **parts}
        print(
            f"{name:>10} step {ckpt.step:5d}: below t_n {parts['below_t_n']['nats_per_image']:7.2f} "
            f"+- {parts['below_t_n']['stderr']:.2f}   above t_n {parts['above_t_n']['nats_per_image']:6.2f} "
            f"+- {parts['above_t_n']['stderr']:.2f}   total "
            f"{parts['below_t_n']['nats_per_image'] + parts['above_t_n']['nats_per_image']:7.2f}",
            flush=True,
        )
    names = list(results)
    print("\nI(t), nats per image, per level (visible = share of pixels visible):")
    print(f"{'t':>6} {'visible':>7} " + " ".join(f"{n:>10}" for n in names))
    for side in ("below_t_n", "above_t_n"):
        for k, row in enumerate(results[names[0]][side]["nodes"]):
            cells = " ".join(f"{results[n][side]['nodes'][k]['I']:10.2f}" for n in names)
            print(f"{row['t']:6.3f} {row['visible']:7.3f} {cells}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"args": vars(args), "results": results, "time": time.ctime()}, indent=2, default=str)
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
