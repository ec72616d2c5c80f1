"""Where data lives, and downloads that check what they fetched.

- Raw data directory: ``data.data_dir`` if set, else ``$TOKENDIFF_DATA``, else the user cache dir
  (``~/.cache/tokendiff/data`` on Linux). Files already there are never downloaded again.
- Prepared data (token files, tokenizers): ``$TOKENDIFF_CACHE`` or the user cache dir
  (``~/.cache/tokendiff/prepared``), kept apart because the raw directory may be read-only.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from tokendiff.atomic import staged_file
from tokendiff.errors import TokenDiffError

__all__ = ["data_dir", "prepared_dir", "RemoteFile", "fetch", "sha256_of", "KNOWN_FILES"]


def data_dir(configured: str | None = None) -> Path:
    """The raw data directory (see module docstring)."""
    if configured:
        return Path(configured).expanduser()
    if os.environ.get("TOKENDIFF_DATA"):
        return Path(os.environ["TOKENDIFF_DATA"]).expanduser()
    return Path(platformdirs.user_cache_dir("tokendiff")) / "data"


def prepared_dir() -> Path:
    """Where prepared token files and trained tokenizers are cached."""
    if os.environ.get("TOKENDIFF_CACHE"):
        return Path(os.environ["TOKENDIFF_CACHE"]).expanduser()
    return Path(platformdirs.user_cache_dir("tokendiff")) / "prepared"


@dataclass(frozen=True)
class RemoteFile:
    """A file of a public data set: where it lives under the data dir, where to fetch it, its sha256."""

    relpath: str
    url: str
    sha256: str


KNOWN_FILES = {
    "tinyshakespeare": RemoteFile(
        "tinyshakespeare/input.txt",
        "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
    ),
    # OpenAI's GPT-2 byte-level BPE (data.tokenizer=hf data.tokenizer_name=gpt2 works offline with these)
    "gpt2_encoder": RemoteFile(
        "gpt2_bpe/encoder.json",
        "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
        "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    ),
    "gpt2_merges": RemoteFile(
        "gpt2_bpe/vocab.bpe",
        "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
        "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    ),
    # The original LeCun IDX files (byte-identical to yann.lecun.com's), from the mirror torchvision uses.
    "mnist_train_images": RemoteFile(
        "mnist/train-images-idx3-ubyte.gz",
        "https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz",
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    ),
    "mnist_train_labels": RemoteFile(
        "mnist/train-labels-idx1-ubyte.gz",
        "https://ossci-datasets.s3.amazonaws.com/mnist/train-labels-idx1-ubyte.gz",
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    ),
    "mnist_t10k_images": RemoteFile(
        "mnist/t10k-images-idx3-ubyte.gz",
        "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-images-idx3-ubyte.gz",
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    ),
    "mnist_t10k_labels": RemoteFile(
        "mnist/t10k-labels-idx1-ubyte.gz",
        "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-labels-idx1-ubyte.gz",
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    ),
}


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(remote: RemoteFile, root: Path) -> Path:
    """Return ``root / remote.relpath``, downloading it first if it is missing.

    A download is written to a temporary file, its sha256 checked, then moved into place, so a
    failed or corrupted download never leaves a file that looks valid.
    """
    target = root / remote.relpath
    if target.exists():
        return target
    try:
        with staged_file(target) as tmp:  # renamed into place only once its checksum is right
            with open(tmp, "wb") as out, urllib.request.urlopen(remote.url, timeout=60) as response:
                shutil.copyfileobj(response, out)
            digest = sha256_of(tmp)
            if digest != remote.sha256:
                raise TokenDiffError(
                    f"download of {remote.url} has sha256 {digest}, expected {remote.sha256}; try again later"
                )
    except OSError as exc:
        raise TokenDiffError(
            f"{target} is missing and downloading {remote.url} failed ({exc}); put the file there "
            "by hand or point TOKENDIFF_DATA (or data.data_dir) at a directory that has it"
        ) from None
    return target
