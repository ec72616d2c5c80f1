"""Branches of the ambient study's shared trunk: each arm continued from the same trunk weights for the same
added compute D, for several seeds, a few runs at a time (docs/mnist_ambient.md, "A fair protocol").

The trunk is committed (``bench/results/mnist_trunk3/``: sampling weights + config), so branches trained in
different sessions, on different machines, start from the same weights and can be paired. Each arm's step
count is its share of D: the hard losses cost more per step (the consistency loss runs the model's sampler
and two extra passes), so the arms are given steps measured to take the same CPU time on one thread
(naive 830 steps ~ consistency 540 steps ~ 20 CPU-minutes on the machine of 2026-11-28).

    python bench/mnist_branches.py --arms naive w10 --seeds 1337 1 2 --parallel 2
    python bench/mnist_levels.py bench/results/mnist_runs/naive_s1337 ... --images 400 --threads 1

Runs go to ``bench/results/mnist_runs/<arm>_s<seed>`` (ignored by git); an existing finished run is
skipped, so the script resumes a half-done study.
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mnist_study import RUNS, tokendiff

REPO = Path(__file__).resolve().parents[1]
TRUNK = REPO / "bench" / "results" / "mnist_trunk3"

AMBIENT = [  # the measured consistency variant: a quarter of the masked pixels revealed, on 1/8 of the rows on top
    "+experiment=mnist_ambient",
    "ambient.hard_loss=consistency",
    "ambient.consistency_reveal=0.25",
    "ambient.hard_batch=0.125",
    "ambient.hard_start=0",
]
ARMS = {  # name: (overrides, steps for D)
    "naive": (["+experiment=mnist_baseline"], 830),
    "oracle": (["+experiment=mnist"], 830),  # clean images: how far ambient is from full information
    "w3": ([*AMBIENT, "ambient.consistency_weight=3"], 540),
    "w10": ([*AMBIENT, "ambient.consistency_weight=10"], 540),
    # fewer pixels drawn independently per sampler pass: 8 passes instead of 2, so fewer steps for the same D
    "w10_descent8": ([*AMBIENT, "ambient.consistency_weight=10", "ambient.descent_steps=8"], 325),
}
BRANCH = [  # every branch: from the trunk's weights, a fresh optimizer with a short warm-up and a lower peak rate
    "system.device=cpu",
    "system.compile=false",
    "training.n_epochs=null",
    "training.eval_interval=0",
    "training.sample_interval=0",
    "training.warmup_iters=50",
    "training.learning_rate=5e-4",
    "training.min_lr=5e-5",
]


def branch_command(arm: str, seed: int, trunk: Path, threads: int, out: Path) -> list[str]:
    overrides, steps = ARMS[arm]
    return [
        "train",
        *overrides,
        *BRANCH,
        f"training.init_from={trunk}",
        f"system.threads={threads}",
        f"training.seed={seed}",
        f"training.max_iters={steps}",
        f"output_dir={out}",
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arms", nargs="+", default=["naive", "w10"], choices=list(ARMS))
    p.add_argument("--seeds", nargs="+", type=int, default=[1337, 1, 2], help="training.seed (1337: the preset's)")
    p.add_argument("--trunk", type=Path, default=TRUNK, help="checkpoint the branches start from")
    p.add_argument("--threads", type=int, default=1, help="threads of each run")
    p.add_argument("--parallel", type=int, default=2, help="runs at once (2 on a 2-core machine)")
    p.add_argument("--runs", type=Path, default=RUNS, help="folder of the run directories")
    args = p.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    env.setdefault("TOKENDIFF_DATA", str(REPO.parent / "shared" / "data"))

    def train(arm_seed):
        arm, seed = arm_seed
        out = args.runs / f"{arm}_s{seed}"
        if (out / "final" / "config.json").exists():
            print(f"{out.name}: done already, skipped", flush=True)
            return
        start = time.time()
        tokendiff(branch_command(arm, seed, args.trunk, args.threads, out), args.runs / "logs" / f"{out.name}.log", env)
        print(f"{out.name}: {ARMS[arm][1]} steps in {(time.time() - start) / 60:.1f} min", flush=True)

    jobs = [(arm, seed) for seed in args.seeds for arm in args.arms]  # seed-major: paired arms finish together
    with ThreadPoolExecutor(args.parallel) as pool:
        list(pool.map(train, jobs))


if __name__ == "__main__":
    main()
