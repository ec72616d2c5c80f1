"""The ambient study: four MNIST models at equal compute, and every metric of each.

Models (shared/notes/ambient.md, "How to tell whether it works"):
    O  oracle      ``+experiment=mnist``            clean static binarized MNIST
    N  naive       ``+experiment=mnist_baseline``   10%-observed images as if clean (unscored gaps)
    E  easy only   ``+experiment=mnist_ambient ambient.consistency_weight=0``
    C  consistency ``+experiment=mnist_ambient``    easy + consistency loss (the recipe's default)
    I  imputation  ``+experiment=mnist_ambient ambient.hard_loss=imputation``  easy + imputation loss

Equal compute: the objectives cost different amounts per step (the consistency loss runs the
model's sampler and two extra forward passes), so each is first calibrated (seconds per step, with the
same thread count) and then given ``max_iters = budget / (seconds per step)``: the same CPU time, fixed
in steps so that the comparison does not depend on what else the machine did meanwhile. The learning
rate schedule then completes in every run.

Each model is evaluated with ``tokendiff eval``: NELBO in nats per image on the static binarized test
set with its Monte Carlo standard error, the classifier Frechet distance, confidence, class coverage
and entropy of samples, their nearest-neighbour Hamming distance to the training set, and inpainting
accuracy on 10%-observed test images. The table goes to stdout, ``bench/results/mnist_study.json`` and
``docs/mnist_ambient.md``.

    python bench/mnist_study.py --minutes 25 --threads 1 --parallel 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
RUNS = RESULTS / "mnist_runs"

MODELS = {
    "oracle": ["+experiment=mnist"],
    "naive": ["+experiment=mnist_baseline"],
    "easy": ["+experiment=mnist_ambient", "ambient.consistency_weight=0"],
    "consistency": ["+experiment=mnist_ambient", "ambient.hard_loss=consistency"],
    "imputation": ["+experiment=mnist_ambient", "ambient.hard_loss=imputation"],
}
COMMON = [
    "system.device=cpu",
    "training.n_epochs=null",
    "training.eval_interval=0",
    "training.sample_interval=0",
    "training.log_interval=1",
    "logging.wandb=false",
]


def tokendiff(args: list[str], log: Path, env: dict) -> str:
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "tokendiff.cli.main", *args]
    with open(log, "w") as f:
        f.write("$ tokendiff " + " ".join(args) + "\n")
        f.flush()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=f, text=True, env=env, cwd=REPO)
        f.write(proc.stdout)
    if proc.returncode != 0:
        raise SystemExit(f"tokendiff {' '.join(args)} failed (exit {proc.returncode}); see {log}")
    return proc.stdout


def seconds_per_step(run_dir: Path, skip: int = 3) -> float:
    times = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    ms = sorted(r["train/time_ms"] for r in times if "train/time_ms" in r and r["step"] > skip)
    return ms[len(ms) // 2] / 1000.0


def run_name(model: str, seed: int) -> str:
    return model if seed == 0 else f"{model}_seed{seed}"


def aggregate(runs: list[dict], key: str) -> tuple[float | None, float | None, int]:
    """Mean, standard deviation over seeds (None for one run) and number of runs of ``key``."""
    values = [r[key] for r in runs if r.get(key) is not None]
    if not values:
        return None, None, 0
    mean = sum(values) / len(values)
    sd = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else None
    return mean, sd, len(values)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=25.0, help="training CPU budget of each model")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--parallel", type=int, default=2, help="models trained at once")
    p.add_argument("--calib-steps", type=int, default=12)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="training.seed of each run (0: the preset's)")
    p.add_argument("--eval-samples", type=int, default=1000)
    p.add_argument("--eval-steps", type=int, default=100)
    p.add_argument("--eval-draws", type=int, default=2)
    p.add_argument("--eval-images", type=int, default=None, help="test images for the NELBO (default: all 10,000)")
    p.add_argument("--override", action="append", default=[], help="extra override for every model")
    p.add_argument("--skip-train", action="store_true", help="only evaluate existing runs")
    p.add_argument("--train-only", action="store_true", help="train, then stop (evaluate later with --skip-train)")
    p.add_argument("--table-only", action="store_true", help="only rewrite the table from the results in --out")
    p.add_argument(
        "--merge", action="store_true", help="keep the results (and commands) of models not run now from --out"
    )
    p.add_argument("--out", type=Path, default=RESULTS / "mnist_study.json")
    p.add_argument("--doc", type=Path, default=REPO / "docs" / "mnist_ambient.md")
    args = p.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    env.setdefault("TOKENDIFF_DATA", str(REPO.parent / "shared" / "data"))
    threads = [f"system.threads={args.threads}"]

    calib = {}
    commands = {}
    runs = [] if args.table_only else [(name, seed) for seed in args.seeds for name in args.models]
    if args.table_only:
        args.skip_train = args.merge = True
    for name in args.models if runs else []:  # seconds per step, measured once per model (reused when present)
        run = RUNS / f"calibrate_{name}"
        if not args.skip_train and not (run / "log.jsonl").exists():
            tokendiff(
                [
                    "train",
                    *MODELS[name],
                    *COMMON,
                    *threads,
                    *args.override,
                    f"training.max_iters={args.calib_steps}",
                    "training.eval_iters=1",
                    "sampling.steps=1",
                    f"output_dir={run}",
                ],
                RUNS / "logs" / f"calibrate_{name}.log",
                env,
            )
        if (run / "log.jsonl").exists():
            calib[name] = seconds_per_step(run)
            print(f"calibration {name}: {calib[name] * 1000:.0f} ms/step", flush=True)

    def train(name_seed):
        name, seed = name_seed
        steps = max(1, int(args.minutes * 60 / calib[name]))
        cmd = [
            "train",
            *MODELS[name],
            *COMMON,
            *threads,
            *args.override,
            *([f"training.seed={seed}"] if seed else []),
            f"training.max_iters={steps}",
            f"training.warmup_iters={min(200, steps // 10)}",
            f"output_dir={RUNS / run_name(name, seed)}",
        ]
        commands[run_name(name, seed)] = (
            "tokendiff " + " ".join(c for c in cmd if "output_dir" not in c) + f" output_dir=out/{run_name(name, seed)}"
        )
        start = time.time()
        tokendiff(cmd, RUNS / "logs" / f"train_{run_name(name, seed)}.log", env)
        print(f"trained {run_name(name, seed)}: {steps} steps in {(time.time() - start) / 60:.1f} min", flush=True)

    if not args.skip_train:
        with ThreadPoolExecutor(args.parallel) as pool:
            list(pool.map(train, runs))
    if args.train_only:
        return
    # step counts come from the checkpoints
    steps = {
        run_name(n, s): json.loads((RUNS / run_name(n, s) / "final" / "config.json").read_text())["step"]
        for n, s in runs
    }

    results = {}
    for model, seed in runs:
        name = run_name(model, seed)
        out = tokendiff(
            [
                "eval",
                f"checkpoint={RUNS / name}",
                *threads,
                f"eval.num_samples={args.eval_samples}",
                f"eval.sampling_steps={args.eval_steps}",
                f"eval.num_draws={args.eval_draws}",
                *([f"eval.max_windows={args.eval_images}"] if args.eval_images else []),
            ],
            RUNS / "logs" / f"eval_{name}.log",
            env,
        )
        results[name] = json.loads(out)
        results[name]["train_steps"] = steps.get(name)
        results[name]["seconds_per_step"] = calib.get(model)
        results[name]["model"], results[name]["seed"] = model, seed
        if name not in commands:  # evaluated only: the training command is in the run's log
            log = RUNS / "logs" / f"train_{name}.log"
            if log.exists():
                first = log.read_text().splitlines()[0].removeprefix("$ ")
                commands[name] = " ".join(c for c in first.split() if not c.startswith("output_dir="))
                commands[name] += f" output_dir=out/{name}"
        print(f"evaluated {name}: {results[name]['nelbo_nats_per_image']:.2f} nats", flush=True)

    # merged only now, so that evaluations run side by side keep each other's results
    if args.merge and args.out.exists():
        previous = json.loads(args.out.read_text())
        done = {run_name(n, s) for n, s in runs}
        results = {n: r for n, r in previous.get("results", {}).items() if n not in done} | results
        commands = {n: c for n, c in previous.get("commands", {}).items() if n not in commands} | commands
    rows = [
        ("NELBO, nats/image (test, lower is better)", "nelbo_nats_per_image", "{:.2f}", "nelbo_nats_per_image_stderr"),
        ("Frechet distance, classifier features (lower)", "sample_frechet_distance", "{:.2f}", None),
        ("classifier confidence of samples (higher)", "sample_confidence", "{:.3f}", None),
        ("class coverage (share of classes with >= 5%)", "sample_class_coverage", "{:.2f}", None),
        ("class entropy / log 10 (1 = uniform)", "sample_class_entropy", "{:.3f}", None),
        ("nearest-train Hamming distance, mean", "sample_nearest_train_hamming_mean", "{:.1f}", None),
        ("inpainting accuracy, 10% observed (higher)", "inpainting_accuracy", "{:.4f}", None),
        ("training steps (equal CPU time)", "train_steps", "{}", None),
    ]
    by_model = {}  # model -> its runs (one per seed)
    for run, r in results.items():
        by_model.setdefault(r.get("model", run), []).append(r)
    for runs_of_model in by_model.values():
        runs_of_model.sort(key=lambda r: r.get("seed") or 0)
    names = [n for n in MODELS if n in by_model]
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for label, key, fmt, err in rows:
        cells = []
        for n in names:
            mean, sd, count = aggregate(by_model[n], key)
            cell = "n/a" if mean is None else fmt.format(round(mean) if key == "train_steps" else mean)
            if sd is not None:  # several seeds: mean +- standard deviation over seeds
                cell += " ± " + fmt.format(sd).lstrip() if key != "train_steps" else ""
            elif err and by_model[n][0].get(err) is not None:  # one seed: the Monte Carlo error
                cell += f" ± {by_model[n][0][err]:.2f} (MC)"
            cells.append(cell)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append(
        "| training.seed (preset: 1337) | "
        + " | ".join(", ".join(str(r["seed"]) if r.get("seed") else "preset" for r in by_model[n]) for n in names)
        + " |"
    )
    first = by_model[names[0]][0]
    reference = (
        f"Real test images against the same reference: Frechet distance "
        f"{first.get('real_test_frechet_distance', float('nan')):.2f}, confidence "
        f"{first.get('real_test_confidence', float('nan')):.3f}, coverage "
        f"{first.get('real_test_class_coverage', float('nan')):.2f}, nearest-train Hamming "
        f"{first.get('real_test_nearest_train_hamming_mean', float('nan')):.1f}; predicting 0 for every "
        f"hidden pixel gives inpainting accuracy {first.get('inpainting_all_zero_accuracy', float('nan')):.4f}."
    )
    table = "\n".join(lines)
    print("\n" + table + "\n\n" + reference)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "args": vars(args) | {"out": str(args.out), "doc": str(args.doc)},
                "commands": commands,
                "results": results,
            },
            indent=2,
            default=str,
        )
    )
    args.doc.parent.mkdir(parents=True, exist_ok=True)
    order = [run_name(n, s) for s in sorted({r.get("seed", 0) for r in results.values()}) for n in MODELS]
    cmd_lines = "\n".join(commands[n] for n in order if n in commands)
    generated = (
        f"Budget: {args.minutes:g} CPU-minutes per model at {args.threads} thread(s), {args.parallel} models at once "
        "on the 2-core CI-class machine; samples: "
        f"{args.eval_samples} at {args.eval_steps} steps; NELBO: {args.eval_draws} Monte Carlo draws over the "
        f"first {args.eval_images or 10000:,} static binarized test images.\n\n"
        f"{table}\n\n{reference}\n\nCommands (then `tokendiff eval checkpoint=out/<name> "
        f"eval.num_samples={args.eval_samples} eval.sampling_steps={args.eval_steps} "
        f"eval.num_draws={args.eval_draws}`):\n\n```\n{cmd_lines}\n```\n"
    )
    # the table goes between the markers; the findings written around it stay
    begin, end = "<!-- study table: generated by bench/mnist_study.py -->", "<!-- end of study table -->"
    doc = args.doc.read_text() if args.doc.exists() else f"# Ambient MNIST study\n\n{begin}\n{end}\n"
    if begin not in doc or end not in doc:
        doc = doc.rstrip() + f"\n\n{begin}\n{end}\n"
    head, rest = doc.split(begin, 1)
    doc = head + begin + "\n" + generated + end + rest.split(end, 1)[1]
    args.doc.write_text(doc)
    print(f"wrote {args.out} and {args.doc}")


if __name__ == "__main__":
    main()
