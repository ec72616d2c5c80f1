"""The denoising process of one text sample, as a learner would want to watch it.

``.txt``: one line per step, masks shown as ``░``. ``.html``: every step, newly revealed tokens
highlighted. ``.gif``: an animation rendered with Pillow, one frame per step.
"""

from __future__ import annotations

import html
from pathlib import Path

from tokendiff.viz.files import HTML_MARK, check_output_file, mark_options

__all__ = ["check_trajectory_path", "write_trajectory", "render_frame"]

SUFFIXES = (".txt", ".html", ".gif")
MASK_GLYPH = "\u2591"


def check_trajectory_path(path: str, replace: bool = False) -> None:
    check_output_file(path, "sampling.trajectory", SUFFIXES, replace)


def render_frame(ids, tokenizer, mask_id: int) -> list[str]:
    """Token strings of one step, masks as a shaded block."""
    return [MASK_GLYPH if int(i) == mask_id else tokenizer.decode([int(i)]) for i in ids]


def write_trajectory(path: str, frames: list, tokenizer, mask_id: int) -> Path:
    """Write ``frames`` (each an (L,) tensor of ids after one step) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pieces = [render_frame(f, tokenizer, mask_id) for f in frames]
    suffix = path.suffix.lower()
    if suffix == ".txt":
        lines = [f"{i:4d} | " + "".join(p).replace("\n", "\u21b5") for i, p in enumerate(pieces)]
        path.write_text("\n".join(lines) + "\n")
    elif suffix == ".html":
        rows, previous = [], None
        for i, p in enumerate(pieces):
            cells = []
            for j, tok in enumerate(p):
                new = previous is not None and (j >= len(previous) or previous[j] == MASK_GLYPH) and tok != MASK_GLYPH
                text = html.escape(tok).replace("\n", "\u21b5")
                cells.append(f'<span class="new">{text}</span>' if new else text)
            rows.append(f"<div><b>{i:4d}</b> {''.join(cells)}</div>")
            previous = p
        style = "body{font-family:monospace;white-space:pre} .new{background:#ffd54f}"
        head = f"{HTML_MARK}<style>{style}</style>"
        path.write_text(f"<html><head>{head}</head><body>{''.join(rows)}</body></html>")
    else:
        _write_gif(path, pieces)
    return path


def _write_gif(path: Path, pieces: list[list[str]], width: int = 64) -> None:
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    images = []
    for step, p in enumerate(pieces):
        text = "".join(p).replace("\n", " ").replace(MASK_GLYPH, "_")  # the default font is latin-1
        lines = [text[i : i + width] for i in range(0, len(text), width)] or [""]
        img = Image.new("RGB", (8 * width + 16, 14 * (len(lines) + 2)), "white")
        draw = ImageDraw.Draw(img)
        draw.text((8, 4), f"step {step + 1}/{len(pieces)}", fill="gray", font=font)
        for row, line in enumerate(lines):
            draw.text((8, 18 + 14 * row), line.encode("latin-1", "replace").decode("latin-1"), fill="black", font=font)
        images.append(img)
    images[0].save(path, save_all=True, append_images=images[1:], duration=80, loop=0, **mark_options(".gif"))
