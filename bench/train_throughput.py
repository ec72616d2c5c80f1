"""Training throughput of tokendiff's real training step on the CPU, against plain implementations.

What is measured
    Tokens per second of one optimizer step (forward, masked-diffusion loss, backward, grad clip,
    optimizer step, EMA) of the default 4-layer, 4-head, 256-wide transformer on Tiny Shakespeare
    characters (sequence length 256, batch 16 by default), in these configurations:

    (a) ``plain fp32 eager``: a straightforward reference implementation of the same model written in
        this file (RMSNorm, RoPE, SwiGLU, SDPA attention, separate q/k/v and gate/up matrices), trained
        in float32 by plain ``torch.optim.AdamW`` (neither fused nor foreach) with clipping.
    (b) ``plain bf16 autocast``: (a) with its forward under ``torch.autocast("cpu", bfloat16)``: what a
        user gets from adding one line to a plain model.
    (c) ``tokendiff Trainer``: ``Trainer.train_step()`` itself, the Trainer built from the default config
        exactly as ``tokendiff train`` builds it (accelerate, the config's dtype, fused AdamW, clipping,
        EMA, the real data batches and seeded draws), eager (``system.compile=false``). The dtype is the
        one the Trainer resolved (``system.dtype=auto``) and its MFU is against that dtype's peak.
        ``--trainer-overrides`` changes its config (not ``grad_accum`` or ``causal``).
    (d) ``tokendiff Trainer + compile`` (``--compile``): (c) with ``system.compile=true``.

    Every configuration computes the same loss (``CleanObjective`` of an ``AbsorbingKernel``), on real
    batches of the same shape; the reference copies tokendiff's initial weights and the script checks
    that the two networks give the same logits before timing anything.

How
    A few warm-up steps per configuration, then ``--rounds`` rounds; each round runs
    ``--steps-per-round`` steps of each configuration in turn (A/B/C/A/B/C), so that a slow spell of the
    machine hits every configuration alike. Reported: the median step time, tokens/s, the speedups over
    (a) and (b), and the model FLOPs utilisation (MFU)::

        model FLOPs per token = 6 * N_nonembedding + 12 * n_layer * n_embd * seq_len

    divided by the peak of a large ``torch.matmul`` measured in the same run, in float32 for (a) and in
    bfloat16 for the rest. ``--profile`` adds the top entries of ``torch.profiler`` for (c).

Why ratios, side by side, in one run
    Absolute timings on a small shared CPU (2 cores here) drift by tens of percent between runs;
    interleaving the configurations in one process and reporting ratios cancels most of that drift.

Targets (issue 8): (c) >= 2x (a) and >= 1.3x (b).

Full run::

    python bench/train_throughput.py --compile --profile

Smoke test::

    python bench/train_throughput.py --batch-size 2 --seq-len 64 --warmup 1 --rounds 2 --steps-per-round 1 \
        --matmul-size 256 --threads 1 --out /tmp/smoke_train_throughput.json

Writes ``bench/results/train_throughput.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import tokendiff
from tokendiff.build import build_training
from tokendiff.cli.train import trainer_from_config
from tokendiff.configs import compose_config
from tokendiff.models import Transformer
from tokendiff.training import Trainer

RESULTS = Path(__file__).resolve().parent / "results"


# --------------------------------------------------------------------------- the reference model
class RefRMSNorm(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.eps = torch.finfo(torch.float32).eps  # nn.RMSNorm's default
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


class RefAttention(nn.Module):
    def __init__(self, dim: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.wq = nn.Linear(dim, dim, bias=False)
        self.wk = nn.Linear(dim, dim, bias=False)
        self.wv = nn.Linear(dim, dim, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)

    def forward(self, x, cos, sin):
        B, L, D = x.shape
        hd = D // self.n_head
        q = self.wq(x).view(B, L, self.n_head, hd).transpose(1, 2)  # (B, H, L, hd)
        k = self.wk(x).view(B, L, self.n_head, hd).transpose(1, 2)
        v = self.wv(x).view(B, L, self.n_head, hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin  # RoPE, cos/sin: (L, hd)
        k = k * cos + rotate_half(k) * sin
        y = F.scaled_dot_product_attention(q, k, v)  # bidirectional
        return self.wo(y.transpose(1, 2).reshape(B, L, D))


class RefSwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)  # gate
        self.w3 = nn.Linear(dim, hidden, bias=False)  # up
        self.w2 = nn.Linear(hidden, dim, bias=False)  # down

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class RefBlock(nn.Module):
    def __init__(self, dim: int, n_head: int, hidden: int):
        super().__init__()
        self.attn_norm = RefRMSNorm(dim)
        self.attn = RefAttention(dim, n_head)
        self.mlp_norm = RefRMSNorm(dim)
        self.mlp = RefSwiGLU(dim, hidden)

    def forward(self, x, cos, sin):
        x = x + self.attn(self.attn_norm(x), cos, sin)
        return x + self.mlp(self.mlp_norm(x))


class RefTransformer(nn.Module):
    """The same network as ``tokendiff.models.Transformer`` (no dropout, no time input), written plainly."""

    def __init__(self, vocab_size: int, n_layer: int, n_head: int, n_embd: int, block_size: int):
        super().__init__()
        hidden = 64 * math.ceil(8 * n_embd / 3 / 64)
        self.tok_emb = nn.Embedding(vocab_size + 1, n_embd)  # + the mask token
        self.layers = nn.ModuleList(RefBlock(n_embd, n_head, hidden) for _ in range(n_layer))
        self.norm = RefRMSNorm(n_embd)
        self.out = nn.Linear(n_embd, vocab_size, bias=False)
        hd = n_embd // n_head
        inv_freq = 1.0 / 10000.0 ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd)
        angles = torch.outer(torch.arange(block_size, dtype=torch.float32), inv_freq)
        angles = torch.cat([angles, angles], dim=-1)  # (L, hd)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x, t=None):  # time-agnostic: t is ignored
        L = x.shape[1]
        h = self.tok_emb(x)
        cos, sin = self.cos[:L], self.sin[:L]
        for layer in self.layers:
            h = layer(h, cos, sin)
        return self.out(self.norm(h))

    @torch.no_grad()
    def copy_from(self, td: Transformer) -> None:
        """Take the weights of a tokendiff ``Transformer`` (same init for both runs)."""
        self.tok_emb.weight.copy_(td.embed.weight)
        for mine, theirs in zip(self.layers, td.blocks):
            mine.attn_norm.weight.copy_(theirs.norm1.weight)
            mine.mlp_norm.weight.copy_(theirs.norm2.weight)
            q, k, v = theirs.attn.qkv.weight.chunk(3, dim=0)
            mine.attn.wq.weight.copy_(q)
            mine.attn.wk.weight.copy_(k)
            mine.attn.wv.weight.copy_(v)
            mine.attn.wo.weight.copy_(theirs.attn.proj.weight)
            gate, up = theirs.mlp.gate_up.weight.chunk(2, dim=0)
            mine.mlp.w1.weight.copy_(gate)
            mine.mlp.w3.weight.copy_(up)
            mine.mlp.w2.weight.copy_(theirs.mlp.down.weight)
        self.norm.weight.copy_(td.norm.weight)
        self.out.weight.copy_(td.head.weight)


# --------------------------------------------------------------------------- the configurations
class Config:
    """One way of doing a training step; ``step(k)`` runs step ``k`` and returns its loss."""

    def __init__(self, name: str, dtype: str, step_fn):
        self.name, self.dtype, self.step = name, dtype, step_fn
        self.times: list[float] = []
        self.round_medians: list[float] = []
        self.losses: list[float] = []


def plain_config(ref: RefTransformer, trainer: Trainer, batch, autocast: bool) -> Config:
    """A plain step of the reference model on the Trainer's own batches, times and masks."""
    opt = torch.optim.AdamW(ref.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1, foreach=False, fused=False)

    def denoiser(xt, t):
        if not autocast:
            return ref(xt, t)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return ref(xt, t)

    def step(k):
        x, g = batch(k)
        loss = trainer.objective.loss_terms(denoiser, x, g).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ref.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    ref.train()
    return Config(
        "plain bf16 autocast" if autocast else "plain fp32 eager", "bfloat16" if autocast else "float32", step
    )


