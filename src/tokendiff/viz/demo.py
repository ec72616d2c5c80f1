"""``tokendiff demo checkpoint=<run or checkpoint>``: a local browser page that streams the denoising.

A Gradio page with a prompt, the number of reverse steps, the temperature, the strategy (ancestral /
confidence / threshold) and a seed. *Generate* draws one sample and shows it after every reverse step,
masks as ``░``, then the finished text: the same text ``tokendiff sample num_samples=1`` prints for the
same checkpoint, settings and seed.

``generate`` runs in a worker thread; its step callback puts each frame in a queue that the page's
generator function yields from. *Stop* (or a page that stops listening) closes that generator, and the
worker stops at its next step.
The server listens on ``demo.host`` (127.0.0.1) and ``demo.port`` (7860); ``host=`` and ``port=`` are
short for them. Gradio comes with ``pip install 'tokendiff[demo]'``.
"""

from __future__ import annotations

import importlib.util
import os
import queue
import threading
import time

from tokendiff.errors import TokenDiffError
from tokendiff.viz.text import MASK_GLYPH, render_frame

__all__ = ["split_server_args", "check_gradio", "check_address", "stream_denoising", "build_app", "serve"]

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 7860
STRATEGIES = ("ancestral", "confidence", "threshold")
CSS = "#sample textarea {font-family: ui-monospace, 'DejaVu Sans Mono', monospace}"  # tokens keep their place
SERVER_KEYS = {"demo.host": "host", "host": "host", "demo.port": "port", "port": "port"}


def split_server_args(args: list[str]) -> tuple[str, int, list[str]]:
    """``(host, port, rest)``: ``demo.host=`` / ``demo.port=`` (or ``host=`` / ``port=``) taken out of the
    arguments; the rest are the usual config overrides."""
    server, rest = {"host": DEFAULT_HOST, "port": str(DEFAULT_PORT)}, []
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and key in SERVER_KEYS:
            server[SERVER_KEYS[key]] = value
        else:
            rest.append(arg)
    host, port = server["host"].strip(), server["port"].strip()
    if not host:
        raise TokenDiffError("demo.host is empty; use demo.host=127.0.0.1 (this machine) or demo.host=0.0.0.0 (all)")
    if not (port.isdigit() and 1 <= int(port) <= 65535):
        raise TokenDiffError(f"demo.port={port!r} is not a port number in [1, 65535]; e.g. demo.port=7860")
    return host, int(port), rest


def check_gradio() -> None:
    """A one-line error naming the extra to install when Gradio is missing (checked without importing it)."""
    try:
        found = importlib.util.find_spec("gradio") is not None
    except ValueError:  # a module object without a spec (set in sys.modules): treat as missing
        found = False
    if not found:
        raise TokenDiffError("tokendiff demo needs gradio, which is not installed; pip install 'tokendiff[demo]'")


class _Stopped(Exception):
    """Raised in the worker's step callback when the page no longer wants its frames."""


def stream_denoising(ckpt, options: dict, *, prompt, steps, temperature, strategy, seed, length, device="cpu"):
    """Yield ``(text, status)`` after each reverse step of one sample (masks as ``░``), then the finished
    text (cut at an end-of-text token, as ``tokendiff sample`` prints it). ``options``: ``generate``'s
    keywords from the config's sampling section; the arguments given here replace theirs."""
    from tokendiff.samplers.text import generate

    frames: queue.Queue = queue.Queue()
    stop = threading.Event()
    mask_id = ckpt.kernel.mask_token_id

    def callback(step, x):  # x: (B, L) after reverse step `step`; sample 0 is the one shown
        if stop.is_set():
            raise _Stopped
        frames.put(("frame", step, x[0].tolist()))

    def work():
        try:
            kwargs = dict(options, steps=steps, temperature=temperature, strategy=strategy, batch_size=1)
            texts, stats = generate(
                ckpt.model, ckpt.kernel, ckpt.tokenizer, **kwargs, num_samples=1, length=length,
                prompt=prompt or None, seed=seed, device=device, callback=callback,
            )  # fmt: skip
            frames.put(("done", texts[0], stats))
        except BaseException as exc:  # handed to the page: a TokenDiffError becomes its message
            frames.put(("error", exc))

    start = time.perf_counter()
    worker = threading.Thread(target=work, name="tokendiff-demo-sampler", daemon=True)
    worker.start()
    try:
        while True:
            kind, *rest = frames.get()
            if kind == "frame":
                step, ids = rest
                pieces = render_frame(ids, ckpt.tokenizer, mask_id)
                masked = sum(p == MASK_GLYPH for p in pieces)
                yield "".join(pieces), f"step {step + 1}/{steps}: {masked} of {len(pieces)} tokens masked"
            elif kind == "done":
                text, stats = rest
                seconds = time.perf_counter() - start
                yield text, f"done: {stats['model_calls']} model calls in {seconds:.1f} s (seed {seed})"
                return
            else:
                raise rest[0]
    finally:  # the page left (or the run ended): let the worker stop at its next step
        stop.set()


