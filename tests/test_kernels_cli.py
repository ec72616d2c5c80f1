"""Uniform and hybrid kernels through the same train | sample | eval as masked diffusion."""

import json

import pytest
import torch
from conftest import fit

from test_cli import run
from test_training import TINY
from tokendiff.checkpoint import load_checkpoint
from tokendiff.cli.main import main
from tokendiff.models import Transformer
from tokendiff.objectives import CleanObjective
from tokendiff.processes import HybridKernel, UniformKernel
from tokendiff.samplers import DiffusionSampler, row_generators
from tokendiff.schedules import LogLinearSchedule

KERNEL_ARGS = {
    "uniform": ["+experiment=shakespeare_char_udlm"],
    "hybrid": ["+experiment=shakespeare_char_hybrid", "diffusion.p_uniform=0.1"],
}


@pytest.fixture(scope="module", params=sorted(KERNEL_ARGS))
def kernel_run(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(request.param)
    assert main(["train", *KERNEL_ARGS[request.param], *TINY, "training.max_iters=3", f"output_dir={out}"]) == 0
    return request.param, out


def test_checkpoint_records_the_kernel_and_loading_rebuilds_it(kernel_run):
    name, out = kernel_run
    sched = json.loads((out / "final" / "scheduler_config.json").read_text())
    ckpt = load_checkpoint(out)
    assert ckpt.kernel.name == name and ckpt.config.diffusion.process == name
    assert ckpt.kernel.to_config() == {k: v for k, v in sched.items() if k != "tokendiff_version"}
    assert ckpt.model.time_conditioning


def test_prompted_and_infilled_samples_keep_their_fixed_text(kernel_run, capsys):
    _, out = kernel_run
    code, stdout, err = run(capsys, "sample", f"checkpoint={out}", "prompt=ROMEO:", "num_samples=2", "seed=3")
    assert code == 0, err
    samples = [s.split("-----\n", 1)[1] for s in stdout.split("----- sample ")[1:]]
    assert len(samples) == 2 and all(s.startswith("ROMEO:") for s in samples)
    code, stdout, err = run(capsys, "sample", f"checkpoint={out}", "template=To be[MASK:5] not", "num_samples=1")
    assert code == 0, err
    text = stdout.split("-----\n", 1)[1].rstrip("\n")
    assert text.startswith("To be") and text.endswith(" not") and len(text) == len("To be") + 5 + len(" not")


def test_eval_prints_the_nelbo_with_its_stderr_and_prior(kernel_run, capsys):
    _, out = kernel_run
    code, stdout, err = run(capsys, "eval", f"checkpoint={out}", "eval.max_windows=16", "eval.num_draws=2")
    assert code == 0, err
    result = json.loads(stdout)
    assert result["bits_per_char"] > 0 and result["bits_per_char_stderr"] > 0
    assert 0 <= result["prior_nats_per_token"] < 0.01 and result["t_min"] == 1e-3


def test_edited_scheduler_config_is_what_loading_uses(kernel_run, tmp_path):
    # scheduler_config.json is the one record of the kernel: change it and the loaded kernel follows
    _, out = kernel_run
    import shutil

    ckpt_dir = tmp_path / "ckpt"
    shutil.copytree(out / "final", ckpt_dir)
    path = ckpt_dir / "scheduler_config.json"
    sched = json.loads(path.read_text())
    if sched["_class_name"] == "HybridTokenDiffusionScheduler":
        sched["p_uniform"] = 0.25
        assert load_checkpoint(ckpt_dir).kernel.p_uniform != 0.25
        path.write_text(json.dumps(sched))
        loaded = load_checkpoint(ckpt_dir)
        assert loaded.kernel.p_uniform == 0.25 == loaded.config.diffusion.p_uniform
    else:
        sched["alpha_schedule"] = "cosine"
        path.write_text(json.dumps(sched))
        loaded = load_checkpoint(ckpt_dir)
        assert loaded.kernel.schedule.name == "cosine" == loaded.config.diffusion.schedule


BAD = {
    "uniform with a time-agnostic model": (
        ["train", "diffusion.process=uniform", "model.time_conditioning=false"],
        "model.time_conditioning=true",
    ),
    "hybrid with a time-agnostic model": (
        ["train", "diffusion.process=hybrid", "model.time_conditioning=false"],
        "model.time_conditioning=true",
    ),
    "ambient with uniform noise": (
        ["train", "+experiment=mnist_ambient", "diffusion.process=uniform", "model.time_conditioning=true"],
        "needs diffusion.process=absorbing",
    ),
    "hybrid with a schedule": (
        ["train", "+experiment=shakespeare_char_hybrid", "diffusion.schedule=cosine"],
        "does not apply to diffusion.process=hybrid",
    ),
    "unknown kernel": (["train", "diffusion.process=gaussian"], "diffusion.process='gaussian'"),
    "p_uniform of 1": (["train", "+experiment=shakespeare_char_hybrid", "diffusion.p_uniform=1.0"], "p_uniform=1.0"),
    "autoregressive with a kernel": (
        ["train", "+experiment=shakespeare_char_ar", "diffusion.process=uniform"],
        "no diffusion kernel",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_kernel_and_model_that_cannot_work_is_one_line_and_exit_2(case, tmp_path, capsys):
    argv, needle = BAD[case]
    code, _, err = run(capsys, *argv, f"output_dir={tmp_path}/x")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and needle in lines[0], err
    assert not (tmp_path / "x").exists()


def test_confidence_order_needs_a_kernel_whose_reveals_are_final(kernel_run, capsys):
    _, out = kernel_run
    code, _, err = run(capsys, "sample", f"checkpoint={out}", "sampling.strategy=confidence")
    assert code == 2 and "sampling.strategy=ancestral" in err


@pytest.mark.parametrize("kernel", ["uniform", "hybrid"])
def test_tiny_model_overfits_two_strings(kernel):
    # As the masked model in test_model.py: a 2-layer, 32-wide time-conditioned denoiser learns two 12-token
    # strings, and greedy sampling from noise (4 steps per token) writes one of the two. Its bound falls
    # from ~log 6 = 1.79 nats per token (a model that learned nothing) towards log(2)/12 = 0.058 more slowly
    # and less evenly than with masks: at small t a noise token costs ~log(x_theta(noise) / (t/V)) weighted
    # by ~1/t, so the tail needs a very confident model. Measured after 600 steps on seeds 0-3 (model and
    # draws): uniform 0.91 / 0.35 / 1.05 / 0.54, hybrid 0.29 / 0.33 / 0.27 / 0.22. So < 1.2 (uniform) and
    # < 0.6 (hybrid) separate learning from not learning without hanging on one seed's luck.
    torch.manual_seed(0)
    V, L = 6, 12
    data = torch.tensor([[1] * 12, [4] * 12])
    k = UniformKernel(V, LogLinearSchedule()) if kernel == "uniform" else HybridKernel(V, p_uniform=0.3)
    model = Transformer(V, n_layer=2, n_head=2, n_embd=32, block_size=L, time_conditioning=True)
    objective = CleanObjective(k)
    nelbo = fit(model, objective, data, steps=600)
    assert nelbo < (1.2 if kernel == "uniform" else 0.6), nelbo
    out = DiffusionSampler(model, k, steps=4 * L, temperature=0.0).sample(torch.full((4, L), V), row_generators(0, 4))
    for row in out.tolist():
        assert row in data.tolist()
