"""``tokendiff demo checkpoint=<run or checkpoint>``: a local browser page that streams the denoising.

A Gradio page with a prompt, the number of reverse steps, the temperature, the strategy (ancestral /
confidence / threshold) and a seed. *Generate* draws one sample and shows it after every reverse step,
then the finished text: the same text ``tokendiff sample num_samples=1`` prints for the same checkpoint,
settings and seed. This module lays out the page and serves it; the frames and the worker that draws them
are :mod:`tokendiff.viz.demo_stream`, the checks of what the page is sent :mod:`tokendiff.viz.demo_checks`.

*Generate* first disables itself and enables *Stop*, at once (so a second click cannot be lost, even while
another page's run holds the model and this one waits), then runs, then enables itself again after a finished,
failed or stopped run alike. *Stop* (also ``/stop`` for API clients) sets the stop flag of that page's run (one
per Gradio session): the run ends at the last frame it showed.

A step count to watch at: the page says that at ``L`` steps (the sample length) about one position is
revealed per step.

The server listens on ``demo.host`` (127.0.0.1) and ``demo.port`` (7860); ``host=`` and ``port=`` are
short for them. Gradio comes with ``pip install 'tokendiff[demo]'``.
"""

from __future__ import annotations

import os
import threading
import time
import traceback

from tokendiff.errors import TokenDiffError
from tokendiff.samplers.rules import fitting_strategies
from tokendiff.viz.demo_checks import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    check_address,
    check_controls,
    check_prompt,
    page_message,
    token_unit,
)
from tokendiff.viz.demo_stream import stream_denoising
from tokendiff.viz.text import MASK_GLYPH

__all__ = ["build_app", "serve"]

# the sample box: a monospace grid that wraps at any character, spaces included, so that no cell moves
CSS = (
    "#sample textarea {font-family: ui-monospace, 'DejaVu Sans Mono', monospace; white-space: break-spaces; "
    "word-break: break-all}"
)
MIN_MAX_STEPS = 1024  # the steps control takes 1 to this (or to sampling.steps, if larger)


class _Runs:
    """The stop flag of each page's run (one per Gradio session), which *Stop* sets, and the session whose run
    holds the model now (one at a time: the model is shared)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.flags: dict[str | None, threading.Event] = {}
        self.drawing: str | None = None

    def begin(self, session) -> bool:
        """A fresh flag for the session's next run; True when another session's run holds the model."""
        with self.lock:
            self.flags[session] = threading.Event()
            return self.drawing is not None and self.drawing != session

    def start(self, session) -> threading.Event:
        """The flag of the run starting now: ``begin``'s (set already if Stop came while it waited) or a new
        one (an API call, which has no ``begin``)."""
        with self.lock:
            self.drawing = session
            return self.flags.setdefault(session, threading.Event())

    def finish(self, session, flag) -> None:
        with self.lock:
            if self.flags.get(session) is flag:
                del self.flags[session]
            if self.drawing == session:
                self.drawing = None

    def stop(self, session) -> None:
        with self.lock:
            flag = self.flags.get(session)
        if flag is not None:
            flag.set()


def _css_in_launch(gr) -> bool:
    """Gradio 6 takes the page's CSS in ``launch()``, Gradio 5 in ``Blocks()``."""
    import inspect

    return "css" in inspect.signature(gr.Blocks.launch).parameters


def _undocumented(gr) -> dict:
    """Keywords that keep a page-only step out of the API docs (Gradio 6: still callable, so tests can)."""
    return {"api_visibility": "undocumented"} if _css_in_launch(gr) else {"show_api": False}


def _session(request) -> str | None:
    return getattr(request, "session_hash", None)


