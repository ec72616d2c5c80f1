"""Binary-image data sets with the interface the trainer and evaluator use for text corpora.

``MnistData(...).split(name)`` returns :class:`~tokendiff.data.mnist.ImageTokens` (random batches by
seeded generator, ordered evaluation windows), ``.tokenizer()`` the pixel tokenizer.

Splits: ``train`` / ``val`` / ``test`` are the static binarized MNIST splits (50k / 10k / 10k,
Larochelle & Murray), the standard for likelihoods in nats. With ``binarization=dynamic`` or
``threshold`` the training images are instead the 60k grayscale MNIST training images binarized once
(dynamic: Bernoulli(intensity / 255) with a fixed seed). With ``observed_fraction < 1`` (the naive and
ambient objectives) every *training* image is seen only through its fixed observation mask; ``val``
and ``test`` stay clean, so that every model is measured against clean data.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokendiff.data.mnist import (
    IMAGE_SIDE,
    ImageTokens,
    binarize_dynamic,
    binarize_threshold,
    corrupt_images,
    load_binarized_mnist,
    load_mnist,
)
from tokendiff.data.tokenizers import BinaryImageTokenizer
from tokendiff.errors import TokenDiffError

__all__ = ["MnistData", "IMAGE_DATASETS"]

IMAGE_DATASETS = ("mnist",)
STATIC_SPLITS = {"train": "train", "val": "valid", "test": "test"}


@dataclass
class MnistData:
    binarization: str = "static"
    observed_fraction: float = 1.0  # 1.0: clean training images
    corruption_seed: int = 0
    data_dir: str | None = None
    limit: int | None = None  # only the first `limit` training images

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
                    x, _ = corrupt_images(x, self.observed_fraction, self.corruption_seed)
            else:
                x = load_binarized_mnist(STATIC_SPLITS[name], self.data_dir)
            self._cache[name] = ImageTokens(x)
        return self._cache[name]

    def tokenizer(self) -> BinaryImageTokenizer:
        return BinaryImageTokenizer(IMAGE_SIDE, IMAGE_SIDE)
