"""``tokendiff demo``: a local Gradio page that streams the denoising of one sample, and its one-line errors.

The page is driven through ``gradio_client`` (no browser here): its status line keeps errors and refusals,
Stop says where the run stopped, Generate is off while it runs, and frames keep their rows.
"""

import os
import re
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

MOST_STEPS = 20000  # the server's sampling.steps: the page takes up to that, and such a run lasts to be stopped


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
    argv.append(f"sampling.steps={MOST_STEPS}")
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
    # a run that quick gets the time a step took and a step count to watch it at
    hint = r"\d ms a step: to watch the denoising, try steps=\d+ \(about \d+ s at this pace\)"
    assert re.search(hint, status), status
    # the same sample as the command line's for the same checkpoint, settings and seed
    argv = ["sample", f"checkpoint={run_dir}", "prompt=ROMEO:", "num_samples=1", "seed=3", "sampling.steps=8"]
    assert main([*argv, "sampling.strategy=confidence", "sampling.temperature=1.0"]) == 0
    assert capsys.readouterr().out == f"----- sample 0 -----\n{text}\n\n"


def test_an_error_stays_on_the_status_line_and_the_server_goes_on(server):
    from gradio_client import Client

    client = Client(server, verbose=False)
    job = client.submit("Zürich", 4, 1.0, "ancestral", 0, api_name="/generate")
    text, status = job.result(timeout=60)  # not an exception (a toast that fades): the page's own status line
    assert len(job.outputs()) == 1 and text == ""
    assert status.startswith("error: characters 'ü'") and "not in this model's vocabulary" in status, status
    text, status = client.predict("", 4, 0.0, "threshold", 1, api_name="/generate")
    assert len(text) == 32 and MASK_GLYPH not in text and status.startswith("done:")


def test_a_prompt_too_long_is_refused_in_words_about_the_prompt(server):
    from gradio_client import Client

    status = Client(server, verbose=False).predict("ROMEO:" * 7, 4, 1.0, "ancestral", 0, api_name="/generate")[1]
    assert status == (
        "error: the prompt is 42 characters, and a sample of this model is 32 characters in all: shorten the "
        "prompt to at most 31 characters, so that the model has room to write"
    )
    assert "sampling." not in status and "block_size" not in status  # keys the page cannot change


REFUSED = [  # steps, temperature, seed -> the start of the status line: nothing clamped or rounded
    (0, 1.0, 0, "error: steps=0 is refused: use a whole number from 1 to 20000"),
    (-5, 1.0, 0, "error: steps=-5 is refused: use a whole number from 1 to 20000"),
    (MOST_STEPS + 1, 1.0, 0, "error: steps=20001 is refused"),
    (2.5, 1.0, 0, "error: steps=2.5 is refused"),
    (None, 1.0, 0, "error: steps=(empty) is refused"),
    (4, -1, 0, "error: temperature=-1 is refused: use 0 (greedy) or a positive number"),
    (4, 1.0, 1.5, "error: seed=1.5 is refused: use a whole number from 0 to 2^63-1"),
    (4, 1.0, -1, "error: seed=-1 is refused"),
    (4, 1.0, 2**63, "error: seed=9223372036854775808 is refused"),
]


def test_values_out_of_range_or_not_whole_are_refused_not_clamped(server):
    from gradio_client import Client

    client = Client(server, verbose=False)
    for steps, temperature, seed, expected in REFUSED:
        job = client.submit("", steps, temperature, "ancestral", seed, api_name="/generate")
        text, status = job.result(timeout=60)
        assert len(job.outputs()) == 1 and status.startswith(expected), (steps, temperature, seed, status)
    # whole numbers sent as floats (JSON has one number type) are the same run as the ints
    floats, ints = (client.predict("", n, 0, "ancestral", s, api_name="/generate") for n, s in [(4.0, 3.0), (4, 3)])
    assert floats[0] == ints[0] and floats[1].startswith("done:") and "(seed 3)" in floats[1]


def test_stop_ends_the_run_at_the_frame_shown_and_says_where(server):
    from gradio_client import Client

    client = Client(server, verbose=False)
    client.predict(api_name="/stop")  # nothing runs: nothing happens, and the next run is not stopped
    assert client.predict("", 4, 1.0, "ancestral", 0, api_name="/generate")[1].startswith("done:")
    job = client.submit("", MOST_STEPS, 1.0, "ancestral", 0, api_name="/generate")
    deadline = time.monotonic() + 60
    while len(job.outputs()) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    client.predict(api_name="/stop")  # the same session as the run: this page's Stop
    text, status = job.result(timeout=60)
    frames = job.outputs()
    match = re.fullmatch(rf"stopped at step (\d+)/{MOST_STEPS} \((\d+) of 32 tokens still masked\)", status)
    assert match and int(match[1]) < MOST_STEPS, status
    assert frames[-2] == (text, f"step {match[1]}/{MOST_STEPS}: {match[2]} of 32 tokens masked")
    assert text.count(MASK_GLYPH) == int(match[2])
    # another page's Stop does not stop this page's run
    job = client.submit("", 1000, 1.0, "ancestral", 0, api_name="/generate")
    while len(job.outputs()) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    Client(server, verbose=False).predict(api_name="/stop")
    assert job.result(timeout=60)[1].startswith("done:")


