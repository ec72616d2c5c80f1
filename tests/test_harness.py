"""lm-evaluation-harness (the installed one, not a mock) scores tokendiff checkpoints through the ``tokendiff``
backend: local tasks of each request type on tiny models trained here."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lm_eval.api.instance import Instance  # the eval extra (scripts/test.sh installs every extra)
from test_images import TINY_MNIST

from tokendiff.cli.main import main
from tokendiff.evaluation.conditional import score_continuation
from tokendiff.harness.backend import TokendiffLM
from tokendiff.harness.tasks import write_play_tasks

TEXT = Path(os.environ["TOKENDIFF_DATA"]) / "tinyshakespeare" / "input.txt"
COMMON = [
    "model.n_layer=2", "model.n_head=4", "model.n_embd=64", "model.block_size=32", "training.batch_size=32",
    "training.eval_iters=1", "training.warmup_iters=20", "training.eval_interval=0", "training.sample_interval=0",
    "training.log_interval=50", "training.learning_rate=5e-3", "system.device=cpu", "system.compile=false",
]  # fmt: skip
N_CHOICE = 40


def write_tasks(folder: Path) -> None:
    """The play's three local tasks (tokendiff.harness.tasks)."""
    write_play_tasks(folder, TEXT.read_text(), choices=N_CHOICE)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A masked model (400 steps) and an autoregressive one (200 steps), and the task folder."""
    root = tmp_path_factory.mktemp("harness")
    (root / "tasks").mkdir()
    write_tasks(root / "tasks")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TOKENDIFF_CACHE", str(tmp_path_factory.getbasetemp() / "prepared"))
        mp.setenv("HF_HOME", str(root / "hf"))  # lm-eval's datasets cache
        masked = ["diffusion.estimator=count", "training.max_iters=400"]
        assert main(["train", *COMMON, *masked, f"output_dir={root / 'masked'}"]) == 0
        assert main(["train", *COMMON, "model.causal=true", "training.max_iters=200", f"output_dir={root / 'ar'}"]) == 0
        yield root


def lm_eval_results(setup, run: str, tasks: str, out: str, *extra) -> dict:
    args = [f"checkpoint={setup / run}", f"tasks=[{tasks}]", f"include_path={setup / 'tasks'}"]
    assert main(["lm-eval", *args, f"output_path={setup / out}", *extra]) == 0
    (result,) = (setup / out).glob("*/results_*.json")
    return json.loads(result.read_text())


@pytest.mark.parametrize("run", ["masked", "ar"])
def test_a_trained_model_tells_a_line_of_the_play_from_its_shuffle(setup, run, monkeypatch):
    # Chance is 0.5 exactly for any model blind to the order of characters: a shuffle keeps the characters,
    # so such a model gives both choices one likelihood, lm-eval's argmax takes the first, and the real line
    # is first in half of the 40 documents. A coin flip reaches 0.75 with probability P(Bin(40, 1/2) >= 30)
    # = 0.0011. Both models trained for a few hundred steps score well above that.
    monkeypatch.setenv("HF_HOME", str(setup / "hf"))
    results = lm_eval_results(setup, run, "td_choice", f"out_{run}", "mc_num=8", "log_samples=true", "greedy=false")
    assert results["results"]["td_choice"]["acc,none"] >= 0.75
    assert results["n-samples"]["td_choice"]["effective"] == N_CHOICE
    assert results["config"]["tokendiff_checkpoint"].startswith(str(setup / run))
    (requests,) = (setup / f"out_{run}").glob("*/requests_*.jsonl")  # the side file of standard errors
    rows = [json.loads(line) for line in requests.read_text().splitlines()]
    assert len(rows) == 2 * N_CHOICE
    assert all(r["draws"] == (8 if run == "masked" else 1) and r["nats"] > 0 for r in rows)
    assert all((r["stderr"] > 0) if run == "masked" else r["stderr"] == 0 for r in rows)


def test_rolling_perplexity_is_the_backends_own_estimate_and_generation_stops_at_the_line(setup, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(setup / "hf"))
    results = lm_eval_results(setup, "masked", "td_ppl,td_gen", "out_rolling", "mc_num=4", "log_samples=true")
    bpb = results["results"]["td_ppl"]["bits_per_byte,none"]
    # the same number from the estimator directly: the harness adds the documents' log-likelihoods up
    lm = TokendiffLM(checkpoint=str(setup / "masked"), mc_num=4)
    texts = [json.loads(line)["text"] for line in (setup / "tasks" / "ppl.jsonl").read_text().splitlines()]
    nats = sum(
        score_continuation(lm.model, lm.kernel, [], lm.tokenizer.encode(t), window=32, draws=4, seed=0).nats
        for t in texts
    )
    assert bpb == pytest.approx(nats / math.log(2) / sum(len(t.encode()) for t in texts), rel=1e-6)
    assert 1.0 < bpb < math.log2(65)  # better than uniform over the 65 characters, and not free
    (samples,) = (setup / "out_rolling").glob("*/samples_td_gen_*.jsonl")
    outputs = [json.loads(line)["resps"][0][0] for line in samples.read_text().splitlines()]
    assert len(outputs) == 3 and all("\n" not in o and len(o) <= 24 for o in outputs)
    assert any(o.strip() for o in outputs)


def requests(kind, *args_list):
    return [Instance(request_type=kind, doc={}, arguments=a, idx=0) for a in args_list]


@pytest.mark.parametrize("run", ["masked", "ar"])
def test_numbers_do_not_depend_on_the_batch_size_or_the_order_of_requests(setup, run):
    pairs = [("ROMEO:\n", "What light"), ("", "To be, or not"), ("KING:\nWe ", "shall")]
    one = TokendiffLM(checkpoint=str(setup / run), mc_num=16, batch_size=1)
    eight = TokendiffLM(checkpoint=str(setup / run), mc_num=16, batch_size=8)
    a = one.loglikelihood(requests("loglikelihood", *pairs))
    b = eight.loglikelihood(requests("loglikelihood", *pairs[::-1]))[::-1]
    for (la, ga), (lb, gb) in zip(a, b):
        assert la == pytest.approx(lb, abs=1e-4) and ga == gb
    gen = requests("generate_until", ("ROMEO:\n", {"until": ["\n"], "max_gen_toks": 12}), ("JULIET:\n", {}))
    assert one.generate_until(gen) == eight.generate_until(gen[::-1])[::-1]


def test_two_processes_give_the_numbers_of_one(setup, tmp_path):
    env = {**os.environ, "HF_HOME": str(setup / "hf"), "OMP_NUM_THREADS": "1"}
    common = [f"checkpoint={setup / 'masked'}", "tasks=[td_choice,td_ppl]", f"include_path={setup / 'tasks'}"]
    common += ["mc_num=4", "limit=6"]
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533"]
    for name, cmd in (("one", [sys.executable]), ("two", launch)):
        proc = subprocess.run(
            [*cmd, "-m", "tokendiff", "lm-eval", *common, f"output_path={tmp_path / name}"],
            capture_output=True, text=True, env=env, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
    one, two = (json.loads(next((tmp_path / n).glob("*/results_*.json")).read_text()) for n in ("one", "two"))
    assert one["results"]["td_choice"]["acc,none"] == two["results"]["td_choice"]["acc,none"]
    # every request of both processes in the side file, with the values of one process
    rows = {
        name: sorted(json.dumps(json.loads(line), sort_keys=True) for line in f.read_text().splitlines())
        for name in ("one", "two")
        for f in (tmp_path / name).glob("*/requests_*.jsonl")
    }
    assert len(rows["one"]) == 12 and rows["one"] == rows["two"]
    assert one["results"]["td_ppl"]["word_perplexity,none"] == pytest.approx(
        two["results"]["td_ppl"]["word_perplexity,none"], rel=1e-9
    )


@pytest.mark.parametrize(
    "extra, message",
    [
        (["mc_numm=8"], "unknown model argument mc_numm=8"),
        (["mc_num=0"], "mc_num=0 must be an integer >= 1"),
        (["tasks=[no_such_task]"], "unknown task 'no_such_task'"),
        (["limit=-1"], "limit=-1 must be a number > 0"),
    ],
)
def test_bad_arguments_are_one_line_with_exit_status_2(setup, capsys, extra, message):
    args = [f"checkpoint={setup / 'masked'}", f"include_path={setup / 'tasks'}", "tasks=[td_choice]", *extra]
    assert main(["lm-eval", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_a_folder_that_is_not_a_checkpoint_and_an_image_model_are_refused(setup, tmp_path, capsys):
    tasks = ["tasks=[td_choice]", f"include_path={setup / 'tasks'}"]
    assert main(["lm-eval", f"checkpoint={setup / 'tasks'}", *tasks]) == 2
    assert "checkpoint" in capsys.readouterr().err
    image = [*TINY_MNIST, "data.limit=20", "training.n_epochs=1", f"output_dir={tmp_path / 'mnist'}"]
    assert main(["train", *image]) == 0
    capsys.readouterr()
    assert main(["lm-eval", f"checkpoint={tmp_path / 'mnist'}", *tasks]) == 2
    err = capsys.readouterr().err.strip()
    assert "is an image model" in err and len(err.splitlines()) == 1


def test_the_lm_eval_command_line_finds_the_backend(setup, tmp_path):
    # tokendiff-lm-eval is lm-eval's own command line with --model tokendiff registered
    env = {**os.environ, "HF_HOME": str(setup / "hf")}
    args = ["--model", "tokendiff", "--model_args", f"checkpoint={setup / 'ar'}", "--tasks", "td_choice"]
    args += ["--include_path", str(setup / "tasks"), "--limit", "4", "--device", "cpu"]
    proc = subprocess.run(
        [sys.executable, "-m", "tokendiff.harness", *args, "--output_path", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "td_choice" in proc.stdout and list(tmp_path.glob("*/results_*.json"))


@pytest.mark.parametrize(
    "preset",
    ["+experiment=shakespeare_char_udlm", "+experiment=shakespeare_char_hybrid", "+experiment=shakespeare_char_bd3"],
)
def test_every_kernel_and_block_diffusion_answer_the_three_requests(tmp_path, preset):
    # tiny untrained runs of the other kernels and of block diffusion (blocks of 16 in a 32-token window): the
    # backend's three requests run on each, contexts longer than the window included
    sizes = ["model.block_size=32", "diffusion.block_size=16"] if "bd3" in preset else ["model.block_size=32"]
    common = [c for c in COMMON if not c.startswith("model.block_size")]
    assert main(["train", preset, *common, *sizes, "training.max_iters=2", f"output_dir={tmp_path / 'run'}"]) == 0
    lm = TokendiffLM(checkpoint=str(tmp_path / "run"), mc_num=4, batch_size=4)
    long_context = "ROMEO:\nBut soft, what light through yonder window breaks? It is the east.\n"
    scores = lm.loglikelihood(requests("loglikelihood", ("ROMEO:\n", "What"), (long_context, " Juliet is the sun")))
    assert all(math.isfinite(ll) and ll < 0 for ll, _ in scores)
    rolling = lm.loglikelihood_rolling(requests("loglikelihood_rolling", (long_context * 2,)))
    assert math.isfinite(rolling[0]) and rolling[0] < scores[0][0]
    texts = lm.generate_until(
        requests("generate_until", (long_context, {"until": ["\n"], "max_gen_toks": 20}), ("JULIET:\n", {}))
    )
    assert len(texts) == 2 and "\n" not in texts[0] and len(texts[0]) <= 20
