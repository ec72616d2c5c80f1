"""Runs are never lost: a run directory is not overwritten unless asked, resume continues in place,
fresh runs are reproducible, an interrupt saves consistent state (issue: never lose a run)."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

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
    assert main(["train", *TINY, "training.max_iters=2", f"output_dir={run}"]) == 2
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
    assert proc.returncode == 2 and "interrupted at step" in err.decode()
    step = int(err.decode().split("interrupted at step ")[1].split(";")[0])
    saved = tmp_path / "run" / "checkpoints" / f"step_{step:06d}"
    assert (saved / "training_state" / "state.json").read_text().count(f'"step": {step}')
    assert tokendiff("train", f"resume={saved}", f"training.max_iters={step + 2}").wait() == 0
    straight = [*args[:-3], f"training.max_iters={step + 2}", "training.lr_decay_iters=400"]
    assert tokendiff("train", *straight, f"output_dir={tmp_path / 'straight'}").wait() == 0
    for f in ("model.safetensors", "training_state/model.safetensors"):
        assert_same_weights(weights(tmp_path / "straight" / "final" / f), weights(tmp_path / "run" / "final" / f))
