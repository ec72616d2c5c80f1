"""Sample metrics for binary-image models (no downloaded networks).

- **Frechet distance** between the classifier features (128-d) of model samples and of held-out real
  images (the validation split). Real test images against the same reference give the floor that
  sample noise alone produces at this sample size.
- **Confidence**: mean top-class probability the classifier gives the samples (real digits ~0.98).
- **Class coverage**: share of the 10 classes that receive at least 5% of the samples (half of a
  uniform share), and the entropy of the predicted-class histogram divided by log 10.
- **Memorization**: Hamming distance from each sample to its nearest training image (mean and
  minimum); a model that copies its training set scores ~0. Real test images give the reference.
- **Inpainting accuracy**: corrupt test images with the training observation rate, let the model fill
  the unobserved pixels (ancestral sampling), and count the pixels it got right.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from tokendiff.data.corruption import corrupt_images
from tokendiff.errors import TokenDiffError
from tokendiff.evaluation.classifier import frechet_distance, kernel_distance, load_classifier
from tokendiff.evaluation.likelihood import evaluate_likelihood
from tokendiff.samplers.diffusion import DiffusionSampler, row_generators
from tokendiff.samplers.images import draw_images

# images per sampler call: the CNN's activations of 16-64 images stay in a CPU's caches (6.7 ms per image and
# forward at 32 against 11 ms at 250, one thread); bf16 autocast is 5x slower on CPUs without native bf16
SAMPLE_BATCH = 32
EVAL_IMAGES = 2000  # test images of the NELBO by default (eval.max_windows): its standard error says enough
INPAINT_IMAGES = 200  # corrupted test images completed for the inpainting accuracy

__all__ = ["sample_metrics", "nearest_hamming", "inpaint", "shuffled_test_images", "evaluate_images", "sample_quality"]


def shuffled_test_images(test: np.ndarray, n: int) -> np.ndarray:
    """``n`` test images in a fixed random order (the static test split is sorted by digit class)."""
    return test[np.random.default_rng(0).permutation(len(test))[:n]]


@torch.no_grad()
def nearest_hamming(a: np.ndarray, b: np.ndarray, chunk: int = 512) -> np.ndarray:
    """For each row of ``a`` (N, D) in {0, 1}, the Hamming distance to the nearest row of ``b`` (M, D).

    ``|x - y|_H = |x| + |y| - 2 x.y`` for binary vectors: one matrix product per chunk.
    """
    bt = torch.from_numpy(np.asarray(b, dtype=np.float32))  # (M, D)
    b_ones = bt.sum(1)  # (M,)
    out = []
    for i in range(0, len(a), chunk):
        at = torch.from_numpy(np.asarray(a[i : i + chunk], dtype=np.float32))  # (n, D)
        dist = at.sum(1, keepdim=True) + b_ones[None, :] - 2 * at @ bt.T  # (n, M)
        out.append(dist.min(1).values.round().long())
    return torch.cat(out).numpy()


@torch.no_grad()
def sample_metrics(samples: np.ndarray, classifier, reference: np.ndarray, train: np.ndarray) -> dict:
    """All sample metrics of ``samples`` (N, 784) against ``reference`` images and the ``train`` set."""
    x = torch.from_numpy(np.asarray(samples, dtype=np.int64))
    ref = torch.from_numpy(np.asarray(reference, dtype=np.int64))
    feats = torch.cat([classifier.features(x[i : i + 1000]) for i in range(0, len(x), 1000)])
    ref_feats = torch.cat([classifier.features(ref[i : i + 1000]) for i in range(0, len(ref), 1000)])
    probs = torch.cat([classifier(x[i : i + 1000]).softmax(-1) for i in range(0, len(x), 1000)])  # (N, 10)
    share = torch.bincount(probs.argmax(1), minlength=10).double() / len(x)  # (10,)
    entropy = -(share[share > 0] * share[share > 0].log()).sum() / np.log(10)
    nearest = nearest_hamming(samples, train)
    kid, kid_std = kernel_distance(feats, ref_feats)
    return {
        "frechet_distance": frechet_distance(feats, ref_feats),
        "kernel_distance": kid,
        "kernel_distance_std": kid_std,
        "confidence": float(probs.max(1).values.mean()),
        "class_coverage": float((share >= 0.05).double().mean()),
        "class_entropy": float(entropy),
        "nearest_train_hamming_mean": float(nearest.mean()),
        "nearest_train_hamming_min": int(nearest.min()),
        "num_samples": int(len(x)),
    }


@torch.no_grad()
def inpaint(
    model,
    kernel,
    clean: np.ndarray,
    observed_fraction: float,
    steps: int,
    seed: int = 0,
    corruption_seed: int = 12345,
    batch_size: int = 100,
    device="cpu",
    **options,
):
    """Fill the unobserved pixels of corrupted ``clean`` images. Returns (accuracy, corrupted, completed).
    ``options``: more :class:`DiffusionSampler` keywords.

    ``corruption_seed`` differs from the training corruption seed, so test masks are new draws.
    """
    corrupted, observed = corrupt_images(
        np.asarray(clean, dtype=np.uint8), observed_fraction, corruption_seed, mask_value=kernel.mask_token_id
    )
    sampler = DiffusionSampler(model, kernel, steps=steps, **options)
    completed = []
    for i in range(0, len(corrupted), batch_size):
        x = torch.from_numpy(corrupted[i : i + batch_size].astype(np.int64)).to(device)
        completed.append(sampler.sample(x, row_generators(seed, len(x), start=i)).cpu().numpy())
    completed = np.concatenate(completed)
    hidden = ~observed
    accuracy = float((completed[hidden] == clean[hidden]).mean())
    return accuracy, corrupted, completed


def evaluate_images(
    ckpt, data, eval_cfg, seed: int, device, *, training_objective: str, observed_fraction: float
) -> dict:
    """``tokendiff eval`` of an image checkpoint: NELBO in nats per image with its Monte Carlo standard
    error, and (``eval_cfg.sample_metrics``) the sample metrics. ``eval_cfg``: the ``eval`` section;
    ``training_objective``: the run's ``diffusion.objective`` (any but ``clean`` trained on corrupted
    images); ``observed_fraction``: the share of pixels its training images kept (the inpainting's)."""
    split_name = eval_cfg.split or "test"
    if split_name == "train" and training_objective != "clean":
        raise TokenDiffError(
            f"eval.split=train: this run's training images are corrupted (diffusion.objective="
            f"{training_objective}), so their clean NELBO is undefined; use eval.split=val or test"
        )
    split = data.split(split_name)
    windows = split.windows(ckpt.model.block_size, eval_cfg.max_windows or EVAL_IMAGES)
    start = time.perf_counter()
    r = evaluate_likelihood(
        ckpt.model,
        ckpt.objective,
        windows,
        num_draws=eval_cfg.num_draws,
        batch_size=eval_cfg.batch_size,
        seed=seed,
        device=device,
        t_min=eval_cfg.t_min,
    )
    D = windows.shape[1]
    out = {
        "checkpoint": str(ckpt.path),
        "step": ckpt.step,
        "split": split_name,
        "weights": eval_cfg.weights,
        "t_min": r.t_min,
        "images": r.sequences,
        "draws": r.draws,
        "nelbo_nats_per_image": r.nelbo_nats_per_token * D,
        "nelbo_nats_per_image_stderr": None
        if r.nelbo_nats_per_token_stderr is None
        else r.nelbo_nats_per_token_stderr * D,
        "nelbo_nats_per_token": r.nelbo_nats_per_token,
        "reconstruction_nats_per_image": r.reconstruction_nats_per_token * D,  # inside the NELBO: the t = 0 term
        "below_t_min_nats_per_image": r.below_t_min_nats_per_token * D,  # inside the NELBO: its part at t < t_min
        "bits_per_token": r.bits_per_token,
        "bits_per_token_stderr": r.bits_per_token_stderr,
        "perplexity": r.perplexity,
        "perplexity_stderr": r.perplexity_stderr,
        "nelbo_seconds": round(time.perf_counter() - start, 1),
    }
    if eval_cfg.sample_metrics:
        out.update(sample_quality(ckpt, data, eval_cfg, seed, device, observed_fraction=observed_fraction))
    return out


def sample_quality(ckpt, data, eval_cfg, seed: int, device, *, observed_fraction: float) -> dict:
    """Sample metrics of ``eval_cfg.num_samples`` fresh samples, the same for real test images as the
    floor, and inpainting accuracy at ``observed_fraction``, the corruption the model was trained for."""
    start = time.perf_counter()
    classifier, meta = load_classifier()
    n, steps = eval_cfg.num_samples, eval_cfg.sampling_steps
    options = {}
    if eval_cfg.visible_limit is not None:  # the training-free check (DiffusionSampler.visible_limit)
        options = {"visible_limit": eval_cfg.visible_limit, "visible_subsets": eval_cfg.visible_subsets}
    samples = draw_images(
        ckpt.model, ckpt.kernel, n, steps, 1.0, "ancestral", seed, SAMPLE_BATCH, device, progress="samples", **options
    )
    reference = data.split("val").windows(784).numpy()
    train = data.clean_train_images()
    test = shuffled_test_images(data.split("test").windows(784).numpy(), n)
    metrics = sample_metrics(samples, classifier, reference, train)
    real = sample_metrics(test, classifier, reference, train)
    q = observed_fraction
    corrupted = test[: min(n, INPAINT_IMAGES)]
    accuracy, _, _ = inpaint(
        ckpt.model, ckpt.kernel, corrupted, q, steps, seed, batch_size=SAMPLE_BATCH, device=device, **options
    )
    out = {f"sample_{k}": v for k, v in metrics.items()}
    out.update({f"real_test_{k}": v for k, v in real.items() if k != "num_samples"})
    out["inpainting_accuracy"] = accuracy
    # the trivial reference: predict 0 (the majority value) for every hidden pixel
    out["inpainting_all_zero_accuracy"] = float(1.0 - test[: min(n, INPAINT_IMAGES)].mean())
    out["inpainting_images"] = min(n, INPAINT_IMAGES)
    out["classifier_test_accuracy"] = meta["test_accuracy_dynamic"]
    out["sampling_steps"] = steps
    out["visible_limit"] = eval_cfg.visible_limit
    out["sample_metrics_seconds"] = round(time.perf_counter() - start, 1)
    if not math.isfinite(out["sample_frechet_distance"]):
        raise TokenDiffError("the Frechet distance is not finite; draw more samples (eval.num_samples)")
    return out
