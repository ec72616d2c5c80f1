"""Multi-process training on CPUs (gloo), launched as a user would: ``torchrun -m tokendiff train``.

Checks the promises of :mod:`tokendiff.training.trainer` for several processes: each process draws its
own batches, times and masks; the averaged gradient equals one process training on the union of the
processes' batches; both processes end with bitwise-equal weights; one set of checkpoints and one log
are written, by the main process; and a resumed run continues exactly.
"""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from tokendiff.build import build_training
from tokendiff.configs import compose_config
from tokendiff.training.optimizer import learning_rate, param_groups
from tokendiff.training.step_rng import step_generator

TEXT = "".join(f"{i} little lambs went to the meadow; {i * 7 % 13} came back.\n" for i in range(400))
TINY = [
    "model.n_layer=1",
    "model.n_embd=32",
    "model.n_head=2",
    "model.block_size=16",
    "training.batch_size=4",
    "training.warmup_iters=1",
    "training.eval_interval=0",
    "training.sample_interval=0",
    "training.checkpoint_interval=2",
    "training.eval_iters=1",
    "training.log_interval=1",
    "system.device=cpu",
    "system.compile=false",
    "system.threads=1",
    "system.dtype=float32",  # the one-process reference is float32; auto is bfloat16 on CPUs with AVX512-BF16/AMX
    "sampling.steps=2",
]


def torchrun(args, tmp_path, ok=True):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.run(cmd + ["-m", "tokendiff", *args], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    if ok:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory):
    """A straight 4-step run on 2 processes, and a 2-step run resumed to 4 steps (both 2 processes); the
    resumed pair has dropout, so that every process's own RNG stream must be restored."""
    tmp = tmp_path_factory.mktemp("ddp")
    corpus = tmp / "lambs.txt"
    corpus.write_text(TEXT)
    common = [f"data.input={corpus}", *TINY]
    torchrun(["train", *common, "training.max_iters=4", f"output_dir={tmp / 'straight'}"], tmp)
    dropout = [*common, "model.dropout=0.2"]
    torchrun(["train", *dropout, "training.max_iters=4", f"output_dir={tmp / 'straight_dropout'}"], tmp)
    torchrun(["train", *dropout, "training.max_iters=2", f"output_dir={tmp / 'halves'}"], tmp)
    resumed = torchrun(["train", f"resume={tmp / 'halves'}", "training.max_iters=4"], tmp)
    return tmp, common, resumed


def raw_weights(run):
    return load_file(str(run / "final" / "training_state" / "model.safetensors"))


def test_two_processes_write_one_run(two_process_runs):
    tmp, _, _ = two_process_runs
    run = tmp / "straight"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_000002"]
    assert not [p for p in run.rglob(".*")]  # no temporary or aside directories left behind
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "train/loss" in r] == [1, 2, 3, 4]  # each step logged once
    assert sum("eval/val_loss" in r for r in records) == 1 and sum("samples" in r for r in records) == 1
    state = json.loads((run / "final" / "training_state" / "state.json").read_text())
    assert state["world_size"] == 2 and state["step"] == 4
    hashes = state["rank_weights_sha256"]
    assert len(hashes) == 2 and hashes[0] == hashes[1]  # both processes hold bitwise-equal weights
    assert len(state["rank_torch_rng_states"]) == 2


def train_on_the_union(common: list[str], steps: int = 4, ema=None):
    """One process trained for ``steps`` on the union of what 2 processes draw, by the trainer's own rules (the
    seeded initialisation, the draws, the learning rate, clipping): what 2 data-parallel or sharded processes must
    equal, since both average the processes' gradients. Returns the model, optimizer, EMA (``ema``: its class, or
    None), the training split, the training section and the sequence length."""
    cfg = compose_config([*common, f"training.max_iters={steps}"])
    parts = build_training(cfg)  # the same seeded initialisation as the launched run
    model, objective, split, t = parts.model, parts.objective, parts.data.split("train"), cfg.training
    opt = torch.optim.AdamW(
        param_groups(model, t.weight_decay), lr=t.learning_rate, betas=(t.beta1, t.beta2), fused=True
    )
    average = ema(model, t.ema) if ema is not None else None
    seq_len = cfg.model.block_size
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, t.learning_rate, t.min_lr, t.warmup_iters, t.max_iters)
        losses = []
        for rank in range(2):  # what each process draws, by the trainer's own rule
            x = split.batch(t.batch_size, seq_len, step_generator(t.seed, step, 0, 0, "cpu", rank, 2))
            g = step_generator(t.seed, step, 0, 1, "cpu", rank, 2)
            losses.append(objective.loss_terms(model, x, g).mean())
        torch.stack(losses).mean().backward()  # the processes' gradients, averaged
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if average is not None:
            average.update(model)
    return model, opt, average, split, t, seq_len


def test_two_processes_equal_one_process_on_the_union_of_their_batches(two_process_runs):
    tmp, common, _ = two_process_runs
    model, _, _, split, t, seq_len = train_on_the_union(common)
    launched = raw_weights(tmp / "straight")
    reference = model.state_dict()
    assert set(launched) == set(reference)
    for name, value in reference.items():
        torch.testing.assert_close(launched[name], value, atol=2e-5, rtol=1e-4, msg=name)
    # and the two processes did not see the same data: one process's batch alone gives other weights
    x0 = split.batch(t.batch_size, seq_len, step_generator(t.seed, 0, 0, 0, "cpu", 0, 2))
    x1 = split.batch(t.batch_size, seq_len, step_generator(t.seed, 0, 0, 0, "cpu", 1, 2))
    assert not torch.equal(x0, x1)


