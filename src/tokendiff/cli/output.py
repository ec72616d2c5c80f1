"""What a command prints for programs to read: strict JSON."""

from __future__ import annotations

import json
import math

__all__ = ["strict_json"]


def strict_json(value, **kwargs) -> str:
    """JSON with ``null`` for a NaN or infinite number (which JSON has no literal for)."""

    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(value), allow_nan=False, **kwargs)
