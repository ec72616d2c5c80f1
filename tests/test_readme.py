"""The README is tested: every ``tokendiff`` command in its bash blocks runs (issue: never lose a run,
never print a traceback), so an example that fails cannot ship.

The commands run in process, in README order within each kind (fresh training first, then resumes,
then prepare, sample and eval, so that samples and evaluations find the runs the training lines wrote),
in a temporary working directory: the README's relative paths (``out/small``, ``digits.png``) land
there. Where a command trains, tiny settings replace the README's sizes and lengths; evaluation is cut
to a few windows and samples. Nothing else of a command is changed. The README's Python example runs
last, against the run its ``+experiment=small`` line trained.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState

from tokendiff.cli.main import main

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

# Commands of the bash blocks that are not tokendiff commands: they build the environment this test
# runs in, or run this very test suite.
NOT_TOKENDIFF = {
    "python3 -m venv .venv",
    ".venv/bin/pip install -c constraints.txt -e .",
    "bash scripts/test.sh",
    # several processes: tests/test_distributed.py launches tokendiff with torchrun on 2 CPU processes (and
    # this test runs the README's system.num_processes=2 line); the accelerate line is the same launch on
    # GPUs, which CI does not have
    "torchrun --standalone --nproc_per_node 2 -m tokendiff train +experiment=quickstart system.device=cpu "
    "output_dir=out/ddp2",
    "accelerate launch --multi_gpu --num_processes 4 -m tokendiff train +experiment=small",
    # sharded training: tests/test_fsdp.py launches it with torchrun and with accelerate launch --use_fsdp on 2 CPU
    # processes (and this test runs the README's system.num_processes=2 system.fsdp=true line); the accelerate
    # line's 4 GPUs are not in CI
    "torchrun --standalone --nproc_per_node 2 -m tokendiff train +experiment=quickstart system.device=cpu "
    "system.fsdp=true output_dir=out/fsdp2",
    "accelerate launch --use_fsdp --fsdp_version 2 --num_processes 4 -m tokendiff train +experiment=small",
    # lm-evaluation-harness: lm-eval's own command line with the tokendiff backend, and two processes;
    # tests/test_harness.py runs both (python -m tokendiff.harness, and torchrun on 2 CPU processes)
    "tokendiff-lm-eval --model tokendiff --model_args checkpoint=out/quickstart,mc_num=32 --tasks td_choice "
    "--include_path tasks/ --device cpu --batch_size 32 --output_path results/",
    "torchrun --nproc_per_node 2 -m tokendiff lm-eval checkpoint=out/quickstart 'tasks=[td_choice]' "
    "include_path=tasks/",
    # downloads of the field's models (tests never use the network): the test saves tiny random models of the
    # same kinds in those folders instead
    "huggingface-cli download google/diffusiongemma-26B-A4B-it --local-dir models/diffusiongemma",
    "huggingface-cli download GSAI-ML/LLaDA-8B-Instruct --local-dir models/llada",
}

# README tokendiff commands this test does not run (as `shlex.join` of the words after `tokendiff`), each
# with the reason.
SKIP: dict[str, str] = {
    "prepare data.dataset=hf data.hf_path=wikitext data.hf_name=wikitext-2-raw-v1": (
        "downloads wikitext from the hub, and tests never use the network; tests/test_datasets.py prepares "
        "data.dataset=hf from a local saved dataset and a local folder of Parquet files"
    ),
    "demo checkpoint=out/small prompt=ROMEO:": (
        "serves a page until Ctrl+C; tests/test_demo.py starts it on a free port and calls it with gradio_client"
    ),
}

# Substituted where a command trains a text model (the preset's model.block_size is kept, so the
# README's [MASK:60] templates and length=256 fit the models that the sample lines use).
TEXT_TINY = {
    "model.n_layer": "2",
    "model.n_head": "2",
    "model.n_embd": "32",
    "training.batch_size": "4",
    "training.grad_accum": "1",
    "training.max_iters": "2",
    "training.warmup_iters": "1",
    "training.eval_iters": "1",
    "training.eval_interval": "0",
    "training.sample_interval": "0",
    "sampling.steps": "4",
    "system.device": "cpu",
}
# ...an image model (MNIST): 16 images, one epoch of two steps
IMAGE_TINY = {
    "model.n_layer": "1",
    "model.n_head": "2",
    "model.n_embd": "16",
    "data.limit": "16",
    "training.batch_size": "8",
    "training.n_epochs": "1",
    "training.eval_iters": "1",
    "sampling.steps": "2",
    "system.device": "cpu",
}
# ...a resumed run: two steps more than the tiny run it continues
RESUME_TINY = {"training.max_iters": "4"}
# ...and evaluation: a few windows; for images a few samples, few steps
EVAL_TINY = {"eval.max_windows": "16", "eval.num_samples": "10", "eval.sampling_steps": "2"}
# ...and lm-eval: a few documents per task, a few draws
LM_EVAL_TINY = {"limit": "4", "mc_num": "4"}


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```", text, flags=re.M | re.S)


def readme_commands() -> list[list[str]]:
    """Every command of README.md's bash blocks as argv: one per line and per ``&&`` step, comments dropped."""
    commands = []
    for block in bash_blocks(README.read_text()):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            while words:
                step = words.index("&&") if "&&" in words else len(words)
                commands.append(words[:step])
                words = words[step + 1 :]
    return commands


