"""``tokendiff sample`` and ``tokendiff eval`` for binary-image checkpoints (MNIST)."""

from __future__ import annotations

import json
import math
import sys
import time

import numpy as np
import torch

from tokendiff.data.mnist import load_binarized_mnist
from tokendiff.errors import TokenDiffError
from tokendiff.samplers.masked import MaskedDiffusionSampler, row_generators

__all__ = ["sample_images", "eval_images"]


def _observed_fraction(ckpt) -> float:
    """The corruption the model was trained for; 0.1 (the ambient default) for a clean model."""
    return ckpt.config.data.observed_fraction


def shuffled_test_images(test: np.ndarray, n: int) -> np.ndarray:
    """``n`` test images in a fixed random order (the static test split is sorted by digit class)."""
    return test[np.random.default_rng(0).permutation(len(test))[:n]]


def draw_images(
    ckpt, n: int, steps: int, temperature: float, strategy: str, seed: int, batch_size: int, device, callback=None
) -> np.ndarray:
    """``n`` images (n, 784) from scratch; image ``i`` depends only on ``(seed, i)``."""
    sampler = MaskedDiffusionSampler(ckpt.model, ckpt.process, steps=steps, temperature=temperature, strategy=strategy)
    out = []
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        x = torch.full((b, ckpt.model.block_size), ckpt.process.mask_token_id, device=device)
        out.append(sampler.sample(x, row_generators(seed, b, start), callback if start == 0 else None).cpu().numpy())
    return np.concatenate(out)


def sample_images(cfg, ckpt, device) -> None:
    from tokendiff.evaluation.images import inpaint
    from tokendiff.viz.images import save_grid, save_trajectory

    s = cfg.sampling
    if cfg.prompt or cfg.template:
        raise TokenDiffError("an image model takes no prompt or template; use sampling.inpaint=true")
    output = s.output or ("inpainting.png" if s.inpaint else "samples.png")
    start = time.perf_counter()
    if s.inpaint:
        clean = shuffled_test_images(load_binarized_mnist("test", cfg.data.data_dir), cfg.num_samples)
        q = _observed_fraction(ckpt)
        accuracy, corrupted, completed = inpaint(ckpt.model, ckpt.process, clean, q, s.steps, cfg.seed, device=device)
        rows = np.concatenate([corrupted, completed, clean])  # three rows: observed, completed, truth
        save_grid(rows, output, nrow=len(clean))
        print(
            json.dumps(
                {"inpainting_accuracy": accuracy, "observed_fraction": q, "images": len(clean), "output": str(output)}
            )
        )
        return
    if s.trajectory and not s.trajectory.lower().endswith((".gif", ".png")):
        raise TokenDiffError(f"sampling.trajectory={s.trajectory!r}: images need a .gif or .png file")
    frames = []
    callback = (lambda step, x: frames.append(x.cpu().numpy().copy())) if s.trajectory else None  # noqa: E731
    images = draw_images(
        ckpt, cfg.num_samples, s.steps, s.temperature, s.strategy, cfg.seed, s.batch_size, device, callback
    )
    save_grid(images, output)
    seconds = time.perf_counter() - start
    print(f"[{cfg.num_samples} images in {seconds:.1f}s written to {output}; checkpoint {ckpt.path}]", file=sys.stderr)
    if s.trajectory:
        path = save_trajectory(frames, s.trajectory)
        print(f"[denoising trajectory written to {path}]", file=sys.stderr)


def eval_images(cfg, ckpt, data, device) -> dict:
    """NELBO in nats per image with its Monte Carlo standard error, and the sample metrics."""
    from tokendiff.evaluation import evaluate_likelihood

    split_name = cfg.eval.split or "test"
    split = data.split(split_name)
    windows = split.windows(ckpt.model.block_size, cfg.eval.max_windows)
    start = time.perf_counter()
    r = evaluate_likelihood(
        lambda x, t: ckpt.model(x),
        ckpt.process,
        windows,
        num_draws=cfg.eval.num_draws,
        batch_size=max(cfg.eval.batch_size, 100),
        seed=cfg.seed,
        device=device,
    )
    D = windows.shape[1]
    out = {
        "checkpoint": str(ckpt.path),
        "step": ckpt.step,
        "split": split_name,
        "images": r.sequences,
        "nelbo_nats_per_image": r.nelbo_nats_per_token * D,
        "nelbo_nats_per_image_stderr": r.nelbo_nats_per_token_stderr * D,
        "nelbo_nats_per_token": r.nelbo_nats_per_token,
        "bits_per_token": r.bits_per_token,
        "bits_per_token_stderr": r.bits_per_token_stderr,
        "perplexity": r.perplexity,
        "perplexity_stderr": r.perplexity_stderr,
        "nelbo_seconds": round(time.perf_counter() - start, 1),
    }
    if cfg.eval.sample_metrics:
        out.update(sample_quality(cfg, ckpt, data, device))
    return out


def sample_quality(cfg, ckpt, data, device) -> dict:
    from tokendiff.evaluation.classifier import load_classifier
    from tokendiff.evaluation.images import inpaint, sample_metrics

    start = time.perf_counter()
    classifier, meta = load_classifier()
    n, steps = cfg.eval.num_samples, cfg.eval.sampling_steps
    samples = draw_images(ckpt, n, steps, 1.0, "ancestral", cfg.seed, 100, device)
    reference = data.split("val").windows(784).numpy()
    train = data.clean_train_images()
    test = shuffled_test_images(data.split("test").windows(784).numpy(), n)
    metrics = sample_metrics(samples, classifier, reference, train)
    real = sample_metrics(test, classifier, reference, train)
    accuracy, _, _ = inpaint(
        ckpt.model, ckpt.process, test[: min(n, 1000)], _observed_fraction(ckpt), steps, cfg.seed, device=device
    )
    # the trivial reference: predict 0 (the majority value) for every hidden pixel
    out = {f"sample_{k}": v for k, v in metrics.items()}
    out.update({f"real_test_{k}": v for k, v in real.items() if k != "num_samples"})
    out["inpainting_accuracy"] = accuracy
    out["inpainting_all_zero_accuracy"] = float(1.0 - test[: min(n, 1000)].mean())
    out["classifier_test_accuracy"] = meta["test_accuracy_dynamic"]
    out["sample_metrics_seconds"] = round(time.perf_counter() - start, 1)
    if not math.isfinite(out["sample_frechet_distance"]):
        raise TokenDiffError("the Frechet distance is not finite; draw more samples (eval.num_samples)")
    return out
