"""Fixed observation masks: which pixels of each training image were ever observed (ambient setting).

Corruption (the ambient setting, ``notes/ambient.md``): image n is observed through a FIXED mask,
each pixel observed independently with probability ``observed_fraction`` = q. The mask is a function
of ``(seed, n)`` only, so the model never sees another view of an image, and it does not depend on
how many images are corrupted at once. How: a counter-based generator, Philox4x64 with
``key = SeedSequence(seed).generate_state(2, uint64)`` and counter ``(0, n, 0, 0)``; pixel j is
observed iff the j-th float64 uniform ``(raw_j >> 11) * 2**-53`` of that stream is ``< q`` (exactly
what ``np.random.Generator(Philox(key, counter)).random(D) < q`` gives, computed in integers).
"""

from __future__ import annotations

import math

import numpy as np

from tokendiff.data.mnist import MASK_ID, N_PIXELS
from tokendiff.errors import TokenDiffError

__all__ = ["check_observed_fraction", "observation_mask", "observation_masks", "corrupt_images"]


def check_observed_fraction(observed_fraction: float, key: str = "data.observed_fraction") -> float:
    """``q``, the probability that a pixel of a corrupted image is observed (the one home of this rule: the
    config, the ambient objective and the corruption itself call it); returns it as a float."""
    q = observed_fraction
    if isinstance(q, bool) or not isinstance(q, (int, float, np.floating, np.integer)) or not 0.0 < q <= 1.0:
        raise TokenDiffError(
            f"{key}={q!r} must lie in (0, 1], e.g. 0.1 (the share of pixels each corrupted image shows)"
        )
    return float(q)


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise TokenDiffError(f"seed={seed!r} must be an integer >= 0, e.g. 0")
    return int(seed)


def _mask_key(seed: int) -> np.ndarray:
    """The Philox key of a mask seed: two uint64 words hashed from it by SeedSequence."""
    return np.random.SeedSequence(seed).generate_state(2, dtype=np.uint64)


def observation_masks(
    indices: int | np.ndarray, observed_fraction: float = 0.1, seed: int = 0, n_pixels: int = N_PIXELS
) -> np.ndarray:
    """Fixed observation masks, bool (N, n_pixels): True where the pixel of that image is observed.

    ``indices``: image indices (1-D, >= 0), or an int n for images 0..n-1. Row k depends only on
    ``(seed, indices[k], observed_fraction)`` (see the module docstring for the construction).
    """
    q = check_observed_fraction(observed_fraction, "observed_fraction")
    seed = _check_seed(seed)
    if isinstance(indices, (int, np.integer)) and not isinstance(indices, bool):
        indices = np.arange(int(indices))
    indices = np.asarray(indices)
    if indices.ndim != 1 or (indices.size and (indices.dtype.kind not in "iu" or indices.min() < 0)):
        raise TokenDiffError(f"indices must be image numbers >= 0 in a 1-D array, got {indices.dtype} {indices.shape}")
    # u = (raw >> 11) * 2**-53 < q  <=>  (raw >> 11) < ceil(q * 2**53)   (q * 2**53 is exact)
    limit = np.uint64(math.ceil(q * 2.0**53))
    bitgen = np.random.Philox(key=_mask_key(seed))
    state = bitgen.state
    out = np.empty((len(indices), n_pixels), dtype=bool)
    chunk = np.empty((max(1, min(len(indices), 4096)), n_pixels), dtype=np.uint64)
    for start in range(0, len(indices), len(chunk)):
        rows = indices[start : start + len(chunk)]
        for r, index in enumerate(rows.tolist()):
            state["state"]["counter"] = np.array([0, index, 0, 0], dtype=np.uint64)
            state["buffer_pos"] = 4  # empty buffer: the next draw starts at the counter
            bitgen.state = state
            chunk[r] = bitgen.random_raw(n_pixels)
        np.less(chunk[: len(rows)] >> np.uint64(11), limit, out=out[start : start + len(rows)])
    return out


def observation_mask(index: int, observed_fraction: float = 0.1, seed: int = 0, n_pixels: int = N_PIXELS) -> np.ndarray:
    """The fixed observation mask of image ``index``, bool (n_pixels,); row of :func:`observation_masks`."""
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
        raise TokenDiffError(f"index={index!r} must be an image number >= 0")
    return observation_masks(np.array([index]), observed_fraction, seed, n_pixels)[0]


def corrupt_images(
    x: np.ndarray,
    observed_fraction: float = 0.1,
    seed: int = 0,
    mask_value: int = MASK_ID,
    indices: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The corrupted data set: tokens uint8 (N, D) in {0, 1, mask_value} and masks bool (N, D).

    ``x``: binary images (N, D) uint8 {0, 1}. Row n is observed through ``observation_mask(indices[n],
    observed_fraction, seed)`` (``indices`` defaults to 0..N-1, the row numbers of the split); observed
    pixels keep their value, the others become ``mask_value``. Use a different ``seed`` per split.
    """
    x = np.asarray(x)
    if x.ndim != 2 or x.dtype != np.uint8 or (x.size and x.max() > 1):
        raise TokenDiffError(
            f"x is {x.dtype} {x.shape}, expected binary images (N, 784) uint8 in {{0, 1}}; "
            "binarize first (binarize_dynamic or binarize_threshold)"
        )
    if isinstance(mask_value, bool) or not isinstance(mask_value, (int, np.integer)) or not 2 <= mask_value <= 255:
        raise TokenDiffError(f"mask_value={mask_value!r} must be an integer in 2..255 (not a pixel value), e.g. 2")
    idx = np.arange(len(x)) if indices is None else np.asarray(indices)
    if idx.shape != (len(x),):
        raise TokenDiffError(f"indices has shape {idx.shape}, expected ({len(x)},): one image number per row of x")
    masks = observation_masks(idx, observed_fraction, seed, n_pixels=x.shape[1])
    return np.where(masks, x, np.uint8(mask_value)).astype(np.uint8, copy=False), masks