def trainer_config(name: str, trainer: Trainer) -> Config:
    def step(k):
        return trainer.train_step().loss

    return Config(name, trainer.dtype, step)  # the dtype the Trainer resolved (system.dtype=auto)


def make_trainer(overrides: list[str]) -> tuple[Trainer, Transformer]:
    """A Trainer built from a config exactly as ``tokendiff train`` builds it (into a scratch directory),
    and a copy of its model's initial weights from before accelerate wrapped its forward in autocast."""
    import tempfile

    cfg = compose_config(overrides)
    cfg.output_dir = tempfile.mkdtemp(prefix="train_throughput-")
    parts = build_training(cfg)
    initial = copy.deepcopy(parts.model)
    return trainer_from_config(cfg, parts.model, parts.objective, parts.tokenizer, parts.data), initial


def profile_top(cfg: Config, steps: int, rows: int) -> list[dict]:
    """The ``rows`` most expensive operators (self CPU time) over ``steps`` steps of ``cfg``."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for k in range(steps):
            cfg.step(10_000 + k)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return [
        {
            "name": e.key,
            "self_ms_per_step": e.self_cpu_time_total / 1e3 / steps,
            "share": e.self_cpu_time_total / total,
            "calls_per_step": e.count / steps,
        }
        for e in events[:rows]
    ]


# --------------------------------------------------------------------------- measurement
def matmul_peak(n: int, dtype: torch.dtype, reps: int) -> float:
    """Best FLOP/s of an n x n by n x n matmul."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    for _ in range(2):
        torch.matmul(a, b)
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best


