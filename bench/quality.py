"""Quality benchmark: validation bits per char of the default masked diffusion model against the
autoregressive baseline of the same size, each trained for the same wall-clock budget on the CPU.

What is measured
    Two models, both the 4-layer, 4-head, 256-wide character-level transformer on Tiny Shakespeare:

    - ``mdlm``: the default preset, masked diffusion (``tokendiff train +experiment=shakespeare_char``);
    - ``ar``: the autoregressive baseline (``tokendiff train +experiment=shakespeare_char_ar``).

    Each is trained for ``--minutes`` of wall-clock time (default 15), then evaluated by
    ``tokendiff eval`` on the whole validation split (``eval.num_draws`` Monte Carlo draws of the
    masks per sequence for the diffusion model; the autoregressive likelihood is exact). Reported:
    val bits per char of each, its standard error (Monte Carlo error of the NELBO estimate; 0 for the
    autoregressive model), and the gap ``mdlm - ar`` with its standard error. The NELBO is an upper
    bound on the diffusion model's negative log-likelihood, so the gap is an upper bound too.

How
    Everything runs through the command line (``python -m tokendiff.cli.main``, i.e. ``tokendiff``),
    as a user would run it. ``training.max_minutes`` stops each run at the budget, but the learning
    rate follows a cosine decay over ``training.max_iters``: a run cut short by the clock would end
    at a high learning rate and look worse than it is. So the script first runs a short calibration
    (``--calib-steps`` steps, 20 by default) of each model, reads the step times from its
    ``log.jsonl`` (median, first step excluded), and sets::

        max_iters = int(steps_per_s * budget_seconds * 0.95)

    so that the schedule completes inside the budget (the 5% covers drift). ``training.warmup_iters``
    is ``min(100, max_iters // 10)`` for both models (``--warmup-iters`` to override). Periodic
    evaluation, sampling and checkpoints are off during training (they would spend the budget); the
    trainer's final evaluation and checkpoint come after the clock. The table says whether each run
    finished its schedule (``step == max_iters``) or was stopped by the clock.

    ``tokendiff eval`` scores the EMA weights (``training.ema``, 0.999 by default); their decay warms
    up as ``min(ema, (1 + n) / (10 + n))`` (``tokendiff.training.ema``), so a short run is not
    dominated by its first, nearly random, weights.

Why side by side in one run
    Both models are calibrated and trained by the same script on the same machine in one session,
    with the same seed, data and budget, so the comparison holds even though absolute speed on a
    small shared CPU (2 cores here) varies between sessions: a slower machine shortens both runs.

Environment: ``TOKENDIFF_DATA`` (raw data: ``tinyshakespeare/input.txt``) defaults to ``../shared/data``
relative to the repository when unset; ``TOKENDIFF_CACHE`` (prepared token files) is left as it is.
Run directories and logs go to ``bench/results/quality_runs/`` (git-ignored); the result to
``bench/results/quality.json`` (``--out``).

Full run (about 2 x 15 minutes of training plus calibration and evaluation, ~40 minutes)::

    /work/venv/bin/python bench/quality.py                 # --minutes 15

Smoke test::

    /work/venv/bin/python bench/quality.py --minutes 0.3 --calib-steps 3 --threads 1 \
        --override training.batch_size=4 --eval-max-windows 8 --eval-draws 2 --out /tmp/smoke_quality.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
RUNS = Path(os.environ.get("QUALITY_RUNS", RESULTS / "quality_runs"))

MODELS = {
    "mdlm": ("masked diffusion (default preset)", ["+experiment=shakespeare_char"]),
    "udlm": ("uniform diffusion (UDLM)", ["+experiment=shakespeare_char_udlm"]),
    "hybrid": ("hybrid mask+uniform (GIDD, p_u=0.1)", ["+experiment=shakespeare_char_hybrid"]),
    "ar": ("autoregressive baseline", ["+experiment=shakespeare_char_ar"]),
}
# Keys this script sets itself; --override must not touch them.
RESERVED = (
    "training.max_iters",
    "training.max_minutes",
    "training.warmup_iters",
    "output_dir",
    "resume",
    "training.eval_interval",
    "training.sample_interval",
    "training.checkpoint_interval",
    "training.log_interval",
)


def tokendiff_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "tokendiff.cli.main", *args]


def run_cli(args: list[str], log: Path, env: dict) -> subprocess.CompletedProcess:
    """Run a tokendiff command; stdout is returned, stdout+stderr also go to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    print("$ tokendiff " + " ".join(args), flush=True)
    proc = subprocess.run(tokendiff_cmd(*args), check=False, capture_output=True, text=True, env=env, cwd=REPO)
    log.write_text(f"$ tokendiff {' '.join(args)}\n--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}")
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise SystemExit(f"tokendiff {args[0]} failed (exit {proc.returncode}); log: {log}\n{tail}")
    return proc


