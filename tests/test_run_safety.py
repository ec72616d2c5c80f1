"""Runs are never lost: a run directory is not overwritten unless asked, resume continues in place,
fresh runs are reproducible, an interrupt saves consistent state (issue: never lose a run)."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from test_training import TINY, assert_same_weights, weights
from tokendiff.cli.main import main

REPO = Path(__file__).resolve().parents[1]


def snapshot(root: Path) -> dict:
    """Every file under ``root`` with its bytes: to prove nothing changed."""
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def one_error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip() and not line.startswith("train:")]
    assert len(lines) == 1, lines
    return lines[0]


def test_training_into_an_existing_run_is_refused_and_changes_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "training.max_iters=2", f"output_dir={run}"]) == 0
    before = snapshot(run)
    capsys.readouterr()
    assert main(["train", *TINY, "training.max_iters=2", f"output_dir={run}"]) == 2
    assert "already holds a run" in one_error_line(capsys) and snapshot(run) == before


def test_overwrite_moves_the_old_run_aside(tmp_path):
    run = tmp_path / "run"
    assert main(["train", *TINY, "training.max_iters=2", f"output_dir={run}"]) == 0
    before = snapshot(run)
    assert main(["train", *TINY, "training.max_iters=3", f"output_dir={run}", "overwrite=true"]) == 0
    (aside,) = tmp_path.glob("run.replaced-*")
    assert snapshot(aside) == before  # the old run, whole
    assert weights(run / "final" / "model.safetensors") and not (run / "checkpoints").exists()


def test_empty_file_and_under_a_file_output_dirs_are_refused(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    for value, needle in (
        ("", "output_dir is empty"),
        (tmp_path / "file", "is a file"),
        (tmp_path / "file" / "d", "is a file"),
    ):
        assert main(["train", *TINY, "training.max_iters=1", f"output_dir={value}"]) == 2
        assert needle in one_error_line(capsys)
    assert (tmp_path / "file").read_text() == "x"


def test_resume_continues_in_the_copied_run_and_refuses_another_output_dir(tmp_path, capsys):
    a = tmp_path / "a"
    assert main(["train", *TINY, "training.max_iters=4", "training.checkpoint_interval=2", f"output_dir={a}"]) == 0
    b = tmp_path / "b"
    shutil.copytree(a, b)
    original = snapshot(a)
    assert main(["train", f"resume={b}", "training.max_iters=6"]) == 0
    assert snapshot(a) == original  # the run the copy came from is untouched
    assert weights(b / "final" / "model.safetensors") and (b / "final" / "config.json").read_text().count('"step": 6')
    capsys.readouterr()
    assert main(["train", f"resume={b}", "training.max_iters=8", f"output_dir={tmp_path}/c"]) == 2
    assert "drop output_dir=" in one_error_line(capsys)


def test_two_fresh_runs_of_one_command_end_bitwise_equal(tmp_path):
    # training.seed seeds initialisation too, so the same command gives the same model
    for name in ("x", "y"):
        assert main(["train", *TINY, "model.dropout=0.1", "training.max_iters=3", f"output_dir={tmp_path / name}"]) == 0
    for f in ("model.safetensors", "training_state/model.safetensors", "training_state/optimizer.safetensors"):
        assert_same_weights(weights(tmp_path / "x" / "final" / f), weights(tmp_path / "y" / "final" / f))


def test_final_checkpoint_is_written_before_the_final_evaluation(tmp_path, capsys, monkeypatch):
    from tokendiff.training.trainer import Trainer

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "evaluate", interrupted)
    run = tmp_path / "run"
    assert main(["train", *TINY, "training.max_iters=2", f"output_dir={run}"]) == 130
    assert "interrupted during the final evaluation" in one_error_line(capsys)
    assert weights(run / "final" / "model.safetensors")


def tokendiff(*args, **kwargs):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "tokendiff.cli.main", *args], cwd=REPO, env=env, **kwargs)


def wait_for(path: Path, proc, timeout: float = 120.0) -> None:
    start = time.time()
    while not path.exists():
        assert proc.poll() is None, "the run ended before the checkpoint appeared"
        assert time.time() - start < timeout
        time.sleep(0.05)


def test_a_killed_and_resumed_run_equals_an_uninterrupted_one(tmp_path):
    # SIGKILL: no handler runs. The run resumes from its last periodic checkpoint and must end bitwise
    # equal to a run that was never stopped (seeded initialisation, seeded draws per step, saved RNG).
    args = [*TINY, "model.dropout=0.1", "training.max_iters=30", "training.checkpoint_interval=2"]
    assert tokendiff("train", *args, f"output_dir={tmp_path / 'straight'}").wait() == 0
    proc = tokendiff(
        "train", *args, f"output_dir={tmp_path / 'killed'}", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_for(tmp_path / "killed" / "checkpoints" / "step_000004", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "final").exists()
    assert tokendiff("train", f"resume={tmp_path / 'killed'}").wait() == 0
    for f in ("model.safetensors", "training_state/model.safetensors", "training_state/optimizer.safetensors"):
        assert_same_weights(weights(tmp_path / "straight" / "final" / f), weights(tmp_path / "killed" / "final" / f))


def test_ctrl_c_stops_between_steps_and_saves_that_step(tmp_path):
    # SIGINT is honoured between steps, so the checkpoint it writes holds the weights of the step it is
    # named after: resumed for two more steps it equals a straight run of that many steps (the learning
    # rate schedule is pinned by training.lr_decay_iters, so the two runs use the same rates).
    args = [*TINY, "training.max_iters=400", "training.lr_decay_iters=400", "training.checkpoint_interval=2"]
    proc = tokendiff(
        "train", *args, f"output_dir={tmp_path / 'run'}", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    wait_for(tmp_path / "run" / "checkpoints" / "step_000002", proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "tokendiff train: interrupted at step" in err.decode()
    step = int(err.decode().split("interrupted at step ")[1].split(";")[0])
    saved = tmp_path / "run" / "checkpoints" / f"step_{step:06d}"
    assert (saved / "training_state" / "state.json").read_text().count(f'"step": {step}')
    assert tokendiff("train", f"resume={saved}", f"training.max_iters={step + 2}").wait() == 0
    straight = [*args[:-3], f"training.max_iters={step + 2}", "training.lr_decay_iters=400"]
    assert tokendiff("train", *straight, f"output_dir={tmp_path / 'straight'}").wait() == 0
    for f in ("model.safetensors", "training_state/model.safetensors"):
        assert_same_weights(weights(tmp_path / "straight" / "final" / f), weights(tmp_path / "run" / "final" / f))


# ---- never lose a log, never block a fix (issue 25)


def test_a_start_that_fails_before_any_write_leaves_no_directory(tmp_path, capsys):
    # every check (here: float16 needs a GPU, found when the trainer is built) passes before the
    # run directory is made
    run = tmp_path / "run"
    assert main(["train", *TINY, "training.max_iters=2", "system.dtype=float16", f"output_dir={run}"]) == 2
    assert "float16" in one_error_line(capsys) and not run.exists()


def test_a_start_that_saved_no_checkpoint_does_not_block_the_corrected_command(tmp_path, capsys, monkeypatch):
    # a start that failed after writing its log (a NaN learning rate: the loss is NaN at the second step)
    # holds no run: the corrected command trains there, and the failed start's log is kept beside the new one
    from tokendiff.training import trainer

    run = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr(trainer, "learning_rate", lambda *a: float("nan"))
        assert main(["train", *TINY, "training.max_iters=3", f"output_dir={run}"]) == 2
    assert "training loss became" in one_error_line(capsys)
    failed_log = (run / "log.jsonl").read_text()
    assert failed_log and not (run / "checkpoints").exists() and not (run / "final").exists()
    assert "resume=" not in capsys.readouterr().err
    assert main(["train", *TINY, "training.max_iters=2", f"output_dir={run}"]) == 0
    (kept,) = run.glob("log.*.jsonl")
    assert kept.read_text() == failed_log and (run / "final").is_dir()
    assert '"train/loss"' in (run / "log.jsonl").read_text()


def test_init_from_the_run_itself_with_overwrite_starts_from_its_weights(tmp_path):
    # the weights are read before the old run is moved aside, so the new run starts from them in place
    run = tmp_path / "run"
    assert main(["train", *TINY, "training.max_iters=2", f"output_dir={run}"]) == 0
    old = weights(run / "final" / "model.safetensors")
    argv = [
        "train",
        *TINY,
        "training.max_iters=1",
        "training.learning_rate=1e-12",
        "training.min_lr=0",
        "training.ema=0",
    ]
    assert main([*argv, f"training.init_from={run}", "overwrite=true", f"output_dir={run}"]) == 0
    (aside,) = tmp_path.glob("run.replaced-*")
    assert_same_weights(weights(aside / "final" / "model.safetensors"), old)
    new = weights(run / "final" / "model.safetensors")  # one step at a learning rate of 1e-12: the old weights
    for name, value in old.items():
        torch.testing.assert_close(new[name].float(), value.float(), atol=1e-6, rtol=0, msg=name)


def test_an_output_never_replaces_a_file_of_a_run(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "training.max_iters=2", "training.checkpoint_interval=1", f"output_dir={run}"]) == 0
    before = snapshot(run)
    capsys.readouterr()
    for key, target in (
        ("sampling.output", run / "log.jsonl"),
        ("sampling.output", run / "final" / "samples.jsonl"),
        ("sampling.trajectory", run / "checkpoints" / "step_000001" / "t.txt"),
        ("sampling.trajectory", run / "log.jsonl.html"),  # beside the run's files: allowed, below
    ):
        for extra in ([], ["overwrite=true"]):  # not even when asked
            code = main(["sample", f"checkpoint={run}", "sampling.steps=2", "num_samples=1", f"{key}={target}", *extra])
            if target.name == "log.jsonl.html":
                assert code == 0
                target.unlink()
                capsys.readouterr()
                continue
            assert code == 2 and "is a file of the run" in one_error_line(capsys)
    assert snapshot(run) == before


def test_an_output_replaces_its_own_kind_only_unless_asked(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "training.max_iters=2", f"output_dir={run}"]) == 0
    sample = ["sample", f"checkpoint={run}", "sampling.steps=2", "num_samples=1"]
    notes = tmp_path / "notes.jsonl"
    notes.write_text('{"my": "data"}\n')
    capsys.readouterr()
    assert main([*sample, f"sampling.output={notes}"]) == 2
    assert "not a file tokendiff wrote" in one_error_line(capsys) and notes.read_text() == '{"my": "data"}\n'
    assert main([*sample, f"sampling.output={notes}", "overwrite=true"]) == 0  # asked
    assert '"text"' in notes.read_text()
    assert main([*sample, f"sampling.output={notes}", "seed=1"]) == 0  # a samples file: replaced as before
    for name in ("t.txt", "t.html", "t.gif"):
        mine = tmp_path / name
        assert main([*sample, f"sampling.trajectory={mine}"]) == 0
        assert main([*sample, f"sampling.trajectory={mine}", "seed=1"]) == 0  # its own output: replaced
        other = tmp_path / f"other{mine.suffix}"
        other.write_bytes(b"GIF89a not ours" if name.endswith("gif") else b"my notes\n")
        capsys.readouterr()
        assert main([*sample, f"sampling.trajectory={other}"]) == 2
        assert "not a file tokendiff wrote" in one_error_line(capsys)