def is_tokendiff(argv: list[str]) -> bool:
    return argv[0] == "tokendiff" or argv[0].endswith("/tokendiff")


def tokendiff_commands() -> list[list[str]]:
    """The tokendiff commands of the README, as ``[command, key=value, ...]`` (the program name dropped)."""
    return [argv[1:] for argv in readme_commands() if is_tokendiff(argv)]


def substitute(args: list[str], tiny: dict) -> list[str]:
    """``args`` with every ``key=value`` of ``tiny`` replacing the README's value of that key (or added)."""
    return [a for a in args if a.split("=", 1)[0] not in tiny] + [f"{k}={v}" for k, v in tiny.items()]


def output_dir_of(train_args: list[str]) -> str | None:
    """Where a fresh ``tokendiff train`` with these arguments writes (None for a bad config: main says why)."""
    from tokendiff.configs import compose_config
    from tokendiff.errors import TokenDiffError

    try:
        return compose_config([a for a in train_args if not a.startswith(("prompt=", "template="))]).output_dir
    except TokenDiffError:
        return None


def order(argv: list[str]) -> int:
    command, args = argv[0], argv[1:]
    if command == "train":
        return 1 if any(a.startswith("resume=") for a in args) else 0
    # prepare first: it needs no run, and a training line may name a corpus a prepare line recorded
    # merge: after the training lines (it reads a LoRA run), before the samples and evaluations of what it wrote
    return {"prepare": -1, "merge": 2, "sample": 3, "eval": 4, "score": 5, "lm-eval": 6}[command]


def test_every_bash_command_of_the_readme_is_run_or_named():
    commands = readme_commands()
    assert len(commands) >= 20  # the parser found the blocks
    others = {shlex.join(argv) for argv in commands if not is_tokendiff(argv)}
    assert others == NOT_TOKENDIFF, "a README bash command that is neither tokendiff nor known setup"
    assert set(SKIP) <= {shlex.join(argv) for argv in tokendiff_commands()}, "SKIP names a command the README lacks"
    commands = ("prepare", "train", "sample", "eval", "score", "demo", "lm-eval", "merge")
    assert all(argv[0] in commands for argv in tokendiff_commands())


@pytest.fixture
def fresh_process():
    """Call to forget accelerate's per-process state (its mixed precision is fixed once per process), as
    the README's commands run in processes of their own; forgotten again for the tests after this one."""
    yield lambda: AcceleratorState._reset_state(reset_partial_state=True)
    AcceleratorState._reset_state(reset_partial_state=True)


