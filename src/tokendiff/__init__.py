"""tokendiff: train, sample and evaluate discrete diffusion models over tokens.

>>> import tokendiff
>>> ckpt = tokendiff.load_checkpoint("out/shakespeare_char")          # doctest: +SKIP
>>> texts, _ = tokendiff.generate(ckpt.model, ckpt.kernel, ckpt.tokenizer,
...                               num_samples=2, length=128)          # doctest: +SKIP
"""

from tokendiff._version import __version__ as __version__
from tokendiff.errors import TokenDiffError  # noqa: E402
from tokendiff.schedules import make_schedule  # noqa: E402
from tokendiff.processes import AbsorbingKernel, Kernel  # noqa: E402
from tokendiff.objectives import AutoregressiveObjective, CleanObjective, Objective  # noqa: E402
from tokendiff.models import Transformer  # noqa: E402
from tokendiff.samplers import DiffusionSampler, row_generators  # noqa: E402
from tokendiff.samplers.text import generate  # noqa: E402
from tokendiff.checkpoint import load_checkpoint  # noqa: E402

__all__ = [
    "TokenDiffError",
    "make_schedule",
    "Kernel",
    "AbsorbingKernel",
    "Objective",
    "CleanObjective",
    "AutoregressiveObjective",
    "Transformer",
    "DiffusionSampler",
    "row_generators",
    "generate",
    "load_checkpoint",
]
