"""The demo's streaming generation: one sample drawn in a worker thread, shown after every reverse step.

The frames keep their layout. A newline that is still masked cannot be drawn as a line break, so if
revealed newlines were drawn as breaks, every reveal of one would push the later text down and re-wrap
it. A frame is therefore drawn as rows of a fixed number of positions (64 with a character tokenizer, 16
subword tokens otherwise), a mask as ``░`` and a revealed newline as ``↵``, in a box that wraps at any
character: with a character tokenizer every position keeps its place from the first frame to the last
(a subword token is wider than its mask and widens its row, but no row moves). The finished text is
shown with its line breaks: the same text ``tokendiff sample num_samples=1`` prints for the same
checkpoint, settings and seed.

``generate`` runs in a worker thread; its step callback puts each frame in a queue that
:func:`stream_denoising` yields from. A stop flag ends the run with ``stopped at step k/N (m of L tokens
still masked)`` for the last frame it showed, and the worker stops at its next step; closing the generator
(a page that stops listening) stops the worker too.

A step count to watch at: after a run that was too quick to watch, the status line gives the time a step
took and a step count that lasts about 10 s at that pace (or how long the most steps the page takes last).
"""

from __future__ import annotations

import queue
import threading
import time

from tokendiff.viz.text import MASK_GLYPH, render_frame

__all__ = ["row_width", "layout_frame", "watch_hint", "stream_denoising"]

# drawn in a frame's cell instead of characters that would move the others (a line break, a tab stop)
CELL_GLYPHS = str.maketrans({"\n": "\u21b5", "\r": "\u240d", "\t": "\u21e5"})
ROW_CHARACTERS, ROW_TOKENS = 64, 16  # positions per row of a frame: characters, or subword tokens
WATCH_SECONDS = 10.0  # a run too quick to watch gets a step count that lasts about this long


def row_width(tokenizer) -> int:
    """Positions per row of a frame: 64 characters, or 16 subword tokens (about as wide)."""
    return ROW_CHARACTERS if getattr(tokenizer, "kind", None) == "char" else ROW_TOKENS


def layout_frame(pieces: list[str], width: int) -> str:
    """One frame (``render_frame``'s token strings) as rows of ``width`` positions, a newline drawn as ``↵``:
    every frame of a run has the same rows, whichever masks turn out to be newlines."""
    cells = [p.translate(CELL_GLYPHS) for p in pieces]
    return "\n".join("".join(cells[i : i + width]) for i in range(0, len(cells), width))


def watch_hint(seconds: float, steps: int, max_steps: int | None = None) -> str:
    """For a run too quick to watch: the time a step took, and a step count that lasts about ``WATCH_SECONDS``
    at that pace, or the most steps the page takes and how long they last ("" for a run slow enough, or one
    that had the most steps already). Steps that reveal nothing reuse the last model call, so a run of more
    steps goes at least as fast per step: the estimate errs on the long side."""
    per_step = seconds / max(steps, 1)
    if seconds >= WATCH_SECONDS / 2 or per_step <= 0:
        return ""
    suggested = round(WATCH_SECONDS / per_step)
    most = max_steps is not None and suggested >= max_steps
    suggested = min(suggested, max_steps) if most else suggested
    if suggested <= steps:
        return ""
    lasts = f"about {suggested * per_step:.0f} s at this pace"
    if most:
        return f" {per_step * 1000:.1f} ms a step: steps={suggested}, the most this page takes, lasts {lasts}"
    return f" {per_step * 1000:.1f} ms a step: to watch the denoising, try steps={suggested} ({lasts})"


class _Stopped(Exception):
    """Raised in the worker's step callback when the page no longer wants its frames."""


def stream_denoising(
    ckpt, options: dict, *, prompt, steps, temperature, strategy, seed, length, device="cpu", stop=None,
    max_steps=None,
):  # fmt: skip
    """Yield ``(text, status)`` after each reverse step of one sample (rows of positions, masks as ``░``,
    newlines as ``↵``), then the finished text (cut at an end-of-text token, as ``tokendiff sample`` prints it).
    ``ckpt``: a loaded checkpoint (its model, kernel and tokenizer). ``options``: ``generate``'s keywords from
    the sampling section (``sampling_options``); the arguments given here replace theirs. ``stop``: a
    ``threading.Event`` that ends the run after the frame shown, with a last status that says where it
    stopped."""
    from tokendiff.samplers.text import generate

    frames: queue.Queue = queue.Queue()
    stop = threading.Event() if stop is None else stop
    mask_id, width = ckpt.kernel.mask_token_id, row_width(ckpt.tokenizer)

    def callback(step, x):  # x: (B, L) after reverse step `step`; sample 0 is the one shown
        if stop.is_set():
            raise _Stopped
        frames.put(("frame", step, x[0].tolist()))

    def work():
        try:
            kwargs = dict(options, steps=steps, temperature=temperature, strategy=strategy, batch_size=1)
            texts, stats = generate(
                ckpt.model, ckpt.kernel, ckpt.tokenizer, **kwargs, num_samples=1, length=length,
                prompt=prompt or None, seed=seed, device=device, callback=callback, progress=False,
            )  # fmt: skip
            frames.put(("done", texts[0], stats))
        except _Stopped:
            frames.put(("stopped",))
        except BaseException as exc:  # handed to the page: a TokenDiffError becomes its message
            frames.put(("error", exc))

    start = time.perf_counter()
    text, shown = "", None  # the last frame yielded, and its (step, masked, positions)
    worker = threading.Thread(target=work, name="tokendiff-demo-sampler", daemon=True)
    worker.start()
    try:
        while True:
            kind, *rest = frames.get()
            if kind == "frame" and not stop.is_set():
                step, ids = rest
                pieces = render_frame(ids, ckpt.tokenizer, mask_id)
                text, shown = layout_frame(pieces, width), (step + 1, sum(p == MASK_GLYPH for p in pieces), len(ids))
                yield text, f"step {step + 1}/{steps}: {shown[1]} of {shown[2]} tokens masked"
            elif kind == "done":
                final, stats = rest
                seconds = time.perf_counter() - start
                hint = watch_hint(seconds, shown[0] if shown else steps, max_steps)
                yield final, f"done: {stats['model_calls']} model calls in {seconds:.1f} s (seed {seed}).{hint}"
                return
            elif kind in ("frame", "stopped"):  # Stop: the run ends at the frame the page shows
                if shown is None:
                    yield text, f"stopped before step 1/{steps}"
                else:
                    yield text, f"stopped at step {shown[0]}/{steps} ({shown[1]} of {shown[2]} tokens still masked)"
                return
            else:
                raise rest[0]
    finally:  # the page left (or the run ended): let the worker stop at its next step
        stop.set()
