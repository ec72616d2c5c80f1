"""MNIST files as pixel tokens: the IDX files, static binarized MNIST and binarization.

The fixed corruption masks of the ambient setting are in :mod:`tokendiff.data.corruption`, the
token rows the trainer batches from in :mod:`tokendiff.data.images`.

Token convention for images: an image is a row of D = 784 pixels in row-major 28x28 order, each a
token in {0, 1} (``VOCAB_SIZE = 2``); the mask token is ``MASK_ID = 2`` (= vocab_size, as for text).

Data files (see ``SOURCES.md`` in the shared data directory):

- ``<data_dir>/mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``: the original IDX files,
  fetched (sha256-checked) from the torchvision mirror when missing (``paths.KNOWN_FILES``).
- ``<data_dir>/binarized_mnist/binarized_mnist.npz``: static binarized MNIST (Larochelle & Murray
  2011), arrays ``train``/``valid``/``test`` of packed bits, (N, 98) uint8. When missing it is built
  from the authors' ``.amat`` text files; either way each split is checked against the sha256 of its
  unpacked (N, 784) uint8 bytes, once per process.

"""

from __future__ import annotations

import gzip
import hashlib
import math
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from tokendiff.atomic import staged_file
from tokendiff.data.paths import KNOWN_FILES, data_dir, fetch
from tokendiff.errors import TokenDiffError

__all__ = [
    "IMAGE_SIDE",
    "N_PIXELS",
    "VOCAB_SIZE",
    "MASK_ID",
    "MNIST_SIZES",
    "BINARIZED_SPLITS",
    "read_idx",
    "load_mnist",
    "load_binarized_mnist",
    "download_binarized_mnist",
    "parse_amat",
    "binarize_dynamic",
    "binarize_threshold",
]

IMAGE_SIDE = 28
N_PIXELS = IMAGE_SIDE * IMAGE_SIDE  # D = 784
VOCAB_SIZE = 2  # pixel values 0 and 1
MASK_ID = 2  # = VOCAB_SIZE, the absorbing state

# split -> (file prefix, number of images)
MNIST_SIZES = {"train": ("train", 60_000), "test": ("t10k", 10_000)}

# split -> (number of images, sha256 of the unpacked (N, 784) uint8 {0,1} bytes), from SOURCES.md
BINARIZED_SPLITS = {
    "train": (50_000, "43490d4d6ac9002727af4426d8748609fdb7e4094fa65ad8d681ea60082a7a5a"),
    "valid": (10_000, "069b4f0beb389b776478c3e872b4df71c95ac4be64d7cbe6d32e24ebac8e6d5e"),
    "test": (10_000, "ca0294c3b8d984c7a1dc891015a8eea6f37bae59a34e35ea0fc8c47110a8dd86"),
}
BINARIZED_RELPATH = "binarized_mnist/binarized_mnist.npz"
BINARIZED_URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/binarized_mnist_{split}.amat"

_IDX_UINT8 = 0x08  # IDX type code of unsigned bytes, the only type MNIST uses
_VERIFIED: set[tuple] = set()  # (path, size, mtime_ns, split) of binarized splits already checked


