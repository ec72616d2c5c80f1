"""Exact figures on an enumerated toy (V = 3 tokens, L = 2, a random joint, the exact leave-one-out denoiser):
what a t_min-truncated NELBO leaves out per kernel, and how fast the sampler's output law converges on each
time grid (``sampling.time_grid``). Everything is computed by enumeration through the library's kernels,
reverse steps and time grids (``tests/toy.py``), no Monte Carlo.

    .venv/bin/python bench/toy_bounds.py            # ~1 minute; writes bench/results/toy_bounds.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from toy import Toy, random_joint_tensor  # noqa: E402
from tokendiff.processes import AbsorbingKernel, HybridKernel, UniformKernel  # noqa: E402
from tokendiff.schedules import CosineSchedule, LogLinearSchedule, make_schedule  # noqa: E402

V, L = 3, 2


def integral(f, a: float, b: float, h: float = 0.05) -> float:
    """``int_a^b f`` by tanh-sinh quadrature (endpoint singularities such as GIDD's sqrt(t))."""
    total = 0.0
    for x in np.arange(-3.0, 3.0 + 1e-9, h):
        s = 0.5 * np.pi * np.sinh(x)
        u = 0.5 * (1.0 + np.tanh(s))
        total += h * 0.25 * np.pi * np.cosh(x) / np.cosh(s) ** 2 * f(a + (b - a) * u) * (b - a)
    return float(total)


def left_out(t_min: float, seed: int) -> dict:
    """Per kernel: the p-weighted NELBO per token, its part below t_min and the t = 0 term."""
    kernels = {
        "absorbing (log_linear)": AbsorbingKernel(V, make_schedule("log_linear")),
        "absorbing (cosine)": AbsorbingKernel(V, make_schedule("cosine")),
        "uniform (log_linear)": UniformKernel(V, make_schedule("log_linear")),
        "uniform (cosine)": UniformKernel(V, make_schedule("cosine")),
        "hybrid p_uniform=0.1": HybridKernel(V, p_uniform=0.1),
        "hybrid p_uniform=0.5": HybridKernel(V, p_uniform=0.5),
    }
    out = {}
    for name, kernel in kernels.items():
        toy = Toy(kernel, random_joint_tensor(V, L, seed))
        below = above = recon = prior = entropy = 0.0
        for x0 in map(tuple, toy.clean.tolist()):
            p = float(toy.joint[x0])
            terms = lambda t, x0=x0, toy=toy: toy.expected_terms(x0, t)  # noqa: E731
            below += p * integral(terms, 0.0, t_min)
            above += p * integral(terms, t_min, 1.0)
            recon += p * toy.expected_reconstruction(x0)
            prior += p * float(kernel.prior_terms(torch.tensor([x0])).double().sum())
            entropy -= p * np.log(p)
        total = below + above + recon + prior
        out[name] = {k: v / L for k, v in dict(nelbo=total, below_t_min=below, reconstruction=recon,
                                                 truncated=above + prior, entropy=entropy).items()}  # fmt: skip
        print(
            f"{name:24s} NELBO {total / L:.4f}  below t_min {below / L:.4f} ({100 * below / total:.1f}%)  "
            f"t = 0 term {recon / L:.4f}  truncated {(above + prior) / L:.4f}  entropy {entropy / L:.4f}",
            flush=True,
        )
    return out


def grids(steps: list[int], seed: int) -> dict:
    """Per kernel and grid: the total variation of the sampler's exact output law from p, and its order."""
    kernels = {  # alpha(1) = 0, so that the limit is p itself (no prior mismatch)
        "absorbing": AbsorbingKernel(V, LogLinearSchedule(eps=0.0)),
        "absorbing (cosine schedule, eps = 0)": AbsorbingKernel(V, CosineSchedule(eps=0.0)),
        "uniform": UniformKernel(V, LogLinearSchedule(eps=0.0)),
        "hybrid p_uniform=0.1": HybridKernel(V, p_uniform=0.1),
        "hybrid p_uniform=0.5": HybridKernel(V, p_uniform=0.5),
        "hybrid p_uniform=0.5 gamma=2": HybridKernel(V, p_uniform=0.5, gamma=2.0),
    }
    out = {}
    for name, kernel in kernels.items():
        toy = Toy(kernel, random_joint_tensor(V, L, seed))
        for grid in ("linear", "alpha", "cosine"):
            tvs = [toy.total_variation(toy.sampler_law(n, grid)) for n in steps]
            order = -float(np.polyfit(np.log(steps), np.log(tvs), 1)[0])
            out[f"{name} / {grid}"] = {"steps": steps, "total_variation": tvs, "order": order}
            print(f"{name:30s} {grid:7s} " + " ".join(f"{v:.2e}" for v in tvs) + f"  order {order:.2f}", flush=True)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--t-min", type=float, default=1e-3)
    p.add_argument("--steps", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "toy_bounds.json")
    args = p.parse_args(argv)
    result = {"left_out": left_out(args.t_min, seed=7), "time_grids": grids(args.steps, seed=3), "t_min": args.t_min}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