def test_resumed_two_process_run_continues_exactly(two_process_runs):
    tmp, _, resumed = two_process_runs
    assert "resumed from" in resumed.stdout and resumed.stdout.count("resumed from") == 1  # main process only
    straight, halves = raw_weights(tmp / "straight_dropout"), raw_weights(tmp / "halves")
    for name in straight:
        assert torch.equal(straight[name], halves[name]), name
    # dropout made the draws matter: without it the run ends elsewhere
    name = "blocks.0.mlp.down.weight"
    assert not torch.equal(straight[name], raw_weights(tmp / "straight")[name])


def test_an_error_of_the_main_process_stops_every_process_with_one_line(two_process_runs):
    tmp, common, _ = two_process_runs
    proc = torchrun(["train", *common, f"output_dir={tmp / 'straight'}"], tmp, ok=False)  # holds a run
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("tokendiff train: error:")]
    assert len(errors) == 1 and "already holds a run" in errors[0], proc.stderr[-2000:]
    assert "internal error" not in proc.stderr


# ---- tokendiff's own launcher: `tokendiff train ... system.num_processes=2` (issue 25)


def tokendiff(args, tmp_path, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "tokendiff", *args], capture_output=True, text=True, cwd=tmp_path, timeout=300, **kwargs
    )


def stderr_lines(stderr: str) -> list[str]:
    """stderr without the progress bar's redrawn line."""
    return [line for line in stderr.replace("\r", "\n").splitlines() if line.strip() and not line.startswith("train:")]


def test_num_processes_trains_as_torchrun_does(two_process_runs):
    tmp, common, _ = two_process_runs
    run = tmp / "launched"
    proc = tokendiff(["train", *common, "training.max_iters=4", "system.num_processes=2", f"output_dir={run}"], tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("on 2 processes") == 1 and proc.stdout.count("saved ") == 1  # the main process speaks
    assert stderr_lines(proc.stderr) == [], proc.stderr[-3000:]  # no warning per process, no traceback
    launched, straight = raw_weights(run), raw_weights(tmp / "straight")
    for name in straight:
        torch.testing.assert_close(launched[name], straight[name], atol=1e-6, rtol=1e-5, msg=name)


def test_user_errors_of_a_num_processes_run_are_one_line_and_exit_2(two_process_runs):
    tmp, common, _ = two_process_runs
    args = ["train", *common, "training.max_iters=2", "system.num_processes=2"]
    for extra, needle in (
        (["sampling.remask_eta=5", f"output_dir={tmp / 'e1'}"], "remask_eta"),  # the config, before any worker
        ([f"output_dir={tmp / 'straight'}"], "already holds a run"),  # the run directory, before any worker
        ([f"training.init_from={tmp / 'nowhere'}", f"output_dir={tmp / 'e3'}"], "nowhere"),  # found by the workers
    ):
        proc = tokendiff([*args, *extra], tmp)
        lines = stderr_lines(proc.stderr)
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
        assert lines[0].startswith("tokendiff train: error:") and needle in lines[0], lines
    assert not (tmp / "e1").exists() and not (tmp / "e3").exists()  # nothing made for a run that did not start


def test_torchrun_prints_a_user_error_once(two_process_runs):
    tmp, common, _ = two_process_runs
    proc = torchrun(["train", *common, "sampling.remask_eta=5", f"output_dir={tmp / 'e4'}"], tmp, ok=False)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("tokendiff train: error:")]
    assert proc.returncode != 0 and len(errors) == 1 and "remask_eta" in errors[0], proc.stderr[-2000:]


def test_ctrl_c_of_a_num_processes_run_saves_a_checkpoint_and_exits_130(two_process_runs):
    import signal
    import time

    tmp, common, _ = two_process_runs
    run = tmp / "interrupted"
    cmd = [sys.executable, "-m", "tokendiff", "train", *common, "training.max_iters=100000", "system.num_processes=2"]
    proc = subprocess.Popen([*cmd, f"output_dir={run}"], cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    start = time.time()
    while not (run / "checkpoints" / "step_000002").exists():
        assert proc.poll() is None and time.time() - start < 120, proc.communicate()[1][-2000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # the launcher hands it to each worker once
    _, err = proc.communicate(timeout=120)
    lines = stderr_lines(err.decode())
    assert proc.returncode == 130 and len(lines) == 1, err.decode()[-3000:]
    assert lines[0].startswith("tokendiff train: interrupted at step "), lines
    step = int(lines[0].split("interrupted at step ")[1].split(";")[0])
    state = json.loads((run / "checkpoints" / f"step_{step:06d}" / "training_state" / "state.json").read_text())
    assert state["step"] == step and state["world_size"] == 2
    # resumed, the run keeps its two processes (system.num_processes is part of its config)
    resumed = tokendiff(["train", f"resume={run}", f"training.max_iters={step + 1}"], tmp)
    assert resumed.returncode == 0 and resumed.stdout.count("on 2 processes") == 1, resumed.stderr[-3000:]