# ----------------------------------------------------------------------------------------- IDX files


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file of unsigned bytes, gzipped or raw: images (N, 28, 28) or labels (N,), uint8.

    Header: two zero bytes, the type code 0x08, the number of dims k, then k big-endian uint32 sizes;
    the body must hold exactly prod(sizes) bytes. Anything else is a TokenDiffError naming the file.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            gzipped = f.read(2) == b"\x1f\x8b"
        opener = gzip.open if gzipped else open
        with opener(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise TokenDiffError(f"IDX file {path} does not exist; check the path or the data directory") from None
    except (OSError, EOFError, zlib.error) as exc:  # truncated or corrupt gzip
        raise TokenDiffError(
            f"{path} is not a readable (gzipped) IDX file ({exc}); delete it and fetch it again"
        ) from None
    return _parse_idx(data, path)


def _parse_idx(data: bytes, path: Path) -> np.ndarray:
    """The array an IDX byte string holds (see :func:`read_idx`)."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != _IDX_UINT8 or not 1 <= data[3] <= 4:
        raise TokenDiffError(
            f"{path} has IDX magic {data[:4].hex() or 'none'}, expected 000008 then 1-4 dims (unsigned bytes); "
            "it is not an MNIST IDX file, delete it and fetch it again"
        )
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise TokenDiffError(f"{path} ends inside its IDX header ({len(data)} bytes); delete it and fetch it again")
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = header + math.prod(shape)
    if len(data) != expected:
        raise TokenDiffError(
            f"{path} has {len(data)} bytes but its IDX header {shape} needs {expected}; "
            "the file is truncated or corrupt, delete it and fetch it again"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape).copy()


def _check_split(split: str, allowed) -> None:
    if split not in allowed:
        raise TokenDiffError(f"split={split!r} is unknown; use one of {', '.join(map(repr, allowed))}")


def load_mnist(split: str, root: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Grayscale MNIST: images uint8 (N, 28, 28) in 0..255 and labels uint8 (N,) in 0..9.

    ``split``: 'train' (N = 60,000) or 'test' (N = 10,000). ``root``: the raw data directory
    (default :func:`~tokendiff.data.paths.data_dir`); missing files are downloaded there first.
    """
    _check_split(split, MNIST_SIZES)
    prefix, n = MNIST_SIZES[split]
    root = data_dir(str(root) if root is not None else None)
    images_path = fetch(KNOWN_FILES[f"mnist_{prefix}_images"], root)
    labels_path = fetch(KNOWN_FILES[f"mnist_{prefix}_labels"], root)
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.shape != (n, IMAGE_SIDE, IMAGE_SIDE):
        raise TokenDiffError(
            f"{images_path} holds {images.shape}, expected ({n}, 28, 28); replace it with the original file"
        )
    if labels.shape != (n,) or labels.max() > 9:
        raise TokenDiffError(
            f"{labels_path} holds {labels.shape} labels up to {labels.max()}, expected ({n},) digits; "
            "replace it with the original file"
        )
    return images, labels


# ----------------------------------------------------------------------------- static binarized MNIST


def load_binarized_mnist(split: str, root: str | Path | None = None, verify: bool = True) -> np.ndarray:
    """Static binarized MNIST, uint8 {0, 1} of shape (N, 784) (row-major 28x28, no labels).

    ``split``: 'train' (50,000), 'valid' (10,000) or 'test' (10,000). The file is
    ``<root>/binarized_mnist/binarized_mnist.npz`` (built by :func:`download_binarized_mnist` when
    missing). With ``verify`` the unpacked split's sha256 is checked against ``BINARIZED_SPLITS``, once
    per process and file version (about 0.05 s for the train split).
    """
    _check_split(split, BINARIZED_SPLITS)
    root = data_dir(str(root) if root is not None else None)
    path = root / BINARIZED_RELPATH
    if not path.exists():
        download_binarized_mnist(root)
    try:
        with np.load(path, allow_pickle=False) as archive:
            packed = archive[split]
    except KeyError:
        raise TokenDiffError(f"{path} has no array {split!r}; delete it so that it is built again") from None
    except (OSError, ValueError, zlib.error) as exc:
        raise TokenDiffError(f"{path} is not a readable .npz ({exc}); delete it so that it is built again") from None
    if packed.dtype != np.uint8 or packed.ndim != 2 or packed.shape[1] * 8 != N_PIXELS:
        raise TokenDiffError(
            f"{path}[{split!r}] is {packed.dtype} {packed.shape}, expected packed bits (N, 98) uint8; "
            "delete it so that it is built again"
        )
    x = np.unpackbits(packed, axis=1)  # (N, 784) uint8 {0,1}
    if verify:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, split)
        if key not in _VERIFIED:
            _check_binarized(x, split, str(path))
            _VERIFIED.add(key)
    return x


def _check_binarized(x: np.ndarray, split: str, source: str, expected: dict | None = None) -> None:
    """Raise unless ``x`` (N, 784) uint8 is the split whose size and unpacked sha256 ``expected`` lists."""
    n, digest = (expected or BINARIZED_SPLITS)[split]
    actual = hashlib.sha256(np.ascontiguousarray(x, dtype=np.uint8).tobytes()).hexdigest()
    if x.shape != (n, N_PIXELS) or actual != digest:
        raise TokenDiffError(
            f"binarized MNIST split {split!r} from {source} is {x.shape} with sha256 {actual}, expected "
            f"({n}, {N_PIXELS}) with {digest}; delete the file so that it is downloaded again"
        )


