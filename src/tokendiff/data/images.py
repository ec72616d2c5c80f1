"""Binary-image data sets with the interface the trainer and evaluator use for text corpora.

``MnistData(...).split(name)`` returns :class:`ImageTokens` (random batches by seeded generator, ordered
evaluation windows), ``.tokenizer()`` the pixel tokenizer. Batches are drawn like
:meth:`tokendiff.data.text.TokenSplit.batch`: rows at random from a generator the caller seeds by
``(seed, step)``, so a resumed run sees exactly the same batches.

Splits: ``train`` / ``val`` / ``test`` are the static binarized MNIST splits (50k / 10k / 10k,
Larochelle & Murray), the standard for likelihoods in nats. With ``binarization=dynamic`` or
``threshold`` the training images are instead the 60k grayscale MNIST training images binarized once
(dynamic: Bernoulli(intensity / 255) with a fixed seed). With ``observed_fraction < 1`` (the naive and
ambient objectives) every *training* image is seen only through its fixed observation mask; ``val``
and ``test`` stay clean, so that every model is measured against clean data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tokendiff.data.corruption import corrupt_images
from tokendiff.data.mnist import (
    IMAGE_SIDE,
    VOCAB_SIZE,
    binarize_dynamic,
    binarize_threshold,
    load_binarized_mnist,
    load_mnist,
)
from tokendiff.data.tokenizers import BinaryImageTokenizer
from tokendiff.errors import TokenDiffError

__all__ = ["MnistData", "ImageTokens", "IMAGE_DATASETS"]

IMAGE_DATASETS = ("mnist",)
STATIC_SPLITS = {"train": "train", "val": "valid", "test": "test"}


@dataclass
class MnistData:
    binarization: str = "static"
    observed_fraction: float = 1.0  # 1.0: clean training images
    corruption_seed: int = 0
    data_dir: str | None = None
    limit: int | None = None  # only the first `limit` training images
    clean_fraction: float = 0.0  # this share of the corrupted training images kept clean (a control)

    def __post_init__(self):
        self._cache: dict[str, ImageTokens] = {}

    def clean_train_images(self):
        """The clean binary training images (N, 784) uint8, before any corruption."""
        if self.binarization == "static":
            return load_binarized_mnist("train", self.data_dir)
        images, _ = load_mnist("train", self.data_dir)
        flat = images.reshape(len(images), -1)
        if self.binarization == "dynamic":
            return binarize_dynamic(flat, 0)
        return binarize_threshold(flat)

    def split(self, name: str) -> ImageTokens:
        if name not in STATIC_SPLITS:
            raise TokenDiffError(f"split {name!r} does not exist for mnist; use train, val or test")
        if name not in self._cache:
            if name == "train":
                x = self.clean_train_images()[: self.limit]
                if self.observed_fraction < 1.0:
                    clean = x
                    x, _ = corrupt_images(x, self.observed_fraction, self.corruption_seed)
                    if self.clean_fraction > 0:  # a fixed subset (seeded like the masks) stays clean
                        rng = np.random.default_rng([self.corruption_seed, 1])
                        keep = rng.permutation(len(x))[: round(self.clean_fraction * len(x))]
                        x[keep] = clean[keep]
            else:
                x = load_binarized_mnist(STATIC_SPLITS[name], self.data_dir)
            self._cache[name] = ImageTokens(x)
        return self._cache[name]

    def tokenizer(self) -> BinaryImageTokenizer:
        return BinaryImageTokenizer(IMAGE_SIDE, IMAGE_SIDE)


class ImageTokens:
    """Images as token rows (N, D), with random batches and fixed evaluation windows like ``TokenSplit``.

    ``tokens``: integer array (N, D) with values in 0..vocab_size-1, or ``mask_id`` for masked pixels.
    ``len()`` is the number of images; a "sequence" is one whole image, so ``seq_len`` must equal D.
    """

    chars_per_token = None  # pixels are not characters: no bits-per-character conversion

    def __init__(self, tokens: np.ndarray, vocab_size: int = VOCAB_SIZE, mask_id: int | None = None):
        tokens = np.asarray(tokens)
        mask_id = vocab_size if mask_id is None else mask_id
        if tokens.ndim != 2 or tokens.dtype.kind not in "iub" or tokens.shape[0] == 0:
            raise TokenDiffError(
                f"image tokens are {tokens.dtype} {tokens.shape}, expected a non-empty integer array (N, D); "
                "pass the tokens corrupt_images or load_binarized_mnist returns"
            )
        bad = (tokens < 0) | ((tokens >= vocab_size) & (tokens != mask_id))
        if bad.any():
            raise TokenDiffError(
                f"image tokens hold {tokens[bad].flat[0]}, expected values 0..{vocab_size - 1} or the mask id "
                f"{mask_id}; binarize the pixels and mark hidden ones with the mask id"
            )
        small = max(vocab_size, mask_id + 1) <= 256  # uint8 storage: 39 MB for 50k images instead of 314 MB
        self.tokens = np.ascontiguousarray(tokens, dtype=np.uint8 if small else np.int64)  # (N, D)
        self.vocab_size, self.mask_id = vocab_size, mask_id

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def epoch_size(self, seq_len: int) -> int:
        """Sequences in one pass over the split: one per image."""
        return len(self)

    @property
    def seq_len(self) -> int:
        return self.tokens.shape[1]

    def check_length(self, seq_len: int) -> None:
        if seq_len != self.seq_len:
            raise TokenDiffError(
                f"a sequence is one image of {self.seq_len} pixels but seq_len={seq_len}; "
                f"set model.block_size={self.seq_len}"
            )

    def batch_indices(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """``batch_size`` image numbers drawn uniformly with replacement, (B,) int64 on the CPU."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise TokenDiffError(f"batch_size={batch_size!r} must be a positive integer, e.g. 64")
        return torch.randint(0, len(self), (batch_size,), generator=generator, device=generator.device).cpu()

    def batch(self, batch_size: int, seq_len: int, generator: torch.Generator) -> torch.Tensor:
        """A random batch of whole images, (B, D) int64: the rows :meth:`batch_indices` draws."""
        self.check_length(seq_len)
        rows = self.tokens[self.batch_indices(batch_size, generator).numpy()]
        return torch.from_numpy(rows.astype(np.int64))

    def windows(self, seq_len: int, max_windows: int | None = None) -> torch.Tensor:
        """The first ``max_windows`` images (all by default) in order, (N, D) int64: the evaluation set."""
        self.check_length(seq_len)
        n = len(self) if not max_windows else min(len(self), max_windows)
        return torch.from_numpy(self.tokens[:n].astype(np.int64))