def test_generate_is_off_from_the_click_until_the_run_ends_however_it_ends(server, run_dir):
    from gradio_client import Client

    from tokendiff.checkpoint import load_checkpoint
    from tokendiff.viz.demo import build_app

    deps = {d["api_name"]: d for d in Client(server, verbose=False).config["dependencies"]}
    begin, generate, end = deps["begin"], deps["generate"], deps["end"]
    assert generate["trigger_after"] == begin["id"] and end["trigger_after"] == generate["id"]
    assert not end["trigger_only_on_success"]  # after an error or a Stop too (errors are status lines anyway)
    ckpt = load_checkpoint(run_dir)
    c = ckpt.config
    app = build_app(ckpt, c.sampling, length=c.model.block_size, prompt=c.prompt, seed=c.seed)
    blocks = {fn.api_name: fn for fn in app.fns.values()}
    assert [blocks[name].concurrency_limit for name in ("begin", "end", "stop")] == [None] * 3  # never queued behind
    fns = {name: block.fn for name, block in blocks.items()}
    page, other = (type("Request", (), {"session_hash": name})() for name in ("page", "other"))
    generate_off, stop_on, status = fns["begin"](page)
    assert generate_off["interactive"] is False and stop_on["interactive"] is True
    assert status == {"__type__": "update"}  # the status line as it was: the run starts at once
    generate_on, stop_off = fns["end"]()
    assert generate_on["interactive"] is True and stop_off["interactive"] is False
    # while another page's run holds the model, a click says that it waits; that page's Stop ends its run only
    frames = fns["generate"]("", 1000, 1.0, "ancestral", 0, other)
    next(frames)
    assert fns["begin"](page)[2].startswith("waiting: another page's sample holds the model")
    fns["stop"](page)  # Stop while this page's click waits
    second, status = next(frames)
    assert status.startswith("step 2/1000:")
    fns["stop"](other)
    text, status = list(frames)[-1]
    assert text == second and re.fullmatch(r"stopped at step 2/1000 \(\d+ of 32 tokens still masked\)", status)
    assert list(fns["generate"]("", 1000, 1.0, "ancestral", 0, page)) == [("", "stopped before step 1/1000")]


def test_frames_keep_their_rows_whichever_masks_are_newlines():
    from tokendiff.data.tokenizers import CharTokenizer
    from tokendiff.viz.demo_stream import layout_frame, row_width
    from tokendiff.viz.text import render_frame

    tok = CharTokenizer(list("\nab"))
    mask = tok.vocab_size
    final = tok.encode(("ab\n" * 30)[:70])  # 70 positions: two rows of 64 and 6, newlines among them
    steps = [[mask] * 70, [i if j % 3 else mask for j, i in enumerate(final)], final]  # masked, half, revealed
    frames = [layout_frame(render_frame(ids, tok, mask), row_width(tok)) for ids in steps]
    assert row_width(tok) == 64
    for frame in frames:  # the same rows in every frame: a revealed newline does not break its row
        assert [len(row) for row in frame.split("\n")] == [64, 6]
    assert frames[0] == MASK_GLYPH * 64 + "\n" + MASK_GLYPH * 6
    assert frames[2].startswith("ab\u21b5ab\u21b5") and "\u21b5" in frames[1] and MASK_GLYPH in frames[1]
    assert layout_frame(["a", "\t", "b"], 16) == "a\u21e5b"  # a tab is one cell too, not a tab stop


def test_newlines_show_as_a_glyph_while_denoising_and_as_line_breaks_when_done(server):
    from gradio_client import Client

    job = Client(server, verbose=False).submit("A\nB", 4, 1.0, "confidence", 0, api_name="/generate")
    text, status = job.result(timeout=60)
    assert all(frame.startswith("A\u21b5B") and "\n" not in frame for frame, _ in job.outputs()[:-1])
    assert text.startswith("A\nB") and status.startswith("done:")


def test_closing_the_stream_stops_the_sampler(run_dir):
    from tokendiff.checkpoint import load_checkpoint
    from tokendiff.samplers.text import sampling_options
    from tokendiff.viz.demo_stream import stream_denoising

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