def flops_per_token(model: Transformer, n_layer: int, n_embd: int, seq_len: int) -> tuple[float, int]:
    n_nonembed = model.num_parameters() - model.embed.weight.numel()
    return 6.0 * n_nonembed + 12.0 * n_layer * n_embd * seq_len, n_nonembed


def run_steps(cfg: Config, first: int, n: int, record: bool) -> None:
    times = []
    for k in range(first, first + n):
        start = time.perf_counter()
        loss = cfg.step(k)
        times.append(time.perf_counter() - start)
        if not math.isfinite(loss):
            raise SystemExit(f"{cfg.name}: loss became {loss} at step {k}")
        cfg.losses.append(loss)
    if record:
        cfg.times += times
        cfg.round_medians.append(statistics.median(times))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=256)
    p.add_argument("--trainer-overrides", nargs="*", default=[], help="more key=value for the Trainer's config")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per configuration (compile: more)")
    p.add_argument("--rounds", type=int, default=4, help="interleaved rounds A/B/C...")
    p.add_argument("--steps-per-round", type=int, default=5, help="timed steps per configuration per round")
    p.add_argument("--compile", action="store_true", help="also time the Trainer with system.compile=true")
    p.add_argument("--compile-warmup", type=int, default=3, help="untimed steps of the compiled step")
    p.add_argument("--profile", action="store_true", help="torch.profiler's top operators of the Trainer step")
    p.add_argument("--profile-rows", type=int, default=15)
    p.add_argument("--matmul-size", type=int, default=2048)
    p.add_argument("--matmul-reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--out", type=Path, default=RESULTS / "train_throughput.json")
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    B, L = args.batch_size, args.seq_len
    tokens_per_step = B * L
    overrides = [
        f"training.batch_size={B}",
        f"model.block_size={L}",
        f"model.n_layer={args.n_layer}",
        f"model.n_head={args.n_head}",
        f"model.n_embd={args.n_embd}",
        *args.trainer_overrides,
    ]
    refused = [o for o in args.trainer_overrides if o.split("=", 1)[0] in ("training.grad_accum", "model.causal")]
    if refused:
        raise SystemExit(
            f"--trainer-overrides {refused[0]}: the plain configurations time one micro-batch of the "
            "bidirectional model; this script cannot compare that"
        )
    trainer, td = make_trainer([*overrides, "system.compile=false"])
    V = trainer.tokenizer.vocab_size

    # The reference is the same network with the same initial weights.
    ref = RefTransformer(V, args.n_layer, args.n_head, args.n_embd, block_size=L)
    n_td, n_ref = td.num_parameters(), sum(q.numel() for q in ref.parameters())
    assert n_td == n_ref, f"parameter counts differ: tokendiff {n_td:,} vs reference {n_ref:,}"
    ref.copy_from(td)
    with torch.no_grad():
        probe = torch.randint(0, V + 1, (2, min(L, 64)), generator=torch.Generator().manual_seed(0))
        diff = (td(probe) - ref(probe)).abs().max().item()
    assert diff < 1e-4, f"the reference model does not compute the same logits (max |diff| {diff:.2e})"
    fpt, n_nonembed = flops_per_token(td, args.n_layer, args.n_embd, L)

    def batch(k):
        """Step ``k``'s batch and draws, as the Trainer makes them."""
        from tokendiff.training.step_rng import step_generator

        seed = trainer.training.seed
        x = trainer.train_split.batch(B, L, step_generator(seed, k, 0, 0, "cpu"))
        return x, step_generator(seed, k, 0, 1, "cpu")

    configs = [
        plain_config(copy.deepcopy(ref), trainer, batch, autocast=False),
        plain_config(copy.deepcopy(ref), trainer, batch, autocast=True),
        trainer_config("tokendiff Trainer", trainer),
    ]
    if args.compile:
        compiled, _ = make_trainer([*overrides, "system.compile=true"])
        configs.append(trainer_config("tokendiff Trainer + compile", compiled))

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print(
        f"model: {args.n_layer} layers x {args.n_head} heads x {args.n_embd} wide, vocab {V}; "
        f"{n_td:,} parameters ({n_nonembed:,} non-embedding); reference matches (max |logit diff| {diff:.1e})"
    )
    print(f"step: batch {B} x seq {L} = {tokens_per_step:,} tokens; {fpt / 1e6:.2f} MFLOP per token", flush=True)
    print(f"Trainer: system.dtype={trainer.system.dtype} -> {trainer.dtype}; compiled: {trainer.compiled}")

    peaks_before = {
        "float32": matmul_peak(args.matmul_size, torch.float32, args.matmul_reps),
        "bfloat16": matmul_peak(args.matmul_size, torch.bfloat16, args.matmul_reps),
    }

    compile_seconds = None
    step_no = {c.name: 0 for c in configs}
    for cfg in configs:  # warm-up (and compilation)
        start = time.perf_counter()
        n = args.warmup + (args.compile_warmup if "compile" in cfg.name else 0)
        run_steps(cfg, step_no[cfg.name], n, record=False)
        step_no[cfg.name] += n
        if "compile" in cfg.name:
            compile_seconds = time.perf_counter() - start
        print(f"warmed up {cfg.name} ({n} steps, {time.perf_counter() - start:.1f}s)", flush=True)

    for r in range(args.rounds):  # A/B/C/A/B/C...
        for cfg in configs:
            run_steps(cfg, step_no[cfg.name], args.steps_per_round, record=True)
            step_no[cfg.name] += args.steps_per_round
        line = ", ".join(f"{c.name} {1e3 * c.round_medians[-1]:.0f} ms" for c in configs)
        print(f"round {r + 1}/{args.rounds}: {line}", flush=True)

    peaks_after = {
        "float32": matmul_peak(args.matmul_size, torch.float32, args.matmul_reps),
        "bfloat16": matmul_peak(args.matmul_size, torch.bfloat16, args.matmul_reps),
    }
    peaks = {k: max(peaks_before[k], peaks_after[k]) for k in peaks_before}

    base_fp32 = statistics.median(configs[0].times)
    base_bf16 = statistics.median(configs[1].times)
    rows = []
    for cfg in configs:
        med = statistics.median(cfg.times)
        tok_s = tokens_per_step / med
        achieved = tok_s * fpt
        rows.append(
            {
                "name": cfg.name,
                "compute_dtype": cfg.dtype,
                "median_step_s": med,
                "min_step_s": min(cfg.times),
                "max_step_s": max(cfg.times),
                "round_median_step_s": cfg.round_medians,
                "step_times_s": cfg.times,
                "tokens_per_s": tok_s,
                "speedup_vs_plain_fp32": base_fp32 / med,
                "speedup_vs_plain_bf16": base_bf16 / med,
                "achieved_flops_per_s": achieved,
                "peak_flops_per_s": peaks[cfg.dtype],
                "mfu": achieved / peaks[cfg.dtype],
                "loss_first": cfg.losses[0],
                "loss_last": cfg.losses[-1],
            }
        )

    header = f"{'configuration':<30}{'step ms':>9}{'tokens/s':>11}{'vs fp32':>9}{'vs bf16':>9}"
    header += f"{'GFLOP/s':>9}{'peak':>7}{'MFU':>8}"
    print()
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['name']:<30}{1e3 * row['median_step_s']:>9.0f}{row['tokens_per_s']:>11,.0f}"
            f"{row['speedup_vs_plain_fp32']:>8.2f}x{row['speedup_vs_plain_bf16']:>8.2f}x"
            f"{row['achieved_flops_per_s'] / 1e9:>9.1f}"
            f"{'fp32' if row['compute_dtype'] == 'float32' else 'bf16':>7}{100 * row['mfu']:>7.1f}%"
        )
    print(
        f"\nmatmul peak ({args.matmul_size}^2, best of {args.matmul_reps}, before/after): "
        f"fp32 {peaks_before['float32'] / 1e9:.1f}/{peaks_after['float32'] / 1e9:.1f} GFLOP/s, "
        f"bf16 {peaks_before['bfloat16'] / 1e9:.1f}/{peaks_after['bfloat16'] / 1e9:.1f} GFLOP/s"
    )
    default = rows[2]
    targets = {
        "vs_plain_fp32_2x": default["speedup_vs_plain_fp32"] >= 2.0,
        "vs_plain_bf16_1.3x": default["speedup_vs_plain_bf16"] >= 1.3,
    }
    print(
        f"targets for the Trainer step: >= 2x plain fp32 {'met' if targets['vs_plain_fp32_2x'] else 'NOT met'} "
        f"({default['speedup_vs_plain_fp32']:.2f}x), >= 1.3x plain bf16 "
        f"{'met' if targets['vs_plain_bf16_1.3x'] else 'NOT met'} ({default['speedup_vs_plain_bf16']:.2f}x)"
    )
    if compile_seconds is not None:
        print(
            f"torch.compile warm-up (compilation + {args.warmup + args.compile_warmup} steps): {compile_seconds:.0f}s"
        )

    profile = None
    if args.profile:
        profile = profile_top(configs[2], steps=3, rows=args.profile_rows)
        print(f"\ntorch.profiler, {configs[2].name}, top {args.profile_rows} by self CPU time (ms per step):")
        for e in profile:
            print(
                f"  {e['self_ms_per_step']:8.1f} ms {100 * e['share']:5.1f}%  x{e['calls_per_step']:<5.0f} {e['name']}"
            )

    result = {
        "benchmark": "train_throughput",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "environment": {
            "torch": torch.__version__,
            "tokendiff": tokendiff.__version__,
            "python": sys.version.split()[0],
            "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "machine": platform.machine(),
        },
        "model": {
            "n_layer": args.n_layer,
            "n_head": args.n_head,
            "n_embd": args.n_embd,
            "vocab_size": V,
            "parameters": n_td,
            "parameters_nonembedding": n_nonembed,
            "reference_max_logit_diff": diff,
        },
        "trainer_overrides": overrides,
        "tokens_per_step": tokens_per_step,
        "model_flops_per_token": fpt,
        "matmul_peak_flops_per_s": {"before": peaks_before, "after": peaks_after, "used": peaks},
        "compile_warmup_s": compile_seconds,
        "configs": rows,
        "targets_met": targets,
        "profile_trainer_step": profile,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
