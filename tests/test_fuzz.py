"""Fuzzing the command line (issue: never lose a run, never print a traceback).

Every case below is a bad input a user can type or a damaged file a user can have. Each must end in
exit status 2 and one line on stderr that names the problem, no traceback, and leave every file that
existed before (the case's temporary directory, the damaged copy of a run in it, and the shared runs)
byte-identical. The cases run in process (``main(argv)``) against three tiny runs trained once.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from test_cli import run
from test_training import TINY
from tokendiff.cli.main import main

NOWHERE = "/proc/tokendiff-fuzz"  # a directory that cannot be created, even by root


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny masked-diffusion text run (with periodic checkpoints), an autoregressive one and a tiny
    naive (corrupted-data) MNIST run, each trained once for the whole module."""
    root = tmp_path_factory.mktemp("fuzz-runs")
    assert (
        main(["train", *TINY, "training.max_iters=2", "training.checkpoint_interval=1", f"output_dir={root}/text"]) == 0
    )
    assert (
        main(["train", "+experiment=shakespeare_char_ar", *TINY, "training.max_iters=1", f"output_dir={root}/ar"]) == 0
    )
    image = [
        "+experiment=mnist_baseline",
        "model.n_layer=1",
        "model.n_embd=16",
        "model.n_head=2",
        "data.limit=16",
        "training.batch_size=8",
        "training.n_epochs=1",
        "training.eval_iters=1",
        "sampling.steps=2",
        "system.device=cpu",
    ]
    assert main(["train", *image, f"output_dir={root}/image"]) == 0
    return root


def snapshot(*roots: Path) -> dict:
    """Every file under ``roots`` with its bytes."""
    return {p: p.read_bytes() for root in roots for p in sorted(Path(root).rglob("*")) if p.is_file()}


class Case:
    """What a case builder gets: the shared runs, its own temporary directory and damage helpers."""

    def __init__(self, runs: Path, tmp: Path, monkeypatch):
        self.text, self.ar, self.image = runs / "text", runs / "ar", runs / "image"
        self.tmp, self.monkeypatch = tmp, monkeypatch

    def file(self, name: str, content: str | bytes = "x") -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return path

    def dir(self, name: str) -> Path:
        path = self.tmp / name
        path.mkdir(parents=True)
        return path

    def copy(self, run: Path | None = None) -> Path:
        """A copy of a run (the text run by default) to damage; returns the copy's run directory."""
        run = run or self.text
        target = self.tmp / f"copy-of-{run.name}"
        shutil.copytree(run, target)
        return target

    def damaged(self, name: str, damage, run: Path | None = None) -> Path:
        """A copy of a run whose ``final/<name>`` went through ``damage`` (bytes -> bytes); returns the
        copy's ``final`` checkpoint directory."""
        ckpt = self.copy(run) / "final"
        (ckpt / name).write_bytes(damage((ckpt / name).read_bytes()))
        return ckpt

    def edited(self, name: str, edit, run: Path | None = None) -> Path:
        """As :meth:`damaged`, for a JSON file: ``edit`` maps its value to the value written back."""
        return self.damaged(name, lambda b: json.dumps(edit(json.loads(b))).encode(), run)

    def config_edit(self, key: str, value) -> Path:
        """A copy whose ``final/config.json`` says ``section.key=value`` in its saved config."""
        sec, name = key.split(".")
        return self.edited(
            "config.json", lambda r: {**r, "config": {**r["config"], sec: {**r["config"][sec], name: value}}}
        )

    def weights_edit(self, name: str, edit) -> Path:
        """A copy whose ``final/<name>`` safetensors went through ``edit`` (dict of tensors -> dict)."""
        ckpt = self.copy() / "final"
        save_file(edit(load_file(str(ckpt / name))), str(ckpt / name))
        return ckpt

    def removed(self, name: str, run: Path | None = None) -> Path:
        ckpt = self.copy(run) / "final"
        path = ckpt / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
        return ckpt


def half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def kv(key: str, value) -> str:
    return f"{key}={value}"


def without(d: dict, key: str) -> dict:
    return {k: v for k, v in d.items() if k != key}


def wider(tensors: dict) -> dict:
    """The same names, every matrix one column wider: weights of another model."""
    import torch

    return {k: torch.cat([v, v[..., :1]], dim=-1) if v.dim() == 2 else v for k, v in tensors.items()}


def without_one(tensors: dict) -> dict:
    return dict(list(tensors.items())[1:])


def _sample(c, *args):
    return ["sample", f"checkpoint={c.text}", *args]


def _eval(c, *args):
    return ["eval", f"checkpoint={c.text}", *args]


def _train(c, *args):
    return ["train", *TINY, "training.max_iters=1", f"output_dir={c.tmp}/new-run", *args]


MNIST_TINY = ["model.block_size=784", "data.limit=8"]
HYBRID = {"_class_name": "HybridTokenDiffusionScheduler", "gamma": 1.0}


def png() -> bytes:
    """A PNG picture that tokendiff did not write."""
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("L", (4, 4), 200).save(out, format="PNG")
    return out.getvalue()


def short_text(c) -> Path:
    return c.file("short.txt", "To be, or not to be.\n")


def rows(c) -> Path:
    """A JSON lines corpus: one document per row, in the column ``text``."""
    return c.file(
        "rows.jsonl", "".join(json.dumps({"text": f"To be, or not to be. {i}", "id": i}) + "\n" for i in range(50))
    )


def offline(c) -> None:
    """The Hugging Face libraries offline for this case: a name that is not cached fails at once, without
    reaching for the network (tests never use it)."""
    import datasets.config as datasets_config  # the [hf] extra: CI installs it
    import huggingface_hub.constants as hub_constants

    c.monkeypatch.setattr(datasets_config, "HF_HUB_OFFLINE", True)
    c.monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    c.monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# name: (argv builder given a Case, a piece of the one stderr line)
