"""Drawing binary images (MNIST) from scratch with the masked-diffusion sampler."""

from __future__ import annotations

import numpy as np
import torch

from tokendiff.samplers.diffusion import DiffusionSampler
from tokendiff.samplers.noise import row_generators

__all__ = ["draw_images"]


def draw_images(
    model,
    kernel,
    n: int,
    steps: int,
    temperature: float,
    strategy: str,
    seed: int,
    batch_size: int,
    device,
    callback=None,
    progress: str | None = None,
    **options,
) -> np.ndarray:
    """``n`` images (n, D) from scratch; image ``i`` depends only on ``(seed, i)``.

    ``callback(step, x)`` sees every step of the first batch (for the trajectory visual). ``progress``: a
    label for a progress bar over the batches (stderr). ``options``: more :class:`DiffusionSampler` keywords.
    """
    from tqdm.auto import tqdm

    sampler = DiffusionSampler(model, kernel, steps=steps, temperature=temperature, strategy=strategy, **options)
    out = []
    starts = range(0, n, batch_size)
    for start in tqdm(starts, desc=progress, unit="batch", disable=progress is None, leave=False):
        b = min(batch_size, n - start)
        x = torch.full((b, model.block_size), kernel.mask_token_id, device=device)
        out.append(sampler.sample(x, row_generators(seed, b, start), callback if start == 0 else None).cpu().numpy())
    return np.concatenate(out)
