"""Which image backbone trains best on a 2-core CPU? Equal wall-clock budget, same masked-diffusion loss.

Candidates (all time-agnostic, 3 input states per pixel, 2 logits per pixel out):
    patch4   tokendiff's ImagePatchTransformer, 4x4 patches (49 tokens), 6 layers x 256
    patch2   the same with 2x2 patches (196 tokens), 4 layers x 128
    convnet  a residual CNN at full 28x28 resolution, 8 blocks x 64 channels, dilations 1-2-4-8
             (the U-Net-like family: every pixel sees a 60-pixel receptive field)

Each is trained for ``--minutes`` by tokendiff's ``Trainer`` (``Trainer.train_step``), built from the
``+experiment=mnist`` recipe exactly as ``tokendiff train`` builds it (AdamW, lr 1e-3 with a cosine decay to
1e-4 over the measured number of steps, no warmup, no weight decay, gradient clipping at 1; bf16 autocast;
batch 64; static binarized MNIST; EMA off, so the weights scored are the ones the optimizer reached), then
scored by the library's NELBO (``evaluate_likelihood``) on the first ``--eval-images`` validation images
(2 Monte Carlo draws). Reported: images/s, steps done, NELBO. Run in one process one after the other, so
the machine is the same for all.

    python bench/mnist_backbones.py --minutes 3
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from tokendiff.build import build_training
from tokendiff.cli.train import trainer_from_config
from tokendiff.configs import compose_config
from tokendiff.evaluation import evaluate_likelihood
from tokendiff.training import Trainer

RESULTS = Path(__file__).resolve().parent / "results"

CANDIDATES = {  # model.* overrides of the mnist recipe
    "patch4": ["model.arch=image_patch", "model.patch=4", "model.n_layer=6", "model.n_head=4", "model.n_embd=256"],
    "patch2": ["model.arch=image_patch", "model.patch=2", "model.n_layer=4", "model.n_head=4", "model.n_embd=128"],
    "convnet": ["model.arch=image_conv", "model.n_layer=8", "model.n_embd=64"],
}
PROBE_STEPS = 5  # steps timed to fit the number of steps (and so the cosine) to the budget


def make_trainer(model: list[str], steps: int, batch: int, output_dir: str) -> Trainer:
    """A Trainer for ``steps`` steps, built as ``tokendiff train`` builds it (weights from training.seed)."""
    cfg = compose_config(
        [
            "+experiment=mnist",
            *model,
            f"training.batch_size={batch}",
            "training.n_epochs=null",
            f"training.max_iters={steps}",
            "training.warmup_iters=0",
            "training.ema=0",
            "system.dtype=bfloat16",
            "system.compile=false",
        ]
    )
    cfg.output_dir = output_dir  # nothing is written there: only train_step is called
    parts = build_training(cfg)
    return trainer_from_config(cfg, parts.model, parts.objective, parts.tokenizer, parts.data)


def run(model, minutes, batch, eval_images):
    with tempfile.TemporaryDirectory(prefix="mnist_backbones-") as scratch:
        probe = make_trainer(model, 1000, batch, scratch)
        start = time.perf_counter()
        for _ in range(PROBE_STEPS):
            probe.train_step()
        per_step = (time.perf_counter() - start) / PROBE_STEPS
        total = max(10, int(minutes * 60 / per_step))
        trainer = make_trainer(model, total, batch, scratch)  # the same initial weights, cosine over `total`
        for _ in range(PROBE_STEPS):  # not timed: the first steps warm up the allocator and kernels
            trainer.train_step()
        start = time.perf_counter()
        while trainer.step < total:
            trainer.train_step()
        seconds = time.perf_counter() - start
    net = trainer.inference_model().eval()
    r = evaluate_likelihood(
        net,
        trainer.objective,
        trainer.val_split.windows(784, eval_images),
        num_draws=2,
        batch_size=250,
        seed=0,
        device=trainer.device,
        autocast=trainer.accelerator.autocast,
    )
    return {
        "params": net.num_parameters(),
        "steps": total,
        "images_per_s": (total - PROBE_STEPS) * batch / seconds,
        "nelbo_nats_per_image": r.nelbo_nats_per_token * 784,
        "nelbo_stderr": r.nelbo_nats_per_token_stderr * 784,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=3.0)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--eval-images", type=int, default=2000)
    p.add_argument("--only", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    p.add_argument("--out", type=Path, default=RESULTS / "mnist_backbones.json")
    args = p.parse_args()
    results = {}
    for name in args.only:
        results[name] = run(CANDIDATES[name], args.minutes, args.batch, args.eval_images)
        r = results[name]
        print(
            f"{name:8s} {r['params']:>10,} params  {r['images_per_s']:7.1f} img/s  {r['steps']:5d} steps  "
            f"NELBO {r['nelbo_nats_per_image']:.2f} ± {r['nelbo_stderr']:.2f} nats/image",
            flush=True,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    saved = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    args.out.write_text(json.dumps({"args": saved, "results": results}, indent=2))


if __name__ == "__main__":
    main()