def parse_amat(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse a Larochelle & Murray ``.amat`` file (one image per line, 784 values 0/1) into uint8 (N, 784)."""
    raw = np.frombuffer(data, dtype=np.uint8)
    is_digit = (raw == ord("0")) | (raw == ord("1"))
    is_space = (raw == ord(" ")) | (raw == ord("\t")) | (raw == ord("\r")) | (raw == ord("\n"))
    if not np.all(is_digit | is_space) or np.any(is_digit[1:] & is_digit[:-1]):
        # Not plain "0 1 0 ..." (e.g. "0.0"): fall back to a general parser, then insist on {0, 1}.
        try:
            values = np.loadtxt(data.decode("ascii").splitlines(), dtype=np.float64, ndmin=2)
        except (UnicodeDecodeError, ValueError) as exc:
            raise TokenDiffError(f"{source} is not an .amat table of 0/1 values ({exc}); download it again") from None
        if values.shape[1] != N_PIXELS or not np.isin(values, (0.0, 1.0)).all():
            raise TokenDiffError(
                f"{source} holds {values.shape} values not all 0/1, expected rows of 784 bits; download it again"
            )
        return values.astype(np.uint8)
    line = np.cumsum(raw == ord("\n"))[is_digit]  # the line number of each value
    per_line = np.bincount(line)
    per_line = per_line[per_line > 0]
    if per_line.size == 0 or np.any(per_line != N_PIXELS):
        bad = per_line[per_line != N_PIXELS][:1].tolist() or [0]
        raise TokenDiffError(f"{source} has a line of {bad[0]} values, expected {N_PIXELS}; download it again")
    return (raw[is_digit] - ord("0")).reshape(-1, N_PIXELS)


def _download_bytes(url: str, target: Path) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.read()
    except OSError as exc:
        raise TokenDiffError(
            f"{target} is missing and downloading {url} failed ({exc}); put the file there by hand "
            "or point TOKENDIFF_DATA (or data.data_dir) at a directory that has it"
        ) from None


def download_binarized_mnist(root: str | Path | None = None, expected: dict | None = None) -> Path:
    """Build ``<root>/binarized_mnist/binarized_mnist.npz`` from the authors' three ``.amat`` files.

    Each split is parsed, checked against ``expected`` (default ``BINARIZED_SPLITS``: split -> (N,
    sha256 of the unpacked bytes)), packed with ``np.packbits(axis=1)`` and written to a temporary
    file that is then renamed into place, so a failure never leaves a file that looks valid.
    """
    root = data_dir(str(root) if root is not None else None)
    target = root / BINARIZED_RELPATH
    expected = expected or BINARIZED_SPLITS
    packed = {}
    for split in expected:
        url = BINARIZED_URL.format(split=split)
        x = parse_amat(_download_bytes(url, target), url)
        _check_binarized(x, split, url, expected)
        packed[split] = np.packbits(x, axis=1)  # (N, 98) uint8
    try:
        staged = staged_file(target)
    except OSError as exc:
        raise TokenDiffError(
            f"cannot write {target} ({exc}); point TOKENDIFF_DATA (or data.data_dir) at a writable directory"
        ) from None
    with staged as tmp, open(tmp, "wb") as out:  # a file object: given a path, numpy would append ".npz"
        np.savez_compressed(out, **packed)
    return target


# ------------------------------------------------------------------------------------- binarization


def _as_generator(generator: np.random.Generator | int) -> np.random.Generator:
    if isinstance(generator, np.random.Generator):
        return generator
    if isinstance(generator, (int, np.integer)) and not isinstance(generator, bool) and generator >= 0:
        return np.random.default_rng(int(generator))
    raise TokenDiffError(f"generator={generator!r} must be a numpy Generator or a seed >= 0, e.g. 0")


def _check_uint8_images(images: np.ndarray, name: str = "images") -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise TokenDiffError(
            f"{name} have dtype {images.dtype}, expected uint8 intensities 0..255; pass the arrays load_mnist returns"
        )
    return images


def binarize_dynamic(images: np.ndarray, generator: np.random.Generator | int) -> np.ndarray:
    """Bernoulli binarization, uint8 {0, 1} of the same shape: pixel = 1 with probability intensity/255.

    ``generator``: a numpy Generator or a seed; one float64 uniform u per pixel, pixel = (u < p).
    """
    images = _check_uint8_images(images)
    u = _as_generator(generator).random(images.shape)  # float64 in [0, 1)
    return (u < images / 255.0).astype(np.uint8)


def binarize_threshold(images: np.ndarray, threshold: int = 128) -> np.ndarray:
    """Deterministic binarization, uint8 {0, 1} of the same shape: pixel = 1 iff intensity >= threshold."""
    images = _check_uint8_images(images)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, np.integer)) or not 1 <= threshold <= 255:
        raise TokenDiffError(f"threshold={threshold!r} must be an integer in 1..255, e.g. 128")
    return (images >= threshold).astype(np.uint8)