def check_address(host: str, port: int) -> None:
    """A one-line error, before Gradio is loaded, when ``host:port`` cannot be listened on (a port in use,
    a host that is not this machine's)."""
    import errno
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise TokenDiffError(
            f"demo.host={host!r} is not a known address ({exc.strerror}); use 127.0.0.1 or 0.0.0.0"
        ) from None
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                hint = f"the port is in use; pass another one, e.g. demo.port={port % 65535 + 1}"
            else:
                hint = f"{exc.strerror}; use demo.host=127.0.0.1 (this machine) or demo.host=0.0.0.0 (every interface)"
            raise TokenDiffError(f"cannot serve on {host}:{port}: {hint}") from None


def _css_in_launch(gr) -> bool:
    """Gradio 6 takes the page's CSS in ``launch()``, Gradio 5 in ``Blocks()``."""
    import inspect

    return "css" in inspect.signature(gr.Blocks.launch).parameters


def _page_error(gr, message: str):
    """A ``gr.Error`` the page shows, without a traceback in the server's log where Gradio allows it."""
    try:
        return gr.Error(message, print_exception=False)
    except TypeError:  # older Gradio 5
        return gr.Error(message)


def build_app(ckpt, cfg, device="cpu"):
    """The Gradio page for a loaded diffusion checkpoint; ``cfg``'s sampling section gives the defaults."""
    import gradio as gr

    from tokendiff.samplers.text import sampling_options

    s = cfg.sampling
    options = sampling_options(s)
    length = s.length or ckpt.config.model.block_size
    strategies = list(STRATEGIES) if ckpt.kernel.reveals_are_final else ["ancestral"]

    def run(prompt, steps, temperature, strategy, seed):
        try:
            yield from stream_denoising(
                ckpt, options, prompt=prompt, steps=int(steps), temperature=float(temperature), strategy=strategy,
                seed=int(seed or 0), length=length, device=device,
            )  # fmt: skip
        except TokenDiffError as exc:  # a bad prompt or setting: the message on the page, the server goes on
            raise _page_error(gr, str(exc)) from None

    shown = os.path.relpath(ckpt.path) if ckpt.path.is_relative_to(os.getcwd()) else ckpt.path
    about = (
        f"`{shown}` (step {ckpt.step}): {ckpt.kernel.name} diffusion, {length} tokens per sample, "
        f"masks shown as {MASK_GLYPH}. Other sampling settings come from the checkpoint and the command line."
    )
    css = {} if _css_in_launch(gr) else {"css": CSS}
    with gr.Blocks(title="tokendiff demo", analytics_enabled=False, **css) as app:
        gr.Markdown(f"## tokendiff demo\n{about}")
        with gr.Row():
            with gr.Column(scale=1):
                prompt = gr.Textbox(
                    label="prompt",
                    value=cfg.prompt or "",
                    lines=2,
                    placeholder="text the sample starts with (optional)",
                )
                steps = gr.Slider(1, max(1024, s.steps), value=s.steps, step=1, label="steps (reverse steps)")
                temperature = gr.Slider(
                    0.0, max(2.0, s.temperature), value=s.temperature, step=0.05, label="temperature (0 = greedy)"
                )
                strategy = gr.Radio(
                    strategies, value=s.strategy if s.strategy in strategies else "ancestral", label="strategy"
                )
                seed = gr.Number(value=cfg.seed, precision=0, label="seed")
                with gr.Row():
                    button = gr.Button("Generate", variant="primary", min_width=80)
                    stop = gr.Button("Stop", min_width=80)
            with gr.Column(scale=2):
                text = gr.Textbox(label="sample", lines=16, max_lines=40, interactive=False, elem_id="sample")
                status = gr.Markdown()
        event = button.click(run, [prompt, steps, temperature, strategy, seed], [text, status], api_name="generate")
        stop.click(None, None, None, cancels=[event])
    return app


def serve(ckpt, cfg, host: str, port: int, device="cpu", block: bool = True):
    """Start the page on ``host:port`` and print its URL; with ``block``, serve until Ctrl+C. Returns the app."""
    check_address(host, port)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a local demo
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    import gradio as gr

    app = build_app(ckpt, cfg, device)
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
