"""Sharded training (FSDP2: ``system.fsdp=true``, or ``accelerate launch --use_fsdp``) on 2 CPU processes (gloo),
launched as a user would.

Checks the promises of :mod:`tokendiff.training.fsdp`. Two sharded processes end with the weights, EMA weights and
moments of one process trained on the union of their batches. A resumed sharded run continues exactly, whichever
launcher started either part. One process samples from a sharded run's checkpoint. What sharding cannot honour is
refused in one line, with exit status 2.
"""

import json
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from test_distributed import TEXT, TINY, raw_weights, stderr_lines, tokendiff, torchrun, train_on_the_union

from tokendiff.cli.main import main
from tokendiff.training.ema import EMA
from tokendiff.training.fsdp import eval_shard

# two blocks: two sharded units besides the root (embedding, final norm, head)
SHARDED = [a for a in TINY if not a.startswith("model.n_layer=")] + ["model.n_layer=2", "system.fsdp=true"]


def accelerate_launch(args, tmp_path):
    """``accelerate launch --use_fsdp --fsdp_version 2 --num_processes 2 -m tokendiff <args>``, on a free port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    flags = ["--use_fsdp", "--fsdp_version", "2", "--num_processes", "2", "--main_process_port", str(port)]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *flags, "-m", "tokendiff", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def fsdp_runs(tmp_path_factory):
    """A straight 4-step sharded run (torchrun; evaluation and samples every 2 steps, which every process must
    join), and a pair with dropout: 4 steps straight (tokendiff's launcher), and 2 steps (accelerate launch
    --use_fsdp, no system.fsdp) resumed to 4 (torchrun, which finds system.fsdp=true in the checkpoint)."""
    tmp = tmp_path_factory.mktemp("fsdp")
    corpus = tmp / "lambs.txt"
    corpus.write_text(TEXT)
    common = [f"data.input={corpus}", *SHARDED]
    periodic = ["training.eval_interval=2", "training.sample_interval=2"]
    straight = torchrun(["train", *common, *periodic, "training.max_iters=4", f"output_dir={tmp / 'straight'}"], tmp)
    dropout = [*common, "model.dropout=0.2"]
    run = tokendiff(
        ["train", *dropout, "system.num_processes=2", "training.max_iters=4", f"output_dir={tmp / 'd4'}"], tmp
    )
    assert run.returncode == 0, run.stderr[-3000:]
    unsharded = [a for a in dropout if a != "system.fsdp=true"]  # accelerate's flag selects the sharding
    accelerate_launch(["train", *unsharded, "training.max_iters=2", f"output_dir={tmp / 'halves'}"], tmp)
    resumed = torchrun(["train", f"resume={tmp / 'halves'}", "training.max_iters=4"], tmp)
    return tmp, common, straight, resumed


def test_two_sharded_processes_equal_one_process_on_the_union_of_their_batches(fsdp_runs):
    tmp, common, straight, _ = fsdp_runs
    assert straight.stdout.count("FSDP2, sharded") == 1  # the main process speaks
    # FSDP's reduce-scatter averages the processes' gradients, as DDP does
    model, opt, ema, _, _, _ = train_on_the_union(common, ema=EMA)
    final = tmp / "straight" / "final"
    # the checkpoint holds whole tensors under the plain model's names: the shards were gathered
    for launched, reference in (
        (raw_weights(tmp / "straight"), model),
        (load_file(str(final / "model.safetensors")), ema.module),
    ):
        expected = reference.state_dict()
        assert launched.keys() == expected.keys()
        for name, value in expected.items():
            # the same tolerance as one process in tests/test_distributed.py: only the order of sums differs
            torch.testing.assert_close(launched[name], value, atol=1e-6, rtol=1e-5, msg=name)
    moments = load_file(str(final / "training_state" / "optimizer.safetensors"))
    params = [p for group in opt.param_groups for p in group["params"]]
    for index, p in enumerate(params):  # numbered as an unsharded run numbers them
        torch.testing.assert_close(moments[f"state.{index}.exp_avg"], opt.state[p]["exp_avg"], atol=1e-6, rtol=1e-5)
    state = json.loads((final / "training_state" / "state.json").read_text())
    assert state["world_size"] == 2 and state["rank_weights_sha256"] is None  # shards differ: nothing to compare
    records = [json.loads(line) for line in (tmp / "straight" / "log.jsonl").read_text().splitlines()]
    assert sum("eval/val_loss" in r for r in records) == 2 and sum("samples" in r for r in records) == 2


def test_resumed_sharded_run_continues_exactly(fsdp_runs):
    tmp, _, _, resumed = fsdp_runs
    assert resumed.stdout.count("resumed from") == 1 and "FSDP2, sharded" in resumed.stdout
    straight, halves = tmp / "d4" / "final", tmp / "halves" / "final"
    for name in ("training_state/model.safetensors", "model.safetensors", "training_state/optimizer.safetensors"):
        a, b = load_file(str(straight / name)), load_file(str(halves / name))
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key)
    # dropout made each process's RNG stream matter: without it the run ends elsewhere
    key = "blocks.0.mlp.down.weight"
    assert not torch.equal(raw_weights(tmp / "d4")[key], raw_weights(tmp / "straight")[key])


def test_one_process_samples_from_a_sharded_run(fsdp_runs):
    tmp, _, _, _ = fsdp_runs
    proc = tokendiff(["sample", f"checkpoint={tmp / 'straight'}", "num_samples=2", "sampling.steps=4"], tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("----- sample") == 2


def test_evaluation_is_split_only_where_every_process_makes_as_many_forward_calls():
    # 8 windows in batches of 4 on 2 processes: 4 windows each, one batch each
    assert eval_shard(8, 4, 1, 2) == (1, 2)
    # 3 windows in batches of 1: windows 0, 2 on process 0 (2 calls) and 1 on process 1 (1 call); unsplit instead
    assert eval_shard(3, 1, 1, 2) == (0, 1)


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["training.optimizer=muon"], "training.optimizer=muon"),
        (["training.lora.r=8", "training.init_from=nowhere"], "training.lora.r=8"),
        (["system.compile=true"], "system.compile=true"),
        (["model.arch=image_conv"], "model.arch=image_conv"),
        (["model.self_conditioning=true"], "model.self_conditioning=true"),
        (["system.dtype=float16"], "system.dtype=float16"),
        ([], "this run has one"),  # one process: nothing to shard across
    ],
)
def test_what_sharding_cannot_honour_is_one_line_and_exit_2(tmp_path, capsys, extra, needle):
    corpus = tmp_path / "lambs.txt"
    corpus.write_text(TEXT)
    code = main(["train", *SHARDED, f"data.input={corpus}", *extra, f"output_dir={tmp_path / 'run'}"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "run").exists()


def test_accelerate_launch_use_fsdp_is_checked_as_system_fsdp(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what accelerate launch --use_fsdp sets
    unsharded = [a for a in SHARDED if a != "system.fsdp=true"]
    assert main(["train", *unsharded, "training.optimizer=muon", f"output_dir={tmp_path / 'a'}"]) == 2
    assert "accelerate launch --use_fsdp" in capsys.readouterr().err
    monkeypatch.setenv("FSDP_OFFLOAD_PARAMS", "true")
    assert main(["train", *unsharded, f"output_dir={tmp_path / 'b'}"]) == 2
    assert "--fsdp_offload_params" in capsys.readouterr().err


def test_a_refusal_ends_a_num_processes_run_before_any_worker(tmp_path):
    args = ["train", *SHARDED, "system.num_processes=2", "training.optimizer=muon", f"output_dir={tmp_path / 'r'}"]
    proc = tokendiff(args, tmp_path)
    lines = stderr_lines(proc.stderr)
    assert proc.returncode == 2 and len(lines) == 1 and "training.optimizer=muon" in lines[0], proc.stderr[-2000:]