def test_every_tokendiff_command_of_the_readme_runs(tmp_path, monkeypatch, capsys, fresh_process):
    from tokendiff.training.run_directory import holds_a_run

    pytest.importorskip("wandb")  # the README's logging.wandb=true lines need the extra (CI installs it)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    # `tokendiff prepare data.input=harry_potter.txt`: a stand-in book (the first 40k characters of Tiny
    # Shakespeare, read from the data directory the other tests use)
    shakespeare = Path(os.environ["TOKENDIFF_DATA"]) / "tinyshakespeare" / "input.txt"
    (tmp_path / "harry_potter.txt").write_text(shakespeare.read_text()[:40_000])
    # `data.input=reviews.jsonl`: one row per paragraph of those 40k characters (the same characters, so that
    # a character model trained on it can score harry_potter.txt zero-shot)
    paragraphs = shakespeare.read_text()[:40_000].split("\n\n")
    (tmp_path / "reviews.jsonl").write_text("".join(json.dumps({"text": p}) + "\n" for p in paragraphs))
    # `model.hf_config=bench/configs/tiny_bert` is relative to the repository
    shutil.copytree(REPO / "bench" / "configs", tmp_path / "bench" / "configs")
    # `tokendiff eval` of an image run trains a digit classifier for its sample metrics (a minute on two
    # cores) and caches it; an untrained one of the same shape runs the same code in no time
    import tokendiff.evaluation.images as image_eval
    from tokendiff.evaluation.classifier import DigitClassifier

    monkeypatch.setattr(image_eval, "load_classifier", lambda: (DigitClassifier().eval(), {"test_accuracy_dynamic": 0}))
    # `tokendiff lm-eval ... include_path=tasks/`: the local tasks of tests/test_harness.py
    from test_harness import write_tasks

    (tmp_path / "tasks").mkdir()
    write_tasks(tmp_path / "tasks")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    # `checkpoint=models/diffusiongemma` and `models/llada`: tiny random models of those kinds, as
    # tests/test_diffusion_gemma.py and tests/test_pretrained.py build them (the README downloads the real ones)
    import test_diffusion_gemma as dg
    from test_pretrained import save_tiny_llada

    torch.manual_seed(0)
    dg.transformers.DiffusionGemmaForBlockDiffusion(dg.tiny_config()).save_pretrained(
        tmp_path / "models/diffusiongemma"
    )
    dg.word_tokenizer().save(tmp_path / "models/diffusiongemma")
    save_tiny_llada(tmp_path / "models/llada")

    commands = [argv for argv in tokendiff_commands() if shlex.join(argv) not in SKIP]
    ran = []
    for i, argv in sorted(enumerate(commands), key=lambda item: (order(item[1]), item[0])):
        command, args = argv[0], argv[1:]
        if command == "train" and any(a.startswith("resume=") for a in args):
            args = substitute(args, RESUME_TINY)
        elif command == "train":
            image = any(a.startswith(("+experiment=mnist", "data.dataset=mnist")) for a in args)
            args = substitute(args, IMAGE_TINY if image else TEXT_TINY)
            # several examples train into one default output_dir (`out`); each is an example of its own, so
            # a repeat gets a directory of its own instead of being refused
            target = output_dir_of(args)
            if target and holds_a_run(Path(target)):
                args.append(f"output_dir=out/readme-{i}")
        elif command == "eval":
            args = substitute(args, EVAL_TINY)
        elif command == "lm-eval":
            args = substitute(args, LM_EVAL_TINY)
        fresh_process()
        code = main([command, *args])
        out, err = capsys.readouterr()
        assert code == 0, f"README command `tokendiff {shlex.join(argv)}` failed:\n{err[-2000:]}"
        if command in ("sample", "eval", "prepare", "score", "lm-eval"):
            assert out.strip() or "written to" in err, f"`tokendiff {shlex.join(argv)}` printed nothing"
        ran.append(argv)
    assert len(ran) + len(SKIP) == len(tokendiff_commands())  # every README command ran or is named in SKIP
    # what the README says these commands leave behind
    assert (tmp_path / "out" / "small" / "final" / "model.safetensors").exists()
    assert (tmp_path / "digits.png").stat().st_size > 0 and (tmp_path / "denoise.gif").stat().st_size > 0
    assert list((tmp_path / "out" / "small" / "wandb").glob("offline-run-*"))

    # the Python examples, against the runs the README's training lines wrote: transformers loads the
    # exported backbone of `output_dir=out/bert_chars`; tokendiff samples the `+experiment=small` run
    exported, snippet = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.M | re.S)
    scope: dict = {}
    exec(compile(exported, "README.md", "exec"), scope)
    assert type(scope["model"]).__name__ == "BertForMaskedLM"
    exec(compile(snippet, "README.md", "exec"), scope)
    assert len(scope["texts"]) == 2 and all(t.startswith("ROMEO:") for t in scope["texts"])
