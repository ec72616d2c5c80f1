"""A small MNIST classifier that tokendiff trains itself, for sample metrics without downloaded networks.

It is trained on *dynamically* binarized MNIST (Bernoulli(intensity / 255), fresh draws every epoch),
so that it has seen the kind of binary digits the diffusion models sample, and cached (safetensors +
JSON) under the prepared-data cache after its first run. Its 128-d penultimate activations are the
features of the Frechet distance.
"""

from __future__ import annotations

import json
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from tokendiff.atomic import staged_file, write_text
from tokendiff.data.mnist import binarize_dynamic, load_mnist
from tokendiff.data.paths import prepared_dir

__all__ = ["DigitClassifier", "load_classifier", "frechet_distance", "kernel_distance"]

VERSION = 1


class DigitClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc = nn.Linear(64 * 7 * 7, 128)
        self.out = nn.Linear(128, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 784) pixels in {0, 1} -> (B, 128)."""
        h = x.float().view(-1, 1, 28, 28)
        h = F.max_pool2d(F.relu(self.conv1(h)), 2)  # (B, 32, 14, 14)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)  # (B, 64, 7, 7)
        return F.relu(self.fc(h.flatten(1)))  # (B, 128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.features(x))  # (B, 10) logits


def _train(epochs: int = 2, seed: int = 0) -> tuple[DigitClassifier, dict]:
    torch.manual_seed(seed)
    images, labels = load_mnist("train")
    test_images, test_labels = load_mnist("test")
    flat = images.reshape(len(images), -1)
    model = DigitClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(seed)
    start = time.time()
    y = torch.from_numpy(labels.astype(np.int64))
    for _ in range(epochs):
        x = torch.from_numpy(binarize_dynamic(flat, rng))  # a fresh binarization per epoch
        order = torch.randperm(len(x))
        for i in range(0, len(x), 128):
            idx = order[i : i + 128]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        xt = torch.from_numpy(binarize_dynamic(test_images.reshape(len(test_images), -1), rng))
        pred = torch.cat([model(xt[i : i + 1000]).argmax(1) for i in range(0, len(xt), 1000)])
    accuracy = float((pred.numpy() == test_labels).mean())
    return model, {
        "version": VERSION,
        "epochs": epochs,
        "seed": seed,
        "test_accuracy_dynamic": accuracy,
        "train_seconds": round(time.time() - start, 1),
    }


def load_classifier() -> tuple[DigitClassifier, dict]:
    """The cached classifier, trained first if missing (about a minute on 2 CPU cores)."""
    root = prepared_dir() / f"mnist_classifier_v{VERSION}"
    if (root / "model.safetensors").exists() and (root / "meta.json").exists():
        model = DigitClassifier()
        model.load_state_dict(load_file(str(root / "model.safetensors")))
        return model.eval(), json.loads((root / "meta.json").read_text())
    model, meta = _train()
    with staged_file(root / "model.safetensors") as tmp:
        save_file(model.state_dict(), str(tmp))
    write_text(root / "meta.json", json.dumps(meta, indent=2))  # last: its presence says the cache is complete
    return model, meta


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """``|mu_a - mu_b|^2 + tr(C_a + C_b - 2 (C_a^1/2 C_b C_a^1/2)^1/2)`` of two feature sets (N, d).

    The matrix square roots come from symmetric eigendecompositions (no SciPy needed): with
    ``S = C_a^1/2``, ``tr((C_a C_b)^1/2) = sum sqrt(eig(S C_b S))``.
    """
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    w, v = torch.linalg.eigh(cov_a)
    sqrt_a = (v * w.clamp(min=0).sqrt()) @ v.T
    cross = torch.linalg.eigvalsh(sqrt_a @ cov_b @ sqrt_a).clamp(min=0).sqrt().sum()
    return float((mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * cross)


def kernel_distance(
    a: torch.Tensor, b: torch.Tensor, subsets: int = 50, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Kernel distance (KID, Binkowski et al. 2018) of two feature sets (N, d): mean and standard deviation
    over ``subsets`` random subsets of ``min(subset_size, N)`` rows of each of the unbiased MMD^2 with the
    cubic polynomial kernel ``k(u, v) = (u.v / d + 1)^3``.

    Unlike the Frechet distance it is unbiased at any sample size (so small sets compare fairly) and can be
    slightly negative when the two sets are alike. Written here because the libraries that ship KID tie it
    to Inception features of RGB images; ours are the digit classifier's.
    """
    a, b = a.double(), b.double()
    d = a.shape[1]
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ValueError(f"kernel_distance needs at least 2 rows in each set, got {len(a)} and {len(b)}")
    g = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(subsets):
        x = a[torch.randperm(len(a), generator=g)[:m]]
        y = b[torch.randperm(len(b), generator=g)[:m]]
        kxx, kyy, kxy = ((u @ v.T / d + 1) ** 3 for u, v in ((x, x), (y, y), (x, y)))
        off = m * (m - 1)
        values.append(
            (kxx.sum() - kxx.diagonal().sum()) / off + (kyy.sum() - kyy.diagonal().sum()) / off - 2 * kxy.mean()
        )
    v = torch.stack(values)
    return float(v.mean()), float(v.std()) if len(v) > 1 else 0.0
