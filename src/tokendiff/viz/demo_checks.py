"""The demo's value checks: the server address before Gradio loads, and each control's value before a run.

Nothing the page is sent is clamped or rounded. Steps outside ``1..max``, a negative temperature, a seed
that is not a whole number in ``[0, 2^63)`` are refused on the status line, which names the control and
what it takes. Errors stay on that line too (``error: ...``, not a toast that fades), in words about what
the page can change (a prompt too long for the model's samples: shorten the prompt); the server goes on.

The server listens on ``demo.host`` (127.0.0.1) and ``demo.port`` (7860); ``host=`` and ``port=`` are
short for them.
"""

from __future__ import annotations

import importlib.util
import math
import re

from tokendiff.errors import TokenDiffError

__all__ = [
    "split_server_args", "check_gradio", "check_address", "check_controls", "check_prompt", "page_message",
    "token_unit",
]  # fmt: skip

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 7860
SERVER_KEYS = {"demo.host": "host", "host": "host", "demo.port": "port", "port": "port"}
MAX_SEED = 2**63  # as the config's seed
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


def token_unit(tokenizer) -> str:
    """What one position of a sample is, in words: ``characters`` with a character tokenizer, else ``tokens``."""
    return "characters" if getattr(tokenizer, "kind", None) == "char" else "tokens"


def check_prompt(tokenizer, prompt: str, length: int) -> None:
    """A prompt that leaves the model no room is refused in words about the prompt: the sample length is set
    when the demo is started, and the page cannot change it. (Characters the tokenizer does not know: its own
    message, which says what to remove.)"""
    from tokendiff.samplers.text import unescape

    n = len(tokenizer.encode(unescape(prompt))) if prompt else 0  # as generate() encodes it
    if n >= length:
        unit = token_unit(tokenizer)
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
