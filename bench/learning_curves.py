"""Learning curves: training bits per char against CPU-minutes, from the ``log.jsonl`` of finished runs.

What is plotted
    For each run directory given (trained with ``training.log_interval=1``, as ``bench/quality.py`` does),
    the training loss the trainer logged at every step (``train/loss``,
    nats per token; a running mean over ``--window`` steps) converted to bits per char, against the
    cumulated step time (``train/time_ms``, i.e. the minutes spent in training steps, not start-up or
    evaluation). For a diffusion model this loss is its training estimator of the NELBO (unbiased, on
    training windows), for the autoregressive model the exact next-token loss: both are bits per char of
    the same text, so the curves compare how fast each learns. Where a result file of
    ``bench/quality.py`` names the run, its final validation bits per char is drawn as a marker.

Usage::

    python bench/learning_curves.py bench/results/quality_runs/mdlm_q bench/results/quality_runs/ar_q \\
        --results bench/results/quality_15min_*.json --out docs/learning_curves.png

Needs matplotlib (``pip install -c constraints.txt -e ".[bench]"``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path


def curve(run_dir: Path, window: int, chars_per_token: float) -> tuple[list[float], list[float]]:
    """(minutes, bits per char) of the running mean of the training loss."""
    rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "train/loss" in r]
    if any(b["step"] - a["step"] != 1 for a, b in zip(steps, steps[1:])):
        raise SystemExit(f"{run_dir}: log.jsonl has a row every few steps; train with training.log_interval=1")
    minutes, bits, recent, elapsed = [], [], [], 0.0
    for r in steps:
        elapsed += r["train/time_ms"] / 60_000.0
        recent = (recent + [r["train/loss"]])[-window:]
        minutes.append(elapsed)
        bits.append(sum(recent) / len(recent) / chars_per_token / math.log(2.0))
    return minutes, bits


def final_points(result_files: list[Path]) -> dict[str, tuple[float, float]]:
    """Run directory name -> (training minutes, val bits per char) from ``bench/quality.py`` results."""
    points = {}
    for path in result_files:
        result = json.loads(path.read_text())
        for name, run in result.get("runs", {}).items():
            if run.get("eval", {}).get("bits_per_char") is not None:
                points[name] = (run["train_loop_s"] / 60.0, run["eval"]["bits_per_char"])
    return points


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", type=Path, nargs="+", help="run directories (with log.jsonl and final/)")
    p.add_argument("--results", type=Path, nargs="*", default=[], help="bench/quality.py result files")
    p.add_argument("--window", type=int, default=25, help="running mean over this many steps")
    p.add_argument("--chars-per-token", type=float, default=1.0, help="1 for characters; a BPE corpus's ratio")
    p.add_argument("--out", type=Path, default=Path("docs/learning_curves.png"))
    args = p.parse_args(argv)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit('matplotlib is missing: pip install -c constraints.txt -e ".[bench]"') from None

    points = final_points(args.results)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for run in args.runs:
        minutes, bits = curve(run, args.window, args.chars_per_token)
        (line,) = ax.plot(minutes, bits, label=f"{run.name} (train, mean of {args.window} steps)")
        if run.name in points:
            x, y = points[run.name]
            ax.plot([x], [y], "o", color=line.get_color(), label=f"{run.name}: val {y:.3f}")
        print(f"{run.name}: {len(minutes)} steps in {minutes[-1]:.1f} min; last train {bits[-1]:.3f} bits/char")
    ax.set_xlabel("CPU-minutes of training steps")
    ax.set_ylabel("bits per char")
    ax.set_ylim(top=min(5.0, ax.get_ylim()[1]))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
