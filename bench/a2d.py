"""A2D at equal CPU time: an autoregressive run for a share of the budget, then its adaptation into a masked
diffusion LM (``model.adapt=a2d``) for the rest, against masked diffusion and autoregression for the whole
budget. Everything through the command line, one thread per run (``--threads 1``), as ``bench/quality.py``.

Arms (``--arms``; the quickstart's model: 4 x 128 on 128-character windows, batch 64 at 3e-3):

- ``ar``: autoregressive for the whole budget (the yardstick, and the reference that scores the samples);
- ``mdlm``: ``+experiment=quickstart_mdlm`` (masked diffusion, count estimator) for the whole budget;
- ``a2d_<share>[_noshift][_anneal<N>][_lr<x>]``: ``ar`` for ``share`` of the budget, then
  ``+experiment=quickstart_mdlm model.adapt=a2d training.init_from=<that run>`` for the rest, with Dream's logit
  shift unless ``_noshift``, ``training.attention_anneal_iters=N`` with ``_annealN``, the adapted stage's
  learning rate ``x`` with ``_lr<x>`` (for ``ar`` and ``mdlm``: the whole run's);
- any arm with ``_muon`` appended: every stage with ``training.optimizer=muon`` (its own calibration).

Each stage's ``training.max_iters`` is its share of the budget times the steps per second measured by a
short calibration (``bench/quality.py``'s), so every schedule completes inside its time. Reported per arm:
bits per char on the whole validation split (``tokendiff eval``: the NELBO with ``eval.num_draws``
draws for diffusion, exact for AR), and the samples' generative perplexity and unigram entropy under the
``ar`` arm's model (``tokendiff sample`` then ``tokendiff score``; the same for real text as the yardstick).

    python bench/a2d.py --minutes 5 --threads 1 --arms ar a2d_0.5 --out bench/results/a2d_5min_a.json &
    python bench/a2d.py --minutes 5 --threads 1 --arms mdlm a2d_0.5_noshift --out bench/results/a2d_5min_b.json
    python bench/a2d.py --merge bench/results/a2d_5min_a.json bench/results/a2d_5min_b.json \
        --out bench/results/a2d_5min.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import REPO, RESULTS, RUNS, calibrate, parse_json, run_cli  # noqa: E402

import quality  # noqa: E402

MODEL = ["model.n_embd=128", "model.block_size=128", "training.batch_size=64", "training.learning_rate=3e-3"]
AR = ["+experiment=shakespeare_char_ar", *MODEL, "system.compile=false"]
MDLM = ["+experiment=quickstart_mdlm", "system.compile=false"]
ARM = re.compile(
    r"^(?:(?P<base>ar|mdlm)|a2d_(?P<share>0?\.\d+)(?P<noshift>_noshift)?(?:_anneal(?P<anneal>\d+))?)"
    r"(?:_lr(?P<lr>\d[\d.e-]*))?(?P<muon>_muon)?$"
)
MUON = ["training.optimizer=muon"]


def train(name: str, overrides: list[str], minutes: float, steps_per_s: float, env: dict, safety: float) -> dict:
    """Train ``overrides`` for ``minutes`` of calibrated steps (schedule completed inside the time)."""
    run_dir = RUNS / name
    shutil.rmtree(run_dir, ignore_errors=True)
    max_iters = max(1, int(steps_per_s * minutes * 60 * safety))
    args = ["train", *overrides, f"output_dir={run_dir}", f"training.max_iters={max_iters}"]
    args += [f"training.warmup_iters={min(100, max_iters // 10)}", "training.eval_interval=0", "training.eval_iters=1"]
    args += ["training.sample_interval=0", f"training.checkpoint_interval={max_iters}", "training.log_interval=10"]
    start = time.perf_counter()
    run_cli(args, RUNS / "logs" / f"{name}.log", env)
    return {"run": str(run_dir), "max_iters": max_iters, "minutes": minutes, "wall_s": time.perf_counter() - start}


def evaluate(run: str, name: str, draws: int, env: dict) -> dict:
    args = ["eval", f"checkpoint={run}", f"eval.num_draws={draws}", "eval.batch_size=32"]
    return parse_json(run_cli(args, RUNS / "logs" / f"eval_{name}.log", env).stdout)


def sample_quality(run: str, reference: str, name: str, env: dict, num: int, steps: int) -> dict:
    out = RUNS / f"samples_{name}.jsonl"
    args = ["sample", f"checkpoint={run}", f"num_samples={num}", f"sampling.steps={steps}", f"sampling.output={out}"]
    proc = run_cli([*args, "overwrite=true"], RUNS / "logs" / f"sample_{name}.log", env)
    texts = [b.split("-----\n", 1)[1].strip() for b in proc.stdout.split("----- sample ")[1:]]
    scored = run_cli(["score", f"samples={out}", f"reference={reference}"], RUNS / "logs" / f"score_{name}.log", env)
    score = parse_json(scored.stdout)
    return {"score": score, "samples": texts[:2]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=5.0, help="the whole budget of each arm")
    p.add_argument("--arms", nargs="+", default=["ar", "mdlm", "a2d_0.5"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--calib-steps", type=int, default=12)
    p.add_argument(
        "--steps-per-s",
        type=float,
        nargs="+",
        metavar="RATE",
        help="AR MDLM [AR_MUON MDLM_MUON]: use these rates instead of calibrating (so that arms run side by side "
        "get the same steps)",
    )
    p.add_argument("--safety", type=float, default=0.95)
    p.add_argument("--eval-draws", type=int, default=4)
    p.add_argument("--samples", type=int, default=16, help="samples scored per arm (sampling.steps=--sample-steps)")
    p.add_argument("--sample-steps", type=int, default=128)
    p.add_argument("--reference", default=None, help="the AR run that scores samples (default: this script's ar arm)")
    p.add_argument("--out", type=Path, default=RESULTS / "a2d.json")
    p.add_argument("--merge", type=Path, nargs="+", help="only join these result files into --out")
    a = p.parse_args(argv)
    if a.merge:
        parts = [json.loads(x.read_text()) for x in a.merge]
        merged = {**parts[0], "arms": {k: v for part in parts for k, v in part["arms"].items()}}
        merged["merged_from"] = [str(x) for x in a.merge]
        a.out.write_text(json.dumps(merged, indent=2) + "\n")
        table(merged)
        return 0
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "PYTHONPATH": str(REPO / "src")}
    env.setdefault("TOKENDIFF_DATA", str(REPO.parent / "shared" / "data"))
    common = [f"system.threads={a.threads}", "training.seed=1337"]
    quality.MODELS.update({"a2d_ar": ("AR", AR), "a2d_mdlm": ("masked", MDLM)})
    quality.MODELS.update({"a2d_ar_muon": ("AR", AR + MUON), "a2d_mdlm_muon": ("masked", MDLM + MUON)})
    for arm in a.arms:
        if not ARM.match(arm):
            raise SystemExit(f"--arms {arm}: write ar, mdlm or a2d_<share>[_noshift][_anneal<N>], each [_lr<x>][_muon]")
    muon = any(ARM.match(arm)["muon"] for arm in a.arms)
    models = ("a2d_ar", "a2d_mdlm") + (("a2d_ar_muon", "a2d_mdlm_muon") if muon else ())
    if a.steps_per_s:
        calib = {k: {"steps_per_s": v, "given": True} for k, v in zip(models, a.steps_per_s)}
    else:
        calib = {k: calibrate(k, common, a.calib_steps, env) for k in models}
    sps = {k: v["steps_per_s"] for k, v in calib.items()}
    arms = {}
    reference = a.reference or str(RUNS / f"m{a.minutes:g}_ar")
    for arm in a.arms:
        tag = f"m{a.minutes:g}_{arm}"
        m = ARM.match(arm)
        opt, rule = (MUON, "_muon") if m["muon"] else ([], "")
        if m["base"]:
            model = AR if m["base"] == "ar" else MDLM
            lr = [f"training.learning_rate={m['lr']}"] if m["lr"] else []
            stages = [train(tag, model + opt + lr + common, a.minutes, sps[f"a2d_{m['base']}{rule}"], env, a.safety)]
        else:
            share = float(m["share"])
            first = train(f"{tag}_stage1", AR + opt + common, a.minutes * share, sps[f"a2d_ar{rule}"], env, a.safety)
            adapt = [*MDLM, *opt, *common, "model.adapt=a2d", f"training.init_from={first['run']}"]
            adapt += [f"model.logit_shift={'false' if m['noshift'] else 'true'}"]
            adapt += [f"training.attention_anneal_iters={m['anneal']}"] if m["anneal"] else []
            adapt += [f"training.learning_rate={m['lr']}"] if m["lr"] else []
            second = train(tag, adapt, a.minutes * (1 - share), sps[f"a2d_mdlm{rule}"], env, a.safety)
            stages = [first, second]
        final = stages[-1]["run"]
        result = {"stages": stages, "eval": evaluate(final, tag, a.eval_draws, env)}
        if Path(reference).exists():
            result |= sample_quality(final, reference, tag, env, a.samples, a.sample_steps)
        arms[arm] = result
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip()
        record = {"benchmark": "a2d", "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "args": vars(a), "git": commit,
                  "budget_minutes": a.minutes, "calibration": calib, "arms": arms}  # fmt: skip
        a.out.write_text(json.dumps(record, indent=2, default=str) + "\n")  # after every arm: nothing lost
    table(record)
    return 0


def table(record: dict) -> None:
    print(f"\nbudget {record['budget_minutes']:g} CPU-minutes per arm (one thread)")
    print(f"{'arm':<28}{'steps':>14}{'val bpc':>9}{'stderr':>8}{'gen-PPL':>9}{'entropy':>9}")
    for arm, r in record["arms"].items():
        e, s = r["eval"], r.get("score", {})
        steps = "+".join(str(x["max_iters"]) for x in r["stages"])
        ppl, ent = s.get("generative_perplexity"), s.get("unigram_entropy_bits")
        print(
            f"{arm:<28}{steps:>14}{e['bits_per_char']:>9.3f}{(e['bits_per_char_stderr'] or 0):>8.3f}"
            f"{ppl if ppl is None else f'{ppl:.1f}':>9}{ent if ent is None else f'{ent:.2f}':>9}"
        )
        for text in r.get("samples", [])[:1]:
            print("    " + text[:160].replace("\n", " / "))


if __name__ == "__main__":
    sys.exit(main())
