"""Watch the denoising of one text sample live in the terminal (``tokendiff sample sampling.live=true``).

A ``rich`` live panel redraws sample 0 after every reverse step: masks as ``░``, tokens revealed in the
last step highlighted, the step count in the title. It writes to stderr, so stdout keeps only the samples.
"""

from __future__ import annotations

from tokendiff.viz.text import MASK_GLYPH, render_frame

__all__ = ["LiveView"]


class LiveView:
    """A context manager whose ``update(step, x)`` is a sampler callback (``x``: the (B, L) batch)."""

    def __init__(self, tokenizer, mask_id: int, steps: int, refresh_per_second: float = 15.0):
        from rich.console import Console
        from rich.live import Live

        self.tokenizer, self.mask_id, self.steps = tokenizer, mask_id, steps
        self.previous: list[str] | None = None
        self.frames = 0
        self.live = Live(console=Console(stderr=True), refresh_per_second=refresh_per_second, transient=False)

    def __enter__(self) -> "LiveView":
        self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.live.__exit__(*exc)

    def render(self, pieces: list[str], step: int):
        from rich.panel import Panel
        from rich.text import Text

        text = Text()
        for j, piece in enumerate(pieces):
            new = self.previous is not None and self.previous[j] == MASK_GLYPH and piece != MASK_GLYPH
            text.append(piece, style="bold black on yellow" if new else ("dim" if piece == MASK_GLYPH else ""))
        masked = sum(p == MASK_GLYPH for p in pieces)
        return Panel(text, title=f"step {step + 1}/{self.steps}, {masked} masked", title_align="left")

    def update(self, step: int, x) -> None:
        pieces = render_frame(x[0].tolist(), self.tokenizer, self.mask_id)
        self.live.update(self.render(pieces, step))
        self.previous = pieces
        self.frames += 1