def build_app(ckpt, sampling, *, length: int, prompt: str | None = None, seed: int = 0, device="cpu"):
    """The Gradio page for a loaded diffusion checkpoint (its model, kernel and tokenizer). ``sampling``: the
    sampling section (``SamplingConfig``), which gives the controls' defaults and the settings the page has no
    control for; ``length``: tokens per sample; ``prompt`` and ``seed``: the prompt and seed controls'
    defaults."""
    import gradio as gr

    from tokendiff.samplers.text import sampling_options

    s = sampling
    options = sampling_options(s)
    max_steps = max(MIN_MAX_STEPS, s.steps)
    strategies = fitting_strategies(ckpt.kernel)
    runs = _Runs()

    def begin(request: gr.Request):
        """The click's first step, never waiting for a running sample: Generate off, Stop on, a fresh stop flag."""
        waiting = runs.begin(_session(request))
        note = "waiting: another page's sample holds the model; this one starts after it" if waiting else gr.update()
        return gr.update(interactive=False), gr.update(interactive=True), note

    def run(prompt, steps, temperature, strategy, seed, request: gr.Request):
        session = _session(request)
        flag, frame = runs.start(session), ""  # frame: the text shown last (none yet: the box is cleared)
        try:
            steps, temperature, seed = check_controls(steps, temperature, seed, max_steps)
            check_prompt(ckpt.tokenizer, prompt, length)
            for frame, line in stream_denoising(
                ckpt, options, prompt=prompt, steps=steps, temperature=temperature, strategy=strategy, seed=seed,
                length=length, device=device, stop=flag, max_steps=max_steps,
            ):  # fmt: skip
                yield frame, line
        except TokenDiffError as exc:  # a bad prompt or setting: a status line that stays, the server goes on
            yield frame, page_message(exc)
        except Exception as exc:  # not the page's fault: still a line on the page, the traceback in the log
            traceback.print_exc()
            yield frame, f"error: {type(exc).__name__}: {exc} (unexpected; the server's log has the traceback)"
        finally:
            runs.finish(session, flag)

    def end():
        """The click's last step, after a finished, failed or stopped run: Generate on, Stop off."""
        return gr.update(interactive=True), gr.update(interactive=False)

    def stop_run(request: gr.Request):
        """Stop this page's run after the frame it shows (its status line then says where)."""
        runs.stop(_session(request))

    # Gradio passes the request to a parameter annotated gr.Request; postponed annotations are strings that it
    # cannot resolve here (gr is not a module global), so the annotation is set to the class itself
    for fn in (begin, run, stop_run):
        fn.__annotations__["request"] = gr.Request

    shown = os.path.relpath(ckpt.path) if ckpt.path.is_relative_to(os.getcwd()) else ckpt.path
    unit = token_unit(ckpt.tokenizer)
    about = (
        f"`{shown}` (step {ckpt.step}): {ckpt.kernel.name} diffusion, {length} {unit} per sample, masks shown as "
        f"{MASK_GLYPH} and newlines as {chr(0x21B5)} until the text is finished. To watch the denoising, use "
        f"{length} steps or more: at {length} steps about one of the {length} {unit} is revealed per step. Other "
        "sampling settings come from the checkpoint and the command line."
    )
    css = {} if _css_in_launch(gr) else {"css": CSS}
    with gr.Blocks(title="tokendiff demo", analytics_enabled=False, **css) as app:
        gr.Markdown(f"## tokendiff demo\n{about}")
        with gr.Row():
            with gr.Column(scale=1):
                prompt_box = gr.Textbox(
                    label="prompt",
                    value=prompt or "",
                    lines=2,
                    placeholder="text the sample starts with (optional)",
                )
                # numbers, not sliders: a slider clamps what is typed into it without a word
                steps = gr.Number(
                    value=s.steps, step=1, label="steps (reverse steps)",
                    info=f"a whole number from 1 to {max_steps}; {length} reveals about one {unit[:-1]} per step",
                )  # fmt: skip
                temperature = gr.Number(
                    value=s.temperature, step=0.05, label="temperature", info="0 (greedy) or more; 1 samples the model"
                )
                strategy = gr.Radio(
                    strategies, value=s.strategy if s.strategy in strategies else "ancestral", label="strategy"
                )
                seed_box = gr.Number(value=seed, step=1, label="seed", info="a whole number from 0 to 2^63-1")
                with gr.Row():
                    button = gr.Button("Generate", variant="primary", min_width=80)
                    stop = gr.Button("Stop", min_width=80, interactive=False)
            with gr.Column(scale=2):
                text = gr.Textbox(label="sample", lines=16, max_lines=40, interactive=False, elem_id="sample")
                status = gr.Markdown(label="status")
        page_only = dict(concurrency_limit=None, **_undocumented(gr))  # never waits for the running sample
        started = button.click(begin, None, [button, stop, status], api_name="begin", **page_only)
        controls = [prompt_box, steps, temperature, strategy, seed_box]
        event = started.then(run, controls, [text, status], api_name="generate")
        event.then(end, None, [button, stop], api_name="end", **page_only)
        stop.click(stop_run, None, None, api_name="stop", concurrency_limit=None)
    return app


def serve(
    ckpt, sampling, *, length: int, prompt: str | None = None, seed: int = 0, host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT, device="cpu", block: bool = True,
):  # fmt: skip
    """Start the page (:func:`build_app`, which takes ``sampling``, ``length``, ``prompt`` and ``seed``) on
    ``host:port`` and print its URL; with ``block``, serve until Ctrl+C. Returns the app."""
    check_address(host, port)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a local demo
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    import gradio as gr

    app = build_app(ckpt, sampling, length=length, prompt=prompt, seed=seed, device=device)
    css = {"css": CSS} if _css_in_launch(gr) else {}
    app.queue(default_concurrency_limit=1)  # one sample at a time: the model is shared
    try:
        app.launch(
            server_name=host, server_port=port, prevent_thread_lock=True, quiet=True, show_error=True, ssr_mode=False,
            **css,
        )  # fmt: skip
    except OSError as exc:
        first = (str(exc).strip().splitlines() or [""])[0]  # e.g. a port taken since check_address
        raise TokenDiffError(f"cannot serve on {host}:{port}: {first}") from None
    url = app.local_url or f"http://{host}:{port}/"
    print(f"tokendiff demo: {url}  (checkpoint {ckpt.path}, step {ckpt.step}; Ctrl+C to stop)", flush=True)
    if not block:
        return app
    try:
        while True:
            time.sleep(0.5)
    finally:
        app.close()