BAD = {
    # ---- the command word and --help-adjacent misuse
    "misspelt --help": (lambda c: ["--hepl"], "unknown command '--hepl'"),
    "a short option as the command": (lambda c: ["-v"], "unknown command '-v'"),
    "command in capitals": (lambda c: ["Train"], "unknown command 'Train'"),
    "misspelt command": (lambda c: ["smaple", f"checkpoint={c.text}"], "unknown command 'smaple'"),
    "GNU-style option": (lambda c: _train(c, "--max_iters=5"), "--max_iters"),
    "GNU-style option with a separate value": (lambda c: ["sample", "--checkpoint", str(c.text)], "--checkpoint"),
    # ---- the key=value grammar
    "override without a value": (lambda c: _train(c, "model.n_layer"), "model.n_layer"),
    "override without a key": (lambda c: _train(c, "=3"), "bad configuration"),
    "a section given a scalar": (lambda c: _train(c, "model=3"), "model"),
    "appending a key that exists": (lambda c: _train(c, "+model.n_layer=3"), "model.n_layer"),
    "a sweep instead of a value": (lambda c: _train(c, "model.n_layer=2,4"), "bad configuration"),
    "unclosed list": (lambda c: _train(c, "logging.tags=[small,debug"), "bad configuration"),
    "interpolation to nowhere": (lambda c: _train(c, "model.n_layer=${nope}"), "nope"),
    "missing environment variable": (
        lambda c: _train(c, "output_dir=${oc.env:TOKENDIFF_FUZZ_UNSET}"),
        "TOKENDIFF_FUZZ",
    ),
    # ---- misspelt and unknown keys
    "sampling key without its section": (lambda c: _sample(c, "temperature=0.5"), "temperature"),
    "unknown section": (lambda c: _train(c, "optim.lr=1e-3"), "optim"),
    "misspelt sampling key": (lambda c: _sample(c, "sampling.stpes=8"), "stpes"),
    "misspelt eval key": (lambda c: _eval(c, "eval.max_window=8"), "max_window"),
    "misspelt top-level key": (lambda c: ["sample", f"chekpoint={c.text}"], "chekpoint"),
    # ---- wrong types
    "float for an int": (lambda c: _train(c, "model.n_layer=2.5"), "2.5"),
    "list for an int": (lambda c: _train(c, "model.n_layer=[2]"), "n_layer"),
    "null for a number": (lambda c: _train(c, "training.batch_size=null"), "batch_size"),
    "word for a bool": (lambda c: _train(c, "logging.wandb=maybe"), "maybe"),
    "dict for a bool": (lambda c: _train(c, "logging.wandb={a:1}"), "wandb"),
    "word for a float": (lambda c: _sample(c, "sampling.temperature=hot"), "hot"),
    "word for a seed": (lambda c: _sample(c, "seed=lucky"), "lucky"),
    # ---- numbers out of range
    "negative seed": (lambda c: _sample(c, "seed=-1"), "seed=-1"),
    "seed of 2^63": (lambda c: _eval(c, "seed=9223372036854775808"), "seed=9223372036854775808"),
    "negative training seed": (lambda c: _train(c, "training.seed=-7"), "training.seed=-7"),
    "zero training steps": (lambda c: _train(c, "training.max_iters=0"), "training.max_iters=0"),
    "negative training steps": (lambda c: _train(c, "training.max_iters=-5"), "training.max_iters=-5"),
    "huge sampling steps": (lambda c: _sample(c, "sampling.steps=1000000"), "sampling.steps=1000000"),
    "negative sampling steps": (lambda c: _sample(c, "sampling.steps=-3"), "sampling.steps=-3"),
    "zero image eval steps": (lambda c: _eval(c, "eval.sampling_steps=0"), "eval.sampling_steps=0"),
    "zero length": (lambda c: _sample(c, "sampling.length=0"), "sampling.length=0"),
    "length beyond the model": (lambda c: _sample(c, "sampling.length=33"), "sampling.length=33"),
    "huge length": (lambda c: _sample(c, "sampling.length=2000000"), "sampling.length=2000000"),
    "zero batch size": (lambda c: _train(c, "training.batch_size=0"), "training.batch_size=0"),
    "negative sampling batch size": (lambda c: _sample(c, "sampling.batch_size=-2"), "sampling.batch_size=-2"),
    "zero eval batch size": (lambda c: _eval(c, "eval.batch_size=0"), "eval.batch_size=0"),
    "huge batch size": (lambda c: _train(c, "training.batch_size=1000000000"), "training.batch_size=1000000000"),
    "zero gradient accumulation": (lambda c: _train(c, "training.grad_accum=0"), "training.grad_accum=0"),
    "zero samples": (lambda c: _sample(c, "num_samples=0"), "num_samples=0"),
    "zero threads": (lambda c: _sample(c, "system.threads=0"), "system.threads=0"),
    "negative threads": (lambda c: _train(c, "system.threads=-2"), "system.threads=-2"),
    "huge thread count": (lambda c: _eval(c, "system.threads=100000"), "system.threads=100000"),
    "zero validation share": (lambda c: _train(c, "data.val_fraction=0"), "data.val_fraction=0"),
    "validation share above one": (lambda c: ["prepare", "data.val_fraction=1.5"], "data.val_fraction=1.5"),
    "observed fraction of zero": (lambda c: _train(c, "data.observed_fraction=0"), "data.observed_fraction=0"),
    "observed fraction above one": (lambda c: _train(c, "data.observed_fraction=1.2"), "data.observed_fraction=1.2"),
    "dropout of one": (lambda c: _train(c, "model.dropout=1.0"), "model.dropout=1.0"),
    "negative temperature": (lambda c: _sample(c, "sampling.temperature=-0.5"), "sampling.temperature=-0.5"),
    "temperature not a number": (lambda c: _sample(c, "sampling.temperature=nan"), "sampling.temperature=nan"),
    "top_p of zero": (lambda c: _sample(c, "sampling.top_p=0"), "sampling.top_p=0"),
    "top_p above one": (lambda c: _sample(c, "sampling.top_p=1.01"), "sampling.top_p=1.01"),
    "negative top_p": (lambda c: _sample(c, "sampling.top_p=-0.9"), "sampling.top_p=-0.9"),
    "EMA decay of one": (lambda c: _train(c, "training.ema=1"), "training.ema=1"),
    "floor above the learning rate": (lambda c: _train(c, "training.min_lr=0.5"), "training.min_lr=0.5"),
    "zero learning rate": (lambda c: _train(c, "training.learning_rate=0"), "training.learning_rate=0"),
    "unknown optimizer": (lambda c: _train(c, "training.optimizer=sgd"), "training.optimizer='sgd'"),
    "zero minutes": (lambda c: _train(c, "training.max_minutes=0"), "training.max_minutes=0"),
    "zero epochs": (lambda c: _train(c, "training.n_epochs=0"), "training.n_epochs=0"),
    "negative warmup": (lambda c: _train(c, "training.warmup_iters=-1"), "training.warmup_iters=-1"),
    "t_min of one": (lambda c: _train(c, "diffusion.t_min=1.0"), "diffusion.t_min=1.0"),
    "schedule eps of zero": (lambda c: _train(c, "diffusion.eps=0"), "diffusion.eps=0"),
    "zero eval draws": (lambda c: _eval(c, "eval.num_draws=0"), "eval.num_draws=0"),
    "zero eval windows": (lambda c: _eval(c, "eval.max_windows=0"), "eval.max_windows=0"),
    "too few image eval samples": (lambda c: _eval(c, "eval.num_samples=9"), "eval.num_samples=9"),
    "zero MNIST limit": (lambda c: ["prepare", "data.dataset=mnist", "data.limit=0"], "data.limit=0"),
    "ambient hard start of one": (lambda c: _train(c, "ambient.hard_start=1"), "ambient.hard_start=1"),
    "ambient easy share of zero": (lambda c: _train(c, "ambient.easy_fraction=0"), "ambient.easy_fraction=0"),
    "negative consistency weight": (lambda c: _train(c, "ambient.consistency_weight=-1"), "consistency_weight=-1"),
    "consistency reveal of one": (lambda c: _train(c, "ambient.consistency_reveal=1"), "consistency_reveal=1"),
    "consistency max masked of zero": (
        lambda c: _train(c, "ambient.consistency_max_masked=0"),
        "consistency_max_masked=0",
    ),
    "unknown EM weight": (lambda c: _train(c, "ambient.imputed_weight=2"), "imputed_weight=2"),
    "clean fraction of one": (lambda c: _train(c, "data.clean_fraction=1"), "data.clean_fraction=1"),
    "clean fraction with ambient": (
        lambda c: ["train", "+experiment=mnist_ambient", "data.clean_fraction=0.01"],
        "data.clean_fraction=0.01",
    ),
    # ---- unknown names
    "unknown sampling strategy": (lambda c: _sample(c, "sampling.strategy=greedy"), "'greedy'"),
    "threshold above one": (lambda c: _sample(c, "sampling.strategy=threshold", "sampling.threshold=2"), "threshold=2"),
    "negative top_k": (lambda c: _sample(c, "sampling.top_k=-3"), "sampling.top_k=-3"),
    "unknown remasking": (lambda c: _sample(c, "sampling.remask=loop"), "'loop'"),
    "remasking with confidence": (
        lambda c: _sample(c, "sampling.remask=cap", "sampling.strategy=confidence"),
        "strategy=ancestral",
    ),
    "block size of zero": (lambda c: _sample(c, "sampling.block_size=0"), "sampling.block_size=0"),
    "unknown KV cache": (lambda c: _sample(c, "sampling.kv_cache=full"), "'full'"),
    "unknown time grid": (lambda c: _sample(c, "sampling.time_grid=log"), "sampling.time_grid='log'"),
    "bound estimator with block diffusion": (
        lambda c: _train(c, "model.block_diffusion=true", "diffusion.block_size=8", "diffusion.estimator=bound"),
        "diffusion.estimator=time",
    ),
    "bound estimator with the naive objective": (
        lambda c: _train(c, "diffusion.objective=naive", "diffusion.estimator=bound"),
        "diffusion.estimator=bound",
    ),
    "dual KV cache without blocks": (lambda c: _sample(c, "sampling.kv_cache=dual"), "sampling.block_size"),
    "block diffusion without a block size": (lambda c: _train(c, "model.block_diffusion=true"), "diffusion.block_size"),
    "block diffusion block not dividing the context": (
        lambda c: _train(c, "model.block_diffusion=true", "diffusion.block_size=7"),
        "diffusion.block_size",
    ),
    "block diffusion of hybrid noise": (
        lambda c: _train(
            c,
            "model.block_diffusion=true",
            "diffusion.block_size=8",
            "diffusion.process=hybrid",
            "model.time_conditioning=true",
        ),
        "model.block_diffusion=true",
    ),
    "diffusion block size without block diffusion": (lambda c: _train(c, "diffusion.block_size=8"), "block_diffusion"),
    "init_from a missing run": (lambda c: _train(c, f"training.init_from={c.tmp}/nowhere"), "training.init_from"),
    "unknown confidence": (lambda c: _sample(c, "sampling.strategy=threshold", "sampling.confidence=gut"), "'gut'"),
    "unknown schedule": (lambda c: _train(c, "diffusion.schedule=quadratic"), "'quadratic'"),
    "unknown objective": (lambda c: _train(c, "diffusion.objective=score"), "'score'"),
    "unknown tokenizer": (lambda c: ["prepare", "data.tokenizer=wordpiece"], "'wordpiece'"),
    "unknown binarization": (lambda c: ["prepare", "data.dataset=mnist", "data.binarization=gray"], "'gray'"),
    "unknown dataset": (lambda c: ["prepare", "data.dataset=wikipedia"], "'wikipedia'"),
    "unknown dtype": (lambda c: _train(c, "system.dtype=int8"), "'int8'"),
    "unknown device": (lambda c: _sample(c, "system.device=tpu"), "'tpu'"),
    "unknown architecture": (lambda c: _train(c, "model.arch=rnn"), "'rnn'"),
    "unknown ambient divergence": (lambda c: _train(c, "ambient.divergence=l1"), "'l1'"),
    "unknown eval split": (lambda c: _eval(c, "eval.split=dev"), "'dev'"),
    # ---- presets
    "preset in capitals": (lambda c: _train(c, "+experiment=Small"), "experiment/Small"),
    # (lead: "+experiment=small.yaml" was removed: Hydra accepts it and trains the 6 x 384 preset for 5000
    # steps, which hung the suite. Any train case that might be accepted must carry TINY settings and a
    # tiny training.max_iters so that a wrong expectation fails fast instead of training for minutes.)
    "empty preset": (lambda c: _train(c, "+experiment="), "experiment"),
    "preset without the plus": (lambda c: _train(c, "experiment=small"), "experiment"),
    "two presets": (lambda c: _train(c, "+experiment=small", "+experiment=medium"), "experiment"),
    # ---- kernels and models that cannot work together
    "uniform preset with a time-agnostic model": (
        lambda c: _train(c, "+experiment=shakespeare_char_udlm", "model.time_conditioning=false"),
        "model.time_conditioning=true",
    ),
    "causal model told the time": (
        lambda c: _train(c, "model.causal=true", "model.time_conditioning=true"),
        "model.causal=true has no diffusion time",
    ),
    "causal model with a naive objective": (
        lambda c: _train(c, "model.causal=true", "diffusion.objective=naive"),
        "no diffusion kernel",
    ),
    "ambient objective with a time-conditioned model": (
        lambda c: _train(c, "diffusion.objective=ambient", "model.time_conditioning=true"),
        "time-agnostic model",
    ),
    "naive objective with hybrid noise": (
        lambda c: _train(c, "diffusion.objective=naive", "diffusion.process=hybrid", "model.time_conditioning=true"),
        "needs diffusion.process=absorbing",
    ),
    "image patches that do not tile the image": (
        lambda c: _train(
            c, "+experiment=mnist", "model.block_size=784", "data.limit=8", "model.arch=image_patch", "model.patch=5"
        ),
        "model.patch=5 must divide the image size 28",
    ),
    "image model width not a multiple of 8": (
        lambda c: _train(
            c, "+experiment=mnist", "model.block_size=784", "data.limit=8", "model.n_embd=12", "model.n_head=2"
        ),
        "model.n_embd=12",
    ),
    "RoPE head of odd size": (lambda c: _train(c, "model.n_embd=30", "model.n_head=2"), "model.n_embd=30"),
    # ---- paths
    "checkpoint is a file": (lambda c: ["sample", kv("checkpoint", c.file("notes.txt"))], "holds no checkpoint"),
    "checkpoint under a file": (lambda c: ["eval", f"checkpoint={c.file('notes.txt')}/run"], "does not exist"),
    "checkpoint is an empty folder": (lambda c: ["sample", kv("checkpoint", c.dir("empty"))], "holds no checkpoint"),
    "empty checkpoint value": (lambda c: ["eval", "checkpoint="], "checkpoint"),
    "resume from nowhere": (lambda c: ["train", f"resume={c.tmp}/nope"], "does not exist"),
    "resume a checkpoint without training state": (
        lambda c: ["train", kv("resume", c.removed("training_state"))],
        "but not resumed",
    ),
    "resume a checkpoint outside any run": (
        lambda c: ["train", kv("resume", shutil.copytree(c.text / "final", c.tmp / "loose"))],
        "not inside a run directory",
    ),
    "resume with another model": (lambda c: ["train", kv("resume", c.copy()), "model.n_embd=64"], "keeps its model"),
    "resume with a preset": (lambda c: ["train", kv("resume", c.copy()), "+experiment=small"], "keeps its preset"),
    "resume with a misspelt key": (lambda c: ["train", kv("resume", c.copy()), "training.max_iter=9"], "max_iter"),
    "resume with a wrong type": (lambda c: ["train", kv("resume", c.copy()), "training.max_iters=many"], "many"),
    # (a directory holding only a log is a start that saved no checkpoint: the new run goes ahead there,
    # keeping the old log; tests/test_run_safety.py)
    "run directory holding only a periodic checkpoint": (
        lambda c: _train(c, kv("output_dir", c.dir("old/checkpoints/step_000001").parent.parent)),
        "already holds a run",
    ),
    "run directory that cannot be created": (lambda c: _train(c, f"output_dir={NOWHERE}/run"), "not writable"),
    "output_dir under a file two levels up": (
        lambda c: _train(c, f"output_dir={c.file('notes.txt')}/a/b"),
        "is a file",
    ),
    "text samples to a non-jsonl file": (lambda c: _sample(c, f"sampling.output={c.tmp}/s.txt"), "s.txt"),
    "trajectory of an unknown kind": (lambda c: _sample(c, f"sampling.trajectory={c.tmp}/t.mp4"), "t.mp4"),
    "trajectory without a suffix": (lambda c: _sample(c, f"sampling.trajectory={c.tmp}/trajectory"), "trajectory"),
    "trajectory that is a folder": (
        lambda c: _sample(c, kv("sampling.trajectory", c.dir("t.gif"))),
        "is a directory",
    ),
    "trajectory under a file": (lambda c: _sample(c, f"sampling.trajectory={c.file('notes.txt')}/t.txt"), "is a file"),
    "trajectory where no folder can be made": (
        lambda c: _sample(c, f"sampling.trajectory={NOWHERE}/t.html"),
        "cannot create",
    ),
    "corpus that does not exist": (lambda c: ["prepare", f"data.input={c.tmp}/book.txt"], "does not exist"),
    "corpus under a file": (lambda c: ["prepare", f"data.input={c.file('notes.txt')}/book.txt"], "does not exist"),
    "corpus folder without text files": (
        lambda c: ["prepare", kv("data.input", c.file("books/cover.png", b"PNG").parent)],
        "no .txt files",
    ),
    "corpus that is not UTF-8": (
        lambda c: ["prepare", kv("data.input", c.file("latin1.txt", "café crème ".encode("latin-1") * 100))],
        "not UTF-8",
    ),
    "corpus of only whitespace": (lambda c: _train(c, kv("data.input", c.file("blank.txt", " \n\t\n" * 50))), "empty"),
    "corpus too short for the model": (lambda c: ["prepare", kv("data.input", short_text(c))], "too short"),
    "BPE vocabulary below the byte alphabet": (
        lambda c: ["prepare", kv("data.input", short_text(c)), "data.tokenizer=bpe", "data.vocab_size=100"],
        "data.vocab_size=100",
    ),
    "prepared-data cache under a file": (
        lambda c: (
            c.monkeypatch.setenv("TOKENDIFF_CACHE", f"{c.file('notes.txt')}/prepared")
            or ["prepare", kv("data.input", c.file("book.txt", "To be, or not to be: that is the question. " * 20))]
        ),
        "notes.txt",
    ),
    # ---- JSON lines / Parquet corpora, pretrained tokenizers, Hugging Face datasets, zero-shot eval
    "text column that does not exist": (
        lambda c: ["prepare", kv("data.input", rows(c)), "data.text_column=body"],
        "no column 'body'; its columns are text, id",
    ),
    "text column of numbers": (
        lambda c: ["prepare", kv("data.input", c.file("numbers.jsonl", '{"text": 3}\n' * 20))],
        "not text",
    ),
    "JSON lines that are not JSON": (
        lambda c: ["prepare", kv("data.input", c.file("broken.jsonl", "{not json\n" * 20))],
        "cannot be read as json rows",
    ),
    "JSON lines corpus that does not exist": (
        lambda c: ["prepare", f"data.input={c.tmp}/rows.jsonl"],
        "does not exist",
    ),
    "corpus name with a slash": (
        lambda c: ["prepare", kv("data.input", rows(c)), "data.dataset=my/corpus"],
        "cannot name a prepared corpus",
    ),
    "pretrained tokenizer without a name": (lambda c: ["prepare", "data.tokenizer=hf"], "data.tokenizer_name"),
    "tokenizer name without data.tokenizer=hf": (
        lambda c: ["prepare", "data.tokenizer_name=gpt2"],
        "data.tokenizer=hf",
    ),
    "pretrained tokenizer that cannot be found offline": (
        lambda c: (
            offline(c)
            or ["prepare", kv("data.input", rows(c)), "data.tokenizer=hf", "data.tokenizer_name=tokendiff-fuzz/no-such"]
        ),
        "could not be loaded",
    ),
    "hf dataset without its path": (lambda c: ["prepare", "data.dataset=hf"], "data.hf_path"),
    "hf dataset that cannot be found offline": (
        lambda c: offline(c) or ["prepare", "data.dataset=hf", "data.hf_path=tokendiff-fuzz/no-such-dataset"],
        "could not be loaded",
    ),
    "hf dataset without a train split": (
        lambda c: [
            "prepare",
            "data.dataset=hf",
            kv("data.hf_path", c.file("pq/test-00000.jsonl", '{"text": "a"}').parent),
        ],
        "no train split",
    ),
    "eval on a corpus that does not exist": (lambda c: _eval(c, f"eval.data={c.tmp}/other.jsonl"), "eval.data="),
    "eval of an image model on text": (
        lambda c: ["eval", kv("checkpoint", c.image), kv("eval.data", rows(c))],
        "eval.data is for text models",
    ),
    # ---- templates and prompts
    "negative gap": (lambda c: _sample(c, "template=To be[MASK:-3]"), "malformed placeholder"),
    "gap of zero": (lambda c: _sample(c, "template=To be[MASK:0]"), "malformed placeholder"),
    "gap with a space": (lambda c: _sample(c, "template=To be[MASK: 5]"), "malformed placeholder"),
    "gap in scientific notation": (lambda c: _sample(c, "template=To be[MASK:1e3]"), "malformed placeholder"),
    "unclosed gap": (lambda c: _sample(c, "template=To be[MASK:5"), "malformed placeholder"),
    "nested gaps": (lambda c: _sample(c, "template=To be[MASK[MASK]]"), "malformed placeholder"),
    "gap longer than the sequence": (lambda c: _sample(c, "template=To be[MASK:99]"), "[MASK:99]"),
    "template without a gap": (lambda c: _sample(c, "template=To be or not"), "no [MASK]"),
    "template with an unknown character": (lambda c: _sample(c, "template=naïve [MASK:3]"), "'ï'"),
    "template longer than the sequence": (
        lambda c: _sample(c, "template=" + "a" * 30 + "[MASK:5]"),
        "template is 35 tokens",
    ),
    "prompt and template together": (lambda c: _sample(c, "prompt=ROMEO:", "template=[MASK:4]"), "not both"),
    "prompt not shorter than the length": (
        lambda c: _sample(c, "prompt=ROMEO:", "sampling.length=5"),
        "prompt is 6 tokens",
    ),
    "template for an autoregressive model": (
        lambda c: ["sample", f"checkpoint={c.ar}", "template=To be[MASK:3]"],
        "autoregressive",
    ),
    "template for an image model": (
        lambda c: ["sample", f"checkpoint={c.image}", "template=[MASK]"],
        "no prompt or template",
    ),
    # ---- images and evaluation
    "image output of an unknown kind": (
        lambda c: ["sample", f"checkpoint={c.image}", f"sampling.output={c.tmp}/digits.txt"],
        "digits.txt",
    ),
    "image output under a file": (
        lambda c: ["sample", f"checkpoint={c.image}", f"sampling.output={c.file('notes.txt')}/digits.png"],
        "is a file",
    ),
    "image output that is a folder": (
        lambda c: ["sample", f"checkpoint={c.image}", kv("sampling.output", c.dir("digits.png"))],
        "is a directory",
    ),
    "image output where no folder can be made": (
        lambda c: ["sample", f"checkpoint={c.image}", f"sampling.output={NOWHERE}/digits.png"],
        "cannot create",
    ),
    "image trajectory as HTML": (
        lambda c: ["sample", f"checkpoint={c.image}", f"sampling.trajectory={c.tmp}/t.html"],
        "t.html",
    ),
    "image eval on the corrupted training images": (
        lambda c: ["eval", f"checkpoint={c.image}", "eval.split=train", "eval.sample_metrics=false"],
        "eval.split=train",
    ),
    "text eval on a split that does not exist": (lambda c: _eval(c, "eval.split=test"), "'test'"),
    # ---- damaged checkpoints: config.json
    "config.json cut in half": (lambda c: ["sample", kv("checkpoint", c.damaged("config.json", half))], "corrupted"),
    "config.json empty": (lambda c: ["eval", kv("checkpoint", c.damaged("config.json", lambda b: b""))], "corrupted"),
    "config.json removed": (lambda c: ["sample", kv("checkpoint", c.removed("config.json"))], "is missing"),
    "config.json a list": (
        lambda c: ["sample", kv("checkpoint", c.edited("config.json", lambda r: [r]))],
        "not a tokendiff checkpoint record",
    ),
    "config.json config not an object": (
        lambda c: ["eval", kv("checkpoint", c.edited("config.json", lambda r: {**r, "config": 3}))],
        "not a tokendiff checkpoint record",
    ),
    "config.json layer count as a word": (
        lambda c: ["sample", kv("checkpoint", c.config_edit("model.n_layer", "two"))],
        "does not match",
    ),
    "config.json with an unknown key": (
        lambda c: ["sample", kv("checkpoint", c.config_edit("model.n_layr", 2))],
        "n_layr",
    ),
    "config.json value the schema refuses": (
        lambda c: ["sample", kv("checkpoint", c.config_edit("sampling.steps", 0))],
        "sampling.steps=0",
    ),
    "config.json of a wider model": (
        lambda c: ["eval", kv("checkpoint", c.config_edit("model.n_embd", 64))],
        "does not fit",
    ),
    "config.json without the vocabulary size": (
        lambda c: ["sample", kv("checkpoint", c.edited("config.json", lambda r: without(r, "vocab_size")))],
        "trained with None",
    ),
    "config.json step as a word": (
        lambda c: ["sample", kv("checkpoint", c.edited("config.json", lambda r: {**r, "step": "three"}))],
        "step",
    ),
    # ---- damaged checkpoints: weights
    "weights cut in half": (lambda c: ["sample", kv("checkpoint", c.damaged("model.safetensors", half))], "corrupted"),
    "weights empty": (lambda c: ["eval", kv("checkpoint", c.damaged("model.safetensors", lambda b: b""))], "corrupted"),
    "weights that are JSON": (
        lambda c: ["sample", kv("checkpoint", c.damaged("model.safetensors", lambda b: b"{}"))],
        "corrupted",
    ),
    "weights removed": (lambda c: ["sample", kv("checkpoint", c.removed("model.safetensors"))], "is missing"),
    "weights of a wider model": (
        lambda c: ["sample", kv("checkpoint", c.weights_edit("model.safetensors", wider))],
        "does not fit",
    ),
    "weights missing a tensor": (
        lambda c: ["eval", kv("checkpoint", c.weights_edit("model.safetensors", without_one))],
        "missing",
    ),
    # ---- damaged checkpoints: tokenizer and kernel
    "tokenizer cut in half": (
        lambda c: ["sample", kv("checkpoint", c.damaged("char_tokenizer.json", half))],
        "char_tokenizer.json",
    ),
    "tokenizer not UTF-8": (
        lambda c: ["sample", kv("checkpoint", c.damaged("char_tokenizer.json", lambda b: b"\xff\xfe" + b))],
        "char_tokenizer.json",
    ),
    "tokenizer a list": (
        lambda c: ["sample", kv("checkpoint", c.edited("char_tokenizer.json", lambda t: t["chars"]))],
        "char_tokenizer.json",
    ),
    "tokenizer with a repeated character": (
        lambda c: [
            "sample",
            kv(
                "checkpoint",
                c.edited("char_tokenizer.json", lambda t: {**t, "chars": t["chars"][:-1] + t["chars"][:1]}),
            ),
        ],
        "not a tokendiff character tokenizer",
    ),
    "tokenizer one character short": (
        lambda c: [
            "eval",
            kv("checkpoint", c.edited("char_tokenizer.json", lambda t: {**t, "chars": t["chars"][:-1]})),
        ],
        "tokens but the model was trained with",
    ),
    "tokenizer removed": (lambda c: ["sample", kv("checkpoint", c.removed("char_tokenizer.json"))], "no tokenizer"),
    "image tokenizer cut in half": (
        lambda c: ["sample", kv("checkpoint", c.damaged("image_tokenizer.json", half, c.image))],
        "image_tokenizer.json",
    ),
    "scheduler config cut in half": (
        lambda c: ["sample", kv("checkpoint", c.damaged("scheduler_config.json", half))],
        "corrupted",
    ),
    "scheduler config removed": (
        lambda c: ["eval", kv("checkpoint", c.removed("scheduler_config.json"))],
        "is missing",
    ),
    "scheduler config of another vocabulary": (
        lambda c: [
            "sample",
            kv("checkpoint", c.edited("scheduler_config.json", lambda s: {**s, "vocab_size": 9, "mask_token_id": 8})),
        ],
        "describes 8 tokens",
    ),
    "scheduler config without a mask id": (
        lambda c: [
            "sample",
            kv("checkpoint", c.edited("scheduler_config.json", lambda s: without(s, "mask_token_id"))),
        ],
        "mask_token_id=None",
    ),
    "scheduler config eps as a word": (
        lambda c: ["sample", kv("checkpoint", c.edited("scheduler_config.json", lambda s: {**s, "eps": "small"}))],
        "eps",
    ),
    "scheduler config eps above one": (
        lambda c: ["eval", kv("checkpoint", c.edited("scheduler_config.json", lambda s: {**s, "eps": 2.0}))],
        "eps=2.0",
    ),
    # ---- damaged checkpoints: training state (read when a run directory is resolved, and by resume)
    "state.json cut in half": (
        lambda c: ["sample", kv("checkpoint", c.damaged("training_state/state.json", half).parent)],
        "state.json",
    ),
    "state.json a list": (
        lambda c: ["sample", kv("checkpoint", c.edited("training_state/state.json", lambda s: [s]).parent)],
        "state.json",
    ),
    "state.json step as a word": (
        lambda c: [
            "eval",
            kv("checkpoint", c.edited("training_state/state.json", lambda s: {**s, "step": "two"}).parent),
        ],
        "state.json",
    ),
    "resume with state.json missing the step": (
        lambda c: ["train", kv("resume", c.edited("training_state/state.json", lambda s: without(s, "step")))],
        "lacks step",
    ),
    "resume with an RNG state of the wrong type": (
        lambda c: [
            "train",
            kv("resume", c.edited("training_state/state.json", lambda s: {**s, "torch_rng_state": "seed"})),
        ],
        "state.json",
    ),
    "resume with an EMA count as a word": (
        lambda c: ["train", kv("resume", c.edited("training_state/state.json", lambda s: {**s, "ema_updates": "2"}))],
        "state.json",
    ),
    "resume with the optimizer cut in half": (
        lambda c: ["train", kv("resume", c.damaged("training_state/optimizer.safetensors", half))],
        "corrupted",
    ),
    "resume with optimizer moments of another shape": (
        lambda c: ["train", kv("resume", c.weights_edit("training_state/optimizer.safetensors", wider))],
        "optimizer.safetensors",
    ),
    "resume with optimizer tensors of unknown names": (
        lambda c: [
            "train",
            kv(
                "resume", c.weights_edit("training_state/optimizer.safetensors", lambda t: {"bogus": t["state.0.step"]})
            ),
        ],
        "optimizer.safetensors",
    ),
    "resume with raw weights of another shape": (
        lambda c: ["train", kv("resume", c.weights_edit("training_state/model.safetensors", wider))],
        "does not fit",
    ),
    # ---- outputs never replace a run's file, nor a file tokendiff did not write (issue 25)
    "samples over the run's log": (lambda c: _sample(c, f"sampling.output={c.text}/log.jsonl"), "is a file of the run"),
    "samples over the run's log, asked": (
        lambda c: _sample(c, f"sampling.output={c.text}/log.jsonl", "overwrite=true"),
        "is a file of the run",
    ),
    "samples into the final checkpoint": (
        lambda c: _sample(c, f"sampling.output={c.text}/final/s.jsonl"),
        "is a file of the run",
    ),
    "trajectory into a periodic checkpoint": (
        lambda c: _sample(c, f"sampling.trajectory={c.text}/checkpoints/step_000001/t.html"),
        "is a file of the run",
    ),
    "samples into a checkpoint copied out of its run": (
        lambda c: _sample(c, f"sampling.output={shutil.copytree(c.text / 'final', c.tmp / 'ckpt')}/s.jsonl"),
        "is a file of the run",
    ),
    "samples over a JSON lines file of the user": (
        lambda c: _sample(c, kv("sampling.output", c.file("notes.jsonl", '{"a": 1}\n'))),
        "not a file tokendiff wrote",
    ),
    "trajectory over a text file of the user": (
        lambda c: _sample(c, kv("sampling.trajectory", c.file("diary.txt", "dear diary\n"))),
        "not a file tokendiff wrote",
    ),
    "image samples over a picture of the user": (
        lambda c: ["sample", f"checkpoint={c.image}", kv("sampling.output", c.file("photo.png", png()))],
        "not a file tokendiff wrote",
    ),
    "output_dir inside a run's checkpoint": (
        lambda c: _train(c, f"output_dir={c.text}/final/more"),
        "inside the files of the run",
    ),
    # ---- settings that cannot apply to the data or the model (issue 25)
    "ambient objective on a text corpus": (
        lambda c: _train(c, "diffusion.objective=ambient"),
        "diffusion.objective=ambient learns from partly observed data, but text corpora are used whole",
    ),
    "ambient EM on a text corpus": (
        lambda c: _train(c, "diffusion.objective=ambient", "ambient.hard_loss=em"),
        "diffusion.objective=ambient (ambient.hard_loss=em) learns from partly observed data",
    ),
    "naive objective on a text corpus": (
        lambda c: _train(c, "diffusion.objective=naive"),
        "diffusion.objective=naive learns from partly observed data, but text corpora",
    ),
    "ambient objective on images observed whole": (
        lambda c: _train(c, "+experiment=mnist_ambient", *MNIST_TINY, "data.observed_fraction=1.0"),
        "data.observed_fraction=1.0 observes every pixel",
    ),
    "naive objective on images observed whole": (
        lambda c: _train(c, "+experiment=mnist_baseline", *MNIST_TINY, "data.observed_fraction=1"),
        "diffusion.objective=naive learns from partly observed data, but data.observed_fraction=1.0",
    ),
    "uniform noise with a Hugging Face backbone": (
        lambda c: _train(c, "model.arch=hf", "model.hf_config=x", "diffusion.process=uniform"),
        "a Hugging Face backbone (model.arch=hf) is time-agnostic: it can only use diffusion.process=absorbing",
    ),
    "hybrid noise with a Hugging Face backbone told the time": (
        lambda c: _train(
            c, "model.arch=hf", "model.hf_config=x", "diffusion.process=hybrid", "model.time_conditioning=true"
        ),
        "must know t, but a Hugging Face backbone",
    ),
    "uniform noise with the image network": (
        lambda c: _train(c, "+experiment=mnist", *MNIST_TINY, "diffusion.process=uniform"),
        "but model.arch=image_conv is time-agnostic",
    ),
    "the image network told the time": (
        lambda c: _train(c, "+experiment=mnist", *MNIST_TINY, "model.time_conditioning=true"),
        "model.arch=image_conv is a time-agnostic denoiser",
    ),
    "time conditioning neither a bool nor auto": (
        lambda c: _train(c, "model.time_conditioning=sometimes"),
        "model.time_conditioning='sometimes' is unknown",
    ),
    "uniform noise with time conditioning off": (
        lambda c: _train(c, "diffusion.process=uniform", "model.time_conditioning=false"),
        "set model.time_conditioning=true (or auto)",
    ),
    "scheduler file: uniform on a time-agnostic model": (
        lambda c: _sample(
            c, kv("checkpoint", c.edited("scheduler_config.json", lambda d: {**d, "forward_process": "uniform"}))
        ),
        "scheduler_config.json says forward_process=uniform, which needs a time-conditioned model",
    ),
    "scheduler file: hybrid on a time-agnostic model": (
        lambda c: _eval(
            c, kv("checkpoint", c.edited("scheduler_config.json", lambda d: {**d, **HYBRID, "p_uniform": 0.1}))
        ),
        "p_uniform=0.1, which needs a time-conditioned model",
    ),
    "scheduler file: another class": (
        lambda c: _sample(
            c, kv("checkpoint", c.edited("scheduler_config.json", lambda d: {**d, "_class_name": "DDPMScheduler"}))
        ),
        "_class_name='DDPMScheduler' is not a scheduler tokendiff reads",
    ),
    "scheduler file: no class name": (
        lambda c: _sample(c, kv("checkpoint", c.edited("scheduler_config.json", lambda d: without(d, "_class_name")))),
        "_class_name=None",
    ),
    "scheduler file: unknown schedule": (
        lambda c: _eval(
            c, kv("checkpoint", c.edited("scheduler_config.json", lambda d: {**d, "alpha_schedule": "quadratic"}))
        ),
        "scheduler_config.json: alpha_schedule='quadratic'",
    ),
    "scheduler file: sigmas the wrong way round": (
        lambda c: _sample(
            c,
            kv(
                "checkpoint",
                c.edited("scheduler_config.json", lambda d: {**d, "alpha_schedule": "geometric", "sigma_min": 30.0}),
            ),
        ),
        "sigma_max=20.0 must be above sigma_min=30.0",
    ),
    "scheduler file: exclude flag as a word": (
        lambda c: _sample(
            c, kv("checkpoint", c.edited("scheduler_config.json", lambda d: {**d, "exclude_mask_from_uniform": "no"}))
        ),
        "exclude_mask_from_uniform='no'",
    ),
    "scheduler file: eps not a number": (
        lambda c: _sample(c, kv("checkpoint", c.edited("scheduler_config.json", lambda d: {**d, "eps": float("nan")}))),
        "eps=nan is not a finite number",
    ),
    "scheduler file: p_uniform of one": (
        lambda c: _sample(
            c, kv("checkpoint", c.edited("scheduler_config.json", lambda d: {**d, **HYBRID, "p_uniform": 1.0}))
        ),
        "p_uniform=1.0 must lie in [0, 1)",
    ),
    "hybrid gamma whose 2^gamma overflows": (
        lambda c: _train(c, "diffusion.process=hybrid", "diffusion.gamma=2000"),
        "diffusion.gamma=2000.0 must lie in (0, 100]",
    ),
    "scheduler file: gamma whose 2^gamma overflows": (
        lambda c: _sample(
            c, kv("checkpoint", c.edited("scheduler_config.json", lambda d: {**d, **HYBRID, "gamma": 2000}))
        ),
        "gamma=2000 must lie in (0, 100]",
    ),
    # ---- A2D (issue 27)
    "a2d without a model to adapt": (lambda c: _train(c, "model.adapt=a2d"), "training.init_from"),
    "a2d from a masked run": (
        lambda c: _train(c, "model.adapt=a2d", kv("training.init_from", c.text)),
        "is not one (model.causal=false there)",
    ),
    "an autoregressive run taken as a masked one": (
        lambda c: _train(c, kv("training.init_from", c.ar)),
        "add model.adapt=a2d",
    ),
    "budget split of one": (lambda c: _train(c, "model.adapt=a2d", "training.ar_share=1"), "training.ar_share=1.0"),
    # ---- block-wise sampling against the context (issue 25)
    "block wider than the context": (
        lambda c: _sample(c, "sampling.block_size=64", "sampling.length=128"),
        "larger than the model's context of 32 tokens",
    ),
    "block wider than the context with a prompt": (
        lambda c: _sample(c, "sampling.block_size=40", "sampling.length=100", "prompt=ROMEO:"),
        "use sampling.block_size<=32",
    ),
    # ---- several processes from one command (issue 25)
    "no processes": (lambda c: _train(c, "system.num_processes=0"), "system.num_processes=0"),
    "processes as a word": (lambda c: _train(c, "system.num_processes=two"), "num_processes"),
    "more processes than the launcher started": (
        lambda c: (c.monkeypatch.setenv("WORLD_SIZE", "2"), _train(c, "system.num_processes=3"))[1],
        "launcher started 2",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_exit_2_and_changes_no_file(case, runs, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # whatever a case writes to a relative path lands here, under the snapshot
    make_argv, needle = BAD[case]
    argv = make_argv(Case(runs, tmp_path, monkeypatch))
    before = snapshot(tmp_path, runs)
    code, out, err = run(capsys, *argv)
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("train:")]
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("tokendiff") and ": error: " in lines[0] and needle in lines[0], lines[0]
    assert "Traceback" not in out and "Traceback" not in err
    if case.startswith("scheduler file:"):
        assert "diffusion." not in lines[0], lines[0]  # the file's own field names, not config keys
    after = snapshot(tmp_path, runs)
    assert [p for p in before if after.get(p) != before[p]] == []  # every file that was there is there, unchanged


def test_there_are_many_cases():
    assert len(BAD) >= 60


def test_an_unexpected_exception_is_one_line_exit_1_and_a_crash_log(runs, tmp_path, capsys, monkeypatch):
    import tokendiff.samplers.text

    def broken(*args, **kwargs):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(tokendiff.samplers.text, "generate", broken)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the crash log goes to the temporary directory
    code, out, err = run(capsys, "sample", f"checkpoint={runs / 'text'}", "sampling.steps=2")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1, err
    assert "Traceback" not in out + err and "internal error (RuntimeError: boom)" in lines[0]
    (log,) = tmp_path.glob("tokendiff-sample-crash-*.log")
    assert str(log) in lines[0]
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "RuntimeError: boom" in text and "in broken" in text
    assert f"checkpoint={runs / 'text'}" in text  # the argv, for the bug report
