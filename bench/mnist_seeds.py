"""Mean and standard deviation over seeds of ``tokendiff eval`` results, one group of runs per arm, as a
markdown table (docs/mnist_ambient.md) and a JSON file.

    python bench/mnist_seeds.py --arm naive=ev/naive_s0.json,ev/naive_s1.json,ev/naive_s2.json \
        --arm ambient=ev/amb_s0.json,ev/amb_s1.json,ev/amb_s2.json --levels bench/results/mnist_levels.json

``--levels`` adds the NELBO split above and below ``t_n`` from ``bench/mnist_levels.py`` (keyed by run
folder name), ``--select`` the corrupted-data estimate from ``bench/mnist_select.py`` (keyed by path).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

ROWS = [  # (label, key in the eval JSON, format, better)
    ("NELBO, nats/image (clean test)", "nelbo_nats_per_image", "{:.2f}", "lower"),
    ("Frechet distance, classifier features", "sample_frechet_distance", "{:.2f}", "lower"),
    ("KID, classifier features", "sample_kernel_distance", "{:.2f}", "lower"),
    ("classifier confidence", "sample_confidence", "{:.3f}", "higher"),
    ("class coverage", "sample_class_coverage", "{:.2f}", "higher"),
    ("class entropy / log 10", "sample_class_entropy", "{:.3f}", "higher"),
    ("nearest-train Hamming distance", "sample_nearest_train_hamming_mean", "{:.1f}", "-"),
    ("inpainting accuracy", "inpainting_accuracy", "{:.4f}", "higher"),
]


def cell(values: list[float], fmt: str) -> str:
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.mean(values))} ± {fmt.format(statistics.stdev(values))}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arm", action="append", required=True, help="name=eval1.json,eval2.json,...")
    p.add_argument("--levels", type=Path, help="bench/mnist_levels.py output (by run folder name)")
    p.add_argument("--select", type=Path, nargs="*", default=[], help="bench/mnist_select.py outputs (by path)")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "mnist_seeds.json")
    args = p.parse_args()
    levels = json.loads(args.levels.read_text())["results"] if args.levels else {}
    select = {}
    for path in args.select:
        select.update(json.loads(path.read_text())["results"])
    arms = {}
    for spec in args.arm:
        name, files = spec.split("=", 1)
        arms[name] = [json.loads(Path(f).read_text()) for f in files.split(",")]
    table = {}
    for name, runs in arms.items():
        col = {}
        for label, key, _fmt, _ in ROWS:
            col[label] = [r[key] for r in runs if r.get(key) is not None]
        folders = [
            Path(r["checkpoint"]).name if Path(r["checkpoint"]).name != "final" else Path(r["checkpoint"]).parent.name
            for r in runs
        ]
        for side in ("below_t_n", "above_t_n"):
            vals = [levels[f][side]["nats_per_image"] for f in folders if f in levels]
            if vals:
                col[f"NELBO {side[:5].rstrip('_')} t_n, 400 test images"] = vals
        picked = [select[k]["total"] for k in select for f in folders if Path(k).name == f]
        if picked:
            col["corrupted-data estimate (selection)"] = picked
        col["steps"] = [r["step"] for r in runs]
        table[name] = col
    labels = list(dict.fromkeys(label for col in table.values() for label in col))
    fmts = {label: fmt for label, _, fmt, _ in ROWS} | {"steps": "{:.0f}"}
    print("| metric | " + " | ".join(f"{n} ({len(arms[n])})" for n in arms) + " |")
    print("|---|" + "---|" * len(arms))
    for label in labels:
        cells = [cell(table[n][label], fmts.get(label, "{:.2f}")) if table[n].get(label) else "-" for n in arms]
        better = next((b for lab, _, _, b in ROWS if lab == label), "-")
        print(f"| {label}{'' if better == '-' else f' ({better})'} | " + " | ".join(cells) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"args": vars(args), "arms": table}, indent=2, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
