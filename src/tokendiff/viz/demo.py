"""``tokendiff demo checkpoint=<run or checkpoint>``: a local browser page that streams the denoising.

A Gradio page with a prompt, the number of reverse steps, the temperature, the strategy (ancestral /
confidence / threshold) and a seed. *Generate* draws one sample and shows it after every reverse step,
then the finished text: the same text ``tokendiff sample num_samples=1`` prints for the same checkpoint,
settings and seed.

The frames keep their layout. A newline that is still masked cannot be drawn as a line break, so if
revealed newlines were drawn as breaks, every reveal of one would push the later text down and re-wrap
it. A frame is therefore drawn as rows of a fixed number of positions (64 with a character tokenizer, 16
subword tokens otherwise), a mask as ``░`` and a revealed newline as ``↵``, in a box that wraps at any
character: with a character tokenizer every position keeps its place from the first frame to the last
(a subword token is wider than its mask and widens its row, but no row moves). The finished text is
shown with its line breaks.

Nothing the page is sent is clamped or rounded. Steps outside ``1..max``, a negative temperature, a seed
that is not a whole number in ``[0, 2^63)`` are refused on the status line, which names the control and
what it takes. Errors stay on that line too (``error: ...``, not a toast that fades), in words about what
the page can change (a prompt too long for the model's samples: shorten the prompt); the server goes on.

*Generate* first disables itself and enables *Stop*, at once (so a second click cannot be lost, even while
another page's run holds the model and this one waits), then runs, then enables itself again after a finished,
failed or stopped run alike. ``generate`` runs in a worker thread; its step callback puts each frame in a
queue that the page's generator function yields from. *Stop* (also ``/stop`` for API clients) sets the
stop flag of that page's run (one per Gradio session): the run ends with ``stopped at step k/N (m of L
tokens still masked)`` for the last frame it showed, and the worker stops at its next step. A page that
stops listening closes the generator, which stops the worker too.

A step count to watch at: the page says that at ``L`` steps (the sample length) about one position is
revealed per step, and after a run that was too quick to watch, the status line gives the time a step took
and a step count that lasts about 10 s at that pace (or how long the most steps the page takes last).

The server listens on ``demo.host`` (127.0.0.1) and ``demo.port`` (7860); ``host=`` and ``port=`` are
short for them. Gradio comes with ``pip install 'tokendiff[demo]'``.
"""

from __future__ import annotations

import importlib.util
import math
import os
import queue
import re
import threading
import time
import traceback

from tokendiff.errors import TokenDiffError
from tokendiff.samplers.settings import STRATEGIES
from tokendiff.viz.text import MASK_GLYPH, render_frame

__all__ = [
    "split_server_args", "check_gradio", "check_address", "check_controls", "check_prompt", "layout_frame",
    "stream_denoising", "build_app", "serve",
]  # fmt: skip

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 7860
# the sample box: a monospace grid that wraps at any character, spaces included, so that no cell moves
CSS = (
    "#sample textarea {font-family: ui-monospace, 'DejaVu Sans Mono', monospace; white-space: break-spaces; "
    "word-break: break-all}"
)
SERVER_KEYS = {"demo.host": "host", "host": "host", "demo.port": "port", "port": "port"}
# drawn in a frame's cell instead of characters that would move the others (a line break, a tab stop)
CELL_GLYPHS = str.maketrans({"\n": "\u21b5", "\r": "\u240d", "\t": "\u21e5"})
ROW_CHARACTERS, ROW_TOKENS = 64, 16  # positions per row of a frame: characters, or subword tokens
MIN_MAX_STEPS = 1024  # the steps control takes 1 to this (or to sampling.steps, if larger)
MAX_SEED = 2**63  # as the config's seed
WATCH_SECONDS = 10.0  # a run too quick to watch gets a step count that lasts about this long
# config keys in a message: settings the page has no control for (they came from the command line)
CONFIG_KEY = re.compile(r"\b(?:sampling|model|diffusion|data|system)\.[a-z_]+")


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


