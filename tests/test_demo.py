"""``tokendiff demo``: a local Gradio page that streams the denoising of one sample, and its one-line errors."""

import os
import select
import socket
import subprocess
import sys
import threading
import time

import pytest

from tokendiff.cli.main import main
from tokendiff.viz.text import MASK_GLYPH
from test_training import TINY


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    with pytest.MonkeyPatch.context() as mp:  # the function-scoped cache fixture has not run yet
        mp.setenv("TOKENDIFF_CACHE", str(tmp_path_factory.getbasetemp() / "prepared"))
        assert main(["train", *TINY, "training.max_iters=3", f"output_dir={out}"]) == 0
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(run_dir, tmp_path_factory):
    """``tokendiff demo`` in a subprocess on a free port; yields the URL it printed."""
    pytest.importorskip("gradio")
    port = free_port()
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    argv = [sys.executable, "-m", "tokendiff", "demo", f"checkpoint={run_dir}", "host=127.0.0.1", f"demo.port={port}"]
    log = tmp_path_factory.mktemp("demo") / "stderr.txt"  # a file, not a pipe nobody drains
    with open(log, "w") as stderr:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)
    try:
        deadline, line = time.monotonic() + 90, ""
        while time.monotonic() < deadline and proc.poll() is None:
            if select.select([proc.stdout], [], [], 0.5)[0]:
                line = proc.stdout.readline()
                if line.startswith("tokendiff demo: http"):
                    break
        assert line.startswith(f"tokendiff demo: http://127.0.0.1:{port}/"), (line, proc.poll(), log.read_text())
        yield line.split()[2]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_demo_streams_every_step_and_ends_with_the_sample_tokendiff_sample_prints(server, run_dir, capsys):
    from gradio_client import Client

    client = Client(server, verbose=False)
    job = client.submit("ROMEO:", 8, 1.0, "confidence", 3, api_name="/generate")
    text, status = job.result(timeout=60)
    frames = job.outputs()  # every (text, status) the page was sent, in order
    assert len(frames) == 8 + 1  # one per reverse step, then the finished text
    assert MASK_GLYPH in frames[0][0] and frames[0][1].startswith("step 1/8:")
    masked = [t.count(MASK_GLYPH) for t, _ in frames]
    assert masked == sorted(masked, reverse=True) and masked[-1] == 0  # confidence: reveals are final
    assert all(t.startswith("ROMEO:") for t, _ in frames)
    assert MASK_GLYPH not in text and text.startswith("ROMEO:") and status.startswith("done:")
    # the same sample as the command line's for the same checkpoint, settings and seed
    argv = ["sample", f"checkpoint={run_dir}", "prompt=ROMEO:", "num_samples=1", "seed=3", "sampling.steps=8"]
    assert main([*argv, "sampling.strategy=confidence", "sampling.temperature=1.0"]) == 0
    assert capsys.readouterr().out == f"----- sample 0 -----\n{text}\n\n"


def test_demo_shows_a_bad_prompt_as_a_message_and_keeps_serving(server):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    client = Client(server, verbose=False)
    with pytest.raises(AppError, match="not in this model's vocabulary"):
        client.predict("Zürich", 4, 1.0, "ancestral", 0, api_name="/generate")
    text, status = client.predict("", 4, 0.0, "threshold", 1, api_name="/generate")
    assert len(text) == 32 and MASK_GLYPH not in text and status.startswith("done:")


def test_closing_the_stream_stops_the_sampler(run_dir):
    from tokendiff.checkpoint import load_checkpoint
    from tokendiff.samplers.text import sampling_options
    from tokendiff.viz.demo import stream_denoising

    ckpt = load_checkpoint(run_dir)
    calls, forward = [], ckpt.model.forward
    ckpt.model.forward = lambda *a, **k: calls.append(1) or forward(*a, **k)
    options = sampling_options(ckpt.config.sampling) | {"cache": False}  # one model call per step
    frames = stream_denoising(
        ckpt, options, prompt="", steps=5000, temperature=1.0, strategy="ancestral", seed=0, length=32
    )
    text, status = next(frames)
    assert status.startswith("step 1/5000:") and MASK_GLYPH in text
    frames.close()  # what Gradio does when the page stops listening
    for thread in [t for t in threading.enumerate() if t.name == "tokendiff-demo-sampler"]:
        thread.join(timeout=30)
        assert not thread.is_alive()
    assert len(calls) < 5000


def busy_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


BAD = {
    "missing checkpoint": (lambda r, t, p: [f"checkpoint={t}/nope"], "does not exist"),
    "no checkpoint given": (lambda r, t, p: [], "checkpoint="),
    "port not a number": (lambda r, t, p: [f"checkpoint={r}", "demo.port=http"], "demo.port='http'"),
    "port out of range": (lambda r, t, p: [f"checkpoint={r}", "port=70000"], "[1, 65535]"),
    "port in use": (lambda r, t, p: [f"checkpoint={r}", f"port={p}"], "the port is in use"),
    "unknown host": (lambda r, t, p: [f"checkpoint={r}", "host=nowhere.invalid"], "not a known address"),
    "misspelt key": (lambda r, t, p: [f"checkpoint={r}", "sampling.stpes=4"], "stpes"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_and_exit_2(case, run_dir, tmp_path, capsys):
    make_argv, needle = BAD[case]
    with busy_port() as taken:
        code = main(["demo", *make_argv(run_dir, tmp_path, taken.getsockname()[1])])
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1 and needle in err, err


def test_without_gradio_the_error_names_the_extra(run_dir, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # as if not installed
    assert main(["demo", f"checkpoint={run_dir}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'tokendiff[demo]'" in err, err