def step_times_ms(run_dir: Path) -> list[tuple[int, float]]:
    out = []
    for line in (run_dir / "log.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "train/time_ms" in rec:
            out.append((rec["step"], rec["train/time_ms"]))
    return out


def calibrate(name: str, common: list[str], steps: int, env: dict) -> dict:
    """Train ``steps`` steps and return the median step time (first step excluded)."""
    run_dir = RUNS / f"calibrate_{name}"
    shutil.rmtree(run_dir, ignore_errors=True)
    args = [
        "train",
        *MODELS[name][1],
        *common,
        f"output_dir={run_dir}",
        f"training.max_iters={steps}",
        "training.eval_iters=1",
        "sampling.steps=1",
        "training.warmup_iters=0",
    ]
    start = time.perf_counter()
    run_cli(args, RUNS / "logs" / f"calibrate_{name}.log", env)
    wall = time.perf_counter() - start
    times = step_times_ms(run_dir)
    steady = [ms for step, ms in times if step > 1] or [ms for _, ms in times]
    median_ms = statistics.median(steady)
    saved = json.loads((run_dir / "final" / "config.json").read_text())
    return {
        "steps": steps,
        "median_step_ms": median_ms,
        "steps_per_s": 1000.0 / median_ms,
        "step_times_ms": [ms for _, ms in times],
        "wall_s": wall,
        "ema": saved.get("config", saved)["training"]["ema"],
    }


def parse_json(stdout: str) -> dict:
    start = stdout.find("{")
    if start < 0:
        raise SystemExit(f"no JSON in the output of tokendiff eval:\n{stdout[-2000:]}")
    return json.loads(stdout[start:])


def fmt(x, digits=4):
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def report(runs: dict, calib: dict, minutes: float) -> dict:
    """Print the table; return each diffusion model's gap to the autoregressive one (bits per char)."""
    header = f"{'model':<44}{'steps':>12}{'schedule':>10}{'val bpc':>9}{'stderr':>9}{'sequences':>11}{'draws':>7}"
    print()
    print(header)
    print("-" * len(header))
    for name, r in runs.items():
        e = r["eval"]
        print(
            f"{name + ': ' + MODELS[name][0]:<44}{str(r['steps_done']) + '/' + str(r['max_iters']):>12}"
            f"{'done' if r['schedule_completed'] else 'cut':>10}{fmt(e['bits_per_char']):>9}"
            f"{fmt(e['bits_per_char_stderr']):>9}{e['sequences']:>11}{e['draws']:>7}"
        )
    gaps = {}
    if "ar" in runs:
        a = runs["ar"]["eval"]
        for name in (n for n in runs if n != "ar"):
            m = runs[name]["eval"]
            se = m["bits_per_char_stderr"]
            gap = m["bits_per_char"] - a["bits_per_char"]
            gaps[name] = {"gap": gap, "stderr": se, "relative": gap / a["bits_per_char"]}
            print(
                f"gap ({name} - ar): {gap:+.4f} +- {se:.4f} bits per char ({100 * gap / a['bits_per_char']:+.1f}% "
                "of the AR value); the diffusion value is a NELBO, an upper bound"
            )
    print(
        f"budget {minutes:g} min per model; steps/s calibrated -> achieved: "
        + ", ".join(f"{n} {calib[n]['steps_per_s']:.2f} -> {runs[n]['steps_per_s']:.2f}" for n in runs)
    )
    for name, r in runs.items():
        for i, text in enumerate(r.get("samples", [])[:1]):
            print(f"\n--- {name}, sample {i} ---\n{text[:300]}")
    return gaps


def merge(paths: list[Path], out: Path) -> int:
    """Join results of runs made side by side (e.g. one process per core) into one file and table."""
    parts = [json.loads(p.read_text()) for p in paths]
    merged = {**parts[0], "calibration": {}, "runs": {}, "merged_from": [str(p) for p in paths]}
    for part in parts:
        merged["calibration"].update(part["calibration"])
        merged["runs"].update(part["runs"])
    order = [n for n in MODELS if n in merged["runs"]] + [n for n in merged["runs"] if n not in MODELS]
    for n in order:
        MODELS.setdefault(n, (" ".join(merged["runs"][n]["overrides"][:2]), []))
    merged["runs"] = {n: merged["runs"][n] for n in order}
    merged["gaps_to_ar_bits_per_char"] = report(merged["runs"], merged["calibration"], merged["budget_minutes"])
    out.write_text(json.dumps(merged, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--minutes", type=float, default=15.0, help="wall-clock training budget of each model")
    p.add_argument("--calib-steps", type=int, default=20, help="steps of the calibration run of each model")
    p.add_argument("--safety", type=float, default=0.95, help="max_iters = steps/s * budget * safety")
    p.add_argument("--warmup-iters", type=int, default=None, help="default: min(100, max_iters // 10)")
    p.add_argument(
        "--arm",
        action="append",
        default=[],
        metavar="NAME=KEY=VALUE,KEY=VALUE",
        help="a model of your own (repeatable), e.g. small=+experiment=shakespeare_char,model.n_embd=128; "
        "name it in --models",
    )
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--eval-draws", type=int, default=4, help="eval.num_draws (diffusion Monte Carlo draws)")
    p.add_argument("--eval-max-windows", type=int, default=None, help="eval.max_windows (default: the whole split)")
    p.add_argument("--eval-batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=1337, help="training.seed (the eval seed stays tokendiff's default)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (system.threads and OMP_NUM_THREADS)")
    p.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra Hydra override for both models (repeatable), e.g. training.batch_size=4",
    )
    p.add_argument("--out", type=Path, default=RESULTS / "quality.json")
    p.add_argument("--merge", type=Path, nargs="+", help="only join these result files into --out")
    args = p.parse_args(argv)
    for arm in args.arm:  # overrides split at commas: values with commas (lists) cannot be given here
        name, _, overrides = arm.partition("=")
        items = [o for o in overrides.split(",") if o]
        if not name or not items or any("=" not in o for o in items):
            raise SystemExit(f"--arm {arm!r}: write NAME=KEY=VALUE,KEY=VALUE")
        reserved = [o for o in items if o.split("=", 1)[0].lstrip("+") in RESERVED]
        if reserved:
            raise SystemExit(f"--arm {arm!r}: this script sets {reserved[0].split('=', 1)[0]} itself")
        MODELS[name] = (overrides, items)
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        raise SystemExit(f"--models {unknown[0]}: not one of {', '.join(MODELS)} (define it with --arm)")
    if args.merge:
        return merge(args.merge, args.out)

    for o in args.override:
        if o.split("=", 1)[0].lstrip("+") in RESERVED:
            raise SystemExit(f"--override {o}: this script sets {o.split('=', 1)[0]} itself")

    env = dict(os.environ)
    env.setdefault("TOKENDIFF_DATA", str((REPO.parent / "shared" / "data").resolve()))
    env.setdefault("WANDB_MODE", "offline")
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    print(f"TOKENDIFF_DATA={env['TOKENDIFF_DATA']}; TOKENDIFF_CACHE={env.get('TOKENDIFF_CACHE', '(default)')}")

    common = [
        "system.device=cpu",
        "logging.wandb=false",
        f"training.seed={args.seed}",
        "training.eval_interval=0",
        "training.sample_interval=0",
        "training.checkpoint_interval=0",
        "training.log_interval=1",
    ]
    if args.threads:
        common.append(f"system.threads={args.threads}")
    common += args.override
    budget_s = 60.0 * args.minutes

    # 1) calibration: steps per second of each model
    calib = {}
    for name in args.models:
        calib[name] = calibrate(name, common, args.calib_steps, env)
        c = calib[name]
        print(
            f"calibration {name}: {c['median_step_ms']:.0f} ms/step ({c['steps_per_s']:.2f} steps/s)",
            flush=True,
        )

    # 2) training for the budget, with the cosine schedule sized to fit in it
    runs = {}
    for name in args.models:
        max_iters = max(1, int(calib[name]["steps_per_s"] * budget_s * args.safety))
        warmup = args.warmup_iters if args.warmup_iters is not None else min(100, max_iters // 10)
        run_dir = RUNS / name
        shutil.rmtree(run_dir, ignore_errors=True)
        train_args = [
            "train",
            *MODELS[name][1],
            *common,
            f"output_dir={run_dir}",
            f"training.max_iters={max_iters}",
            f"training.warmup_iters={warmup}",
            f"training.max_minutes={args.minutes}",
        ]
        print(
            f"training {name} for {args.minutes:g} min: max_iters={max_iters}, warmup_iters={warmup}",
            flush=True,
        )
        ema = calib[name]["ema"]
        start = time.perf_counter()
        run_cli(train_args, RUNS / "logs" / f"train_{name}.log", env)
        wall = time.perf_counter() - start
        times = step_times_ms(run_dir)
        steps_done = max((s for s, _ in times), default=0)
        loop_s = sum(ms for _, ms in times) / 1000.0
        runs[name] = {
            "max_iters": max_iters,
            "warmup_iters": warmup,
            "train_command_wall_s": wall,
            "train_loop_s": loop_s,
            "steps_per_s": steps_done / loop_s if loop_s else None,
            "ema": ema,
            "overrides": train_args[1:],
        }
        print(
            f"  {steps_done} steps in {loop_s:.0f}s of steps "
            f"({runs[name]['steps_per_s']:.2f} steps/s); command "
            f"took {wall:.0f}s (including startup, final eval and checkpoint)",
            flush=True,
        )

    # 3) evaluation on the validation split
    for name in args.models:
        eval_args = [
            "eval",
            f"checkpoint={RUNS / name}",
            "eval.split=val",
            f"eval.num_draws={args.eval_draws}",
            f"eval.batch_size={args.eval_batch_size}",
            "system.device=cpu",
        ]
        if args.eval_max_windows:
            eval_args.append(f"eval.max_windows={args.eval_max_windows}")
        start = time.perf_counter()
        proc = run_cli(eval_args, RUNS / "logs" / f"eval_{name}.log", env)
        result = parse_json(proc.stdout)
        runs[name]["eval"] = result
        runs[name]["eval_wall_s"] = time.perf_counter() - start
        runs[name]["steps_done"] = result["step"]
        runs[name]["schedule_completed"] = result["step"] >= runs[name]["max_iters"]

    # 4) samples: what each model writes (ancestral, the checkpoint's sampling defaults)
    for name in args.models:
        proc = run_cli(
            ["sample", f"checkpoint={RUNS / name}", "num_samples=3", "seed=0", "system.device=cpu"],
            RUNS / "logs" / f"sample_{name}.log",
            env,
        )
        runs[name]["samples"] = [
            block.split("-----\n", 1)[1].strip() for block in proc.stdout.split("----- sample ")[1:]
        ]

    gaps = report(runs, calib, args.minutes)
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], check=False, capture_output=True, text=True, cwd=REPO
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--", "src"],
                check=False,
                capture_output=True,
                text=True,
                cwd=REPO,
            ).stdout.strip()
        )
    except OSError:
        commit, dirty = None, None
    result = {
        "benchmark": "quality",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "git": {"commit": commit, "src_modified": dirty},
        "budget_minutes": args.minutes,
        "calibration": calib,
        "runs": runs,
        "gaps_to_ar_bits_per_char": gaps,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}; run directories and logs in {RUNS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
