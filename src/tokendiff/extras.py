"""Optional integrations: import them on first use, or say which extra installs them.

The base install stays light (torch, accelerate, tokenizers); Hugging Face ``transformers`` and
``datasets`` come with ``pip install 'tokendiff[hf]'``, peft (LoRA adapters) with ``'tokendiff[lora]'``.
"""

from __future__ import annotations

import importlib

from tokendiff.errors import TokenDiffError

__all__ = ["require"]

EXTRA_OF = {"transformers": "hf", "datasets": "hf", "wandb": "wandb", "lm_eval": "eval", "peft": "lora"}


def require(module: str, why: str):
    """``import module``, or a one-line error naming the extra to install for ``why``."""
    try:
        return importlib.import_module(module)
    except ImportError:
        extra = EXTRA_OF.get(module.split(".")[0], module)
        message = f"{why} needs {module}, which is not installed; pip install 'tokendiff[{extra}]'"
        raise TokenDiffError(message) from None
