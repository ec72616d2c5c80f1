"""The command line end to end, and every bad input as one line on stderr with exit status 2."""

import json
import shutil

import pytest

from tokendiff.cli.main import main
from test_training import TINY


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main(["train", *TINY, "training.max_iters=3", f"output_dir={out}"]) == 0
    return out


def run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_sample_with_prompt_prints_samples_that_start_with_it(run_dir, capsys):
    code, out, _ = run(
        capsys, "sample", f"checkpoint={run_dir}", "prompt=ROMEO: 'a', b", "num_samples=3", "sampling.steps=8", "seed=1"
    )
    assert code == 0
    samples = [s for s in out.split("----- sample ") if s.strip()]
    assert len(samples) == 3
    # the prompt is kept verbatim, commas and quotes included (prompt= bypasses Hydra's grammar)
    assert all(s.split("-----\n", 1)[1].startswith("ROMEO: 'a', b") for s in samples)


def test_sample_writes_jsonl_with_the_printed_texts_and_their_settings(run_dir, capsys, tmp_path):
    path = tmp_path / "out" / "samples.jsonl"
    args = ["sample", f"checkpoint={run_dir}", "prompt=ROMEO:", "num_samples=3", "sampling.steps=8"]
    code, out, _ = run(capsys, *args, f"sampling.output={path}", "sampling.block_size=16", "seed=4")
    assert code == 0
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    printed = [s.split("-----\n", 1)[1].rstrip("\n") for s in out.split("----- sample ") if s.strip()]
    assert [r["text"] for r in rows] == printed and [r["index"] for r in rows] == [0, 1, 2]
    assert rows[0]["sampling"]["block_size"] == 16 and rows[0]["seed"] == 4 and rows[0]["prompt"] == "ROMEO:"
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # written in place, no leftovers


def test_sample_live_view_redraws_each_step_on_stderr(run_dir, capsys):
    code, out, err = run(
        capsys, "sample", f"checkpoint={run_dir}", "num_samples=1", "sampling.steps=6", "sampling.live=true"
    )
    assert code == 0 and "----- sample 0 -----" in out  # stdout keeps only the samples
    assert "step 6/6, 0 masked" in err  # the last frame: every position revealed


def test_sample_infills_a_template_and_writes_trajectories(run_dir, capsys, tmp_path):
    for suffix in ("txt", "html", "gif"):
        code, out, err = run(
            capsys,
            "sample",
            f"checkpoint={run_dir}",
            "template=To be[MASK:5] not",
            "num_samples=1",
            "sampling.strategy=confidence",
            "sampling.steps=5",
            f"sampling.trajectory={tmp_path}/t.{suffix}",
        )
        assert code == 0, err
        text = out.split("-----\n", 1)[1].rstrip("\n")
        assert text.startswith("To be") and text.endswith(" not") and len(text) == len("To be") + 5 + len(" not")
        assert (tmp_path / f"t.{suffix}").stat().st_size > 0
    lines = (tmp_path / "t.txt").read_text().splitlines()
    assert len(lines) == 5 and "\u2591" in lines[0] and "\u2591" not in lines[-1]


def test_sample_is_seeded(run_dir, capsys):
    outs = [
        run(capsys, "sample", f"checkpoint={run_dir}", "num_samples=2", "sampling.steps=6", f"seed={s}")[1]
        for s in (4, 4, 5)
    ]
    assert outs[0] == outs[1] != outs[2]


def test_eval_prints_json_with_stderr_and_is_deterministic(run_dir, capsys):
    args = ("eval", f"checkpoint={run_dir}", "eval.max_windows=40", "eval.num_draws=3", "seed=2")
    code, out, _ = run(capsys, *args)
    assert code == 0
    result = json.loads(out)
    for key in ("nelbo_nats_per_token", "bits_per_token", "perplexity", "bits_per_char"):
        assert result[key] > 0 and result[f"{key}_stderr"] > 0
    assert result["bits_per_char"] == result["bits_per_token"]  # character tokenizer
    assert json.loads(run(capsys, *args)[1]) == result


def test_prepare_a_folder_with_bpe(tmp_path, capsys):
    (tmp_path / "books").mkdir()
    (tmp_path / "books" / "one.txt").write_text("It was the best of times, it was the worst of times. " * 300)
    code, out, _ = run(
        capsys,
        "prepare",
        f"data.input={tmp_path}/books",
        "data.tokenizer=bpe",
        "data.vocab_size=300",
        "data.dataset=dickens",
    )
    assert code == 0
    meta = json.loads(out)
    assert meta["tokenizer"] == "bpe" and meta["vocab_size"] <= 300 and meta["dtype"] == "uint16"


def corrupt_checkpoint(run_dir, tmp_path):
    bad = tmp_path / "corrupt"
    shutil.copytree(run_dir / "final", bad)
    (bad / "model.safetensors").write_bytes(b"not a safetensors file")
    return bad


def other_tokenizer(run_dir, tmp_path):
    bad = tmp_path / "othertok"
    shutil.copytree(run_dir / "final", bad)
    (bad / "char_tokenizer.json").write_text(json.dumps({"type": "char", "chars": list("abc")}))
    return bad


def empty_corpus(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    return tmp_path / "empty.txt"


BAD = {
    "misspelt key": (lambda r, t: ["train", "model.n_layr=3"], "n_layr"),
    "invalid value": (lambda r, t: ["train", "model.n_layer=abc"], "abc"),
    "unknown preset": (lambda r, t: ["train", "+experiment=huge"], "experiment/huge"),
    "unknown char": (lambda r, t: ["sample", f"checkpoint={r}", "prompt=Zürich"], "'ü'"),
    "prompt too long": (lambda r, t: ["sample", f"checkpoint={r}", "prompt=" + "a" * 40], "prompt is 40 tokens"),
    "zero steps": (lambda r, t: ["sample", f"checkpoint={r}", "sampling.steps=0"], "sampling.steps=0"),
    "negative temperature": (lambda r, t: ["sample", f"checkpoint={r}", "sampling.temperature=-1"], "temperature=-1"),
    "missing checkpoint": (lambda r, t: ["sample", f"checkpoint={t}/nope"], "does not exist"),
    "no checkpoint given": (lambda r, t: ["eval"], "checkpoint="),
    "corrupted checkpoint": (lambda r, t: ["sample", f"checkpoint={corrupt_checkpoint(r, t)}"], "corrupted"),
    "tokenizer mismatch": (lambda r, t: ["eval", f"checkpoint={other_tokenizer(r, t)}"], "tokenizer"),
    "empty corpus": (lambda r, t: ["train", f"data.input={empty_corpus(t)}"], "empty"),
    "fp16 on cpu": (lambda r, t: ["train", *TINY, "system.dtype=float16", f"output_dir={t}/x"], "float16"),
    "unknown command": (lambda r, t: ["fly"], "unknown command"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_and_exit_2(case, run_dir, tmp_path, capsys):
    make_argv, needle = BAD[case]
    before = sorted(p.name for p in (run_dir / "final").iterdir())
    code, _, err = run(capsys, *make_argv(run_dir, tmp_path))
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("train:")]
    assert code == 2
    assert len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err
    assert sorted(p.name for p in (run_dir / "final").iterdir()) == before  # nothing lost or overwritten


def test_python_dash_m_tokendiff_is_the_command():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "tokendiff", "eval", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "usage: tokendiff eval" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "tokendiff", "fly"], capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown command 'fly'" in proc.stderr
