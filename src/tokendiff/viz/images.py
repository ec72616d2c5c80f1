"""PNG grids and GIF animations of binary images (Pillow)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

from tokendiff.viz.files import mark_options

__all__ = ["image_grid", "save_grid", "save_trajectory"]

# pixel value -> grey level; the mask (2) is drawn mid-grey so that unknown pixels are visible
PALETTE = np.array([0, 255, 128], dtype=np.uint8)


def image_grid(x, side: int = 28, nrow: int | None = None, scale: int = 3, pad: int = 2) -> Image.Image:
    """``x``: (N, side*side) ids in {0, 1, 2} -> one grey image, ``nrow`` images per row."""
    x = np.asarray(x).reshape(-1, side, side)
    n = len(x)
    nrow = nrow or math.ceil(math.sqrt(n))
    ncol = math.ceil(n / nrow)
    canvas = np.full((ncol * (side + pad) + pad, nrow * (side + pad) + pad), 64, dtype=np.uint8)
    for k, img in enumerate(x):
        r, c = divmod(k, nrow)
        top, left = pad + r * (side + pad), pad + c * (side + pad)
        canvas[top : top + side, left : left + side] = PALETTE[img.clip(0, 2)]
    return Image.fromarray(canvas, mode="L").resize((canvas.shape[1] * scale, canvas.shape[0] * scale), Image.NEAREST)


def save_grid(x, path, **kwargs) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image_grid(x, **kwargs).save(path, **mark_options(path.suffix))
    return path


def save_trajectory(frames: list, path, max_frames: int = 12, **kwargs) -> Path:
    """The grid at each reverse step: a ``.gif`` animation, or a ``.png`` strip of ``max_frames`` steps."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grids = [image_grid(f, **kwargs) for f in frames]
    if path.suffix.lower() == ".gif":
        grids[0].save(
            path,
            save_all=True,
            append_images=grids[1:] + [grids[-1]] * 10,
            duration=100,
            loop=0,
            **mark_options(".gif"),
        )
        return path
    picks = np.unique(np.linspace(0, len(grids) - 1, min(max_frames, len(grids))).round().astype(int))
    w, h = grids[0].size
    strip = Image.new("L", (w * len(picks), h), 64)
    for k, i in enumerate(picks):
        strip.paste(grids[i], (k * w, 0))
    strip.save(path, **mark_options(path.suffix))
    return path
