"""Forward kernels and their losses and reverse steps (no weights, no loops)."""

from tokendiff.processes.absorbing import AbsorbingProcess
from tokendiff.processes.autoregressive import AutoregressiveProcess

__all__ = ["AbsorbingProcess", "AutoregressiveProcess"]