def _shown(value) -> str:
    """A control's value as the page shows it: 5000 for 5000.0 (JSON has one number type), 1.5 as is."""
    if value is None or value == "":
        return "(empty)"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _whole(value) -> int | None:
    """``value`` as an int when it is a whole number (5 or 5.0), else None (1.5, nan, inf, "5", True, None)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not value.is_integer():
        return None
    return int(value)


def check_controls(steps, temperature, seed, max_steps: int) -> tuple[int, float, int]:
    """The steps, temperature and seed a run uses, exactly as sent; a value out of range or not a whole number
    is a TokenDiffError naming the control and what it takes. Nothing is clamped or rounded, so the value the
    page shows is the value used."""
    n = _whole(steps)
    if n is None or not 1 <= n <= max_steps:
        raise TokenDiffError(f"steps={_shown(steps)} is refused: use a whole number from 1 to {max_steps}")
    numeric = isinstance(temperature, (int, float)) and not isinstance(temperature, bool)
    if not numeric or not math.isfinite(temperature) or temperature < 0:
        raise TokenDiffError(
            f"temperature={_shown(temperature)} is refused: use 0 (greedy) or a positive number such as 0.8"
        )
    s = _whole(seed)
    if s is None or not 0 <= s < MAX_SEED:
        raise TokenDiffError(f"seed={_shown(seed)} is refused: use a whole number from 0 to 2^63-1, e.g. 1")
    return n, float(temperature), s


def _unit(tokenizer) -> str:
    return "characters" if getattr(tokenizer, "kind", None) == "char" else "tokens"


def check_prompt(tokenizer, prompt: str, length: int) -> None:
    """A prompt that leaves the model no room is refused in words about the prompt: the sample length is set
    when the demo is started, and the page cannot change it. (Characters the tokenizer does not know: its own
    message, which says what to remove.)"""
    from tokendiff.samplers.text import unescape

    n = len(tokenizer.encode(unescape(prompt))) if prompt else 0  # as generate() encodes it
    if n >= length:
        unit = _unit(tokenizer)
        raise TokenDiffError(
            f"the prompt is {n} {unit}, and a sample of this model is {length} {unit} in all: shorten the "
            f"prompt to at most {length - 1} {unit}, so that the model has room to write"
        )


def page_message(exc: Exception) -> str:
    """The status line of a refused run. A setting named by its config key has no control on the page: it came
    from the command line that started it, which the message then says."""
    message = str(exc)
    if CONFIG_KEY.search(message):
        message += " (a setting of the command line that started this page: restart tokendiff demo to change it)"
    return f"error: {message}"


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
    ``options``: ``generate``'s keywords from the config's sampling section; the arguments given here replace
    theirs. ``stop``: a ``threading.Event`` that ends the run after the frame shown, with a last status that
    says where it stopped."""
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


def _undocumented(gr) -> dict:
    """Keywords that keep a page-only step out of the API docs (Gradio 6: still callable, so tests can)."""
    return {"api_visibility": "undocumented"} if _css_in_launch(gr) else {"show_api": False}


def _session(request) -> str | None:
    return getattr(request, "session_hash", None)


def build_app(ckpt, cfg, device="cpu"):
    """The Gradio page for a loaded diffusion checkpoint; ``cfg``'s sampling section gives the defaults."""
    import gradio as gr

    from tokendiff.samplers.text import sampling_options

    s = cfg.sampling
    options = sampling_options(s)
    length = s.length or ckpt.config.model.block_size
    max_steps = max(MIN_MAX_STEPS, s.steps)
    strategies = list(STRATEGIES) if ckpt.kernel.reveals_are_final else ["ancestral"]
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
    unit = _unit(ckpt.tokenizer)
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
                prompt = gr.Textbox(
                    label="prompt",
                    value=cfg.prompt or "",
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
                seed = gr.Number(value=cfg.seed, step=1, label="seed", info="a whole number from 0 to 2^63-1")
                with gr.Row():
                    button = gr.Button("Generate", variant="primary", min_width=80)
                    stop = gr.Button("Stop", min_width=80, interactive=False)
            with gr.Column(scale=2):
                text = gr.Textbox(label="sample", lines=16, max_lines=40, interactive=False, elem_id="sample")
                status = gr.Markdown(label="status")
        page_only = dict(concurrency_limit=None, **_undocumented(gr))  # never waits for the running sample
        started = button.click(begin, None, [button, stop, status], api_name="begin", **page_only)
        event = started.then(run, [prompt, steps, temperature, strategy, seed], [text, status], api_name="generate")
        event.then(end, None, [button, stop], api_name="end", **page_only)
        stop.click(stop_run, None, None, api_name="stop", concurrency_limit=None)
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
