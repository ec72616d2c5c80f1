"""Training: exact resume, atomic checkpoints, no lost work on a bad loss."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from tokendiff.cli.main import main
from tokendiff.errors import TokenDiffError

TINY = [
    "model.n_layer=2",
    "model.n_head=2",
    "model.n_embd=32",
    "model.block_size=32",
    "training.batch_size=4",
    "training.eval_iters=1",
    "training.warmup_iters=2",
    "training.eval_interval=0",
    "training.sample_interval=0",
    "training.log_interval=1",
    "sampling.steps=4",
    "system.device=cpu",
]


def weights(path):
    return load_file(str(path))


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize(
    "extra",
    [
        ["model.dropout=0.1"],
        ["model.causal=true", "training.grad_accum=2"],
        ["training.optimizer=muon", "training.grad_accum=2"],
        ["model.self_conditioning=true"],  # its coin (first pass or zeros) comes from the checkpointed generator
    ],
)
def test_stopped_and_resumed_run_ends_with_the_same_parameters(tmp_path, extra):
    # Run A goes straight through 6 steps, writing a checkpoint at step 3. Run B starts from that
    # checkpoint, on disk, and does steps 4-6. Batches, times, masks and dropout come from seeded state
    # that the checkpoint holds, so B's final raw weights, EMA weights and optimizer moments equal A's.
    # B is a copy of A's run directory without its final checkpoint: resume continues in the copy.
    args = TINY + extra + ["training.max_iters=6", "training.checkpoint_interval=3"]
    assert main(["train", *args, f"output_dir={tmp_path}/a"]) == 0
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "b" / "final")
    assert main(["train", f"resume={tmp_path}/b/checkpoints/step_000003"]) == 0
    a, b = tmp_path / "a" / "final", tmp_path / "b" / "final"
    assert_same_weights(
        weights(a / "training_state/model.safetensors"), weights(b / "training_state/model.safetensors")
    )
    assert_same_weights(weights(a / "model.safetensors"), weights(b / "model.safetensors"))
    assert_same_weights(
        weights(a / "training_state/optimizer.safetensors"), weights(b / "training_state/optimizer.safetensors")
    )
    # ...and the weights did change during steps 4-6 (so the comparison means something).
    step3 = weights(tmp_path / "a/checkpoints/step_000003/training_state/model.safetensors")
    assert any(not torch.equal(step3[k], weights(a / "training_state/model.safetensors")[k]) for k in step3)


def test_checkpoint_directory_layout(tmp_path):
    assert main(["train", *TINY, "training.max_iters=2", f"output_dir={tmp_path}"]) == 0
    final = tmp_path / "final"
    names = {p.name for p in final.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "scheduler_config.json",
        "char_tokenizer.json",
        "training_state",
    } <= names
    sched = json.loads((final / "scheduler_config.json").read_text())
    # diffusers counts the mask inside the vocabulary: 65 characters + the mask, which is the last id
    assert sched["mask_token_id"] == 65 and sched["vocab_size"] == 66
    assert sched["_class_name"] == "TokenDiffusionScheduler" and sched["forward_process"] == "absorbing"
    assert sched["alpha_schedule"] == "log_linear" and sched["eps"] == 1e-3
    cfg = json.loads((final / "config.json").read_text())
    assert cfg["config"]["model"]["n_embd"] == 32 and cfg["step"] == 2
    # no temporary directories are left beside the checkpoints
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_nan_loss_stops_with_a_clear_error_and_keeps_earlier_checkpoints(tmp_path, monkeypatch, capsys):
    from tokendiff.objectives import CleanObjective

    original = CleanObjective.loss_terms
    calls = {"n": 0}

    def poisoned(self, model, x0, generator=None, progress=1.0):
        calls["n"] += 1
        terms = original(self, model, x0, generator, progress)
        return terms * float("nan") if calls["n"] > 4 else terms

    monkeypatch.setattr(CleanObjective, "loss_terms", poisoned)
    code = main(["train", *TINY, "training.max_iters=8", "training.checkpoint_interval=2", f"output_dir={tmp_path}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert "loss became nan at step 4" in err[-1] and "Traceback" not in "\n".join(err)
    assert (tmp_path / "checkpoints" / "step_000004" / "model.safetensors").exists()
    assert not (tmp_path / "final").exists()


def test_learning_rate_schedule_warms_up_then_decays_to_the_floor():
    from tokendiff.training.optimizer import learning_rate

    lrs = [learning_rate(s, 1.0, 0.1, warmup=10, decay_end=100) for s in range(120)]
    assert lrs[0] < lrs[5] < lrs[9] < 1.0  # 1) warmup rises
    assert lrs[10] == pytest.approx(1.0)  # peak right after warmup
    assert all(a >= b for a, b in zip(lrs[10:100], lrs[11:101]))  # 3) cosine never increases
    assert lrs[100] == lrs[119] == 0.1  # 2) floor after the decay


def test_wandb_offline_run_logs_metrics(tmp_path, monkeypatch):
    pytest.importorskip("wandb")  # an optional extra; CI installs it
    monkeypatch.setenv("WANDB_MODE", "offline")
    args = TINY + [
        "training.max_iters=2",
        "logging.wandb=true",
        "logging.name=ci",
        "logging.tags=[a,b]",
        f"output_dir={tmp_path}",
    ]
    assert main(["train", *args]) == 0
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert runs, "wandb wrote no offline run"
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    logged = set().union(*lines)
    assert {
        "train/loss",
        "train/lr",
        "train/grad_norm",
        "train/time_ms",
        "train/tokens_per_s",
        "eval/val_loss",
        "eval/val_ppl",
        "eval/val_bpc",
        "samples",
    } <= logged


def test_interrupted_run_saves_a_checkpoint(tmp_path, monkeypatch):
    # A real Ctrl-C (SIGINT to this process) while step 3 is being computed: the step finishes, the
    # loop stops before step 4, and the checkpoint holds the weights of 4 steps under the number 4.
    import os
    import signal

    from tokendiff.training import trainer as trainer_module

    real = trainer_module.learning_rate

    def interrupt_at_3(step, *a):
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return real(step, *a)

    monkeypatch.setattr(trainer_module, "learning_rate", interrupt_at_3)
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN under nohup / a background job
    with pytest.raises(TokenDiffError, match="interrupted at step 4"):
        from tokendiff.cli.main import cmd_train

        cmd_train([*TINY, "training.max_iters=6", f"output_dir={tmp_path}"])
    state = json.loads((tmp_path / "checkpoints" / "step_000004" / "training_state" / "state.json").read_text())
    assert state["step"] == 4
    assert signal.getsignal(signal.SIGINT) is before  # the handler is put back


def test_eval_keeps_its_own_estimator_whatever_training_used(tmp_path, capsys):
    # A run trained with the count estimator and a large training t_min is evaluated with the whole bound
    # (every time in (0, 1]): no training setting moves it, and eval.t_min only says where the part printed
    # apart (below_t_min_nats_per_token) ends; the same draws give the same bound whatever eval.t_min.
    run = tmp_path / "run"
    args = ["diffusion.estimator=count", "diffusion.t_min=0.3", "training.max_iters=2", f"output_dir={run}"]
    assert main(["train", *TINY, *args]) == 0
    capsys.readouterr()
    results = []
    for extra in ([], ["eval.t_min=0.01"]):
        assert main(["eval", f"checkpoint={run}", "eval.max_windows=4", *extra]) == 0
        results.append(json.loads(capsys.readouterr().out))
    assert results[0]["t_min"] == 1e-3 and results[1]["t_min"] == 0.01
    assert results[0]["nelbo_nats_per_token"] == results[1]["nelbo_nats_per_token"]
    assert results[1]["below_t_min_nats_per_token"] >= results[0]["below_t_min_nats_per_token"] >= 0
    for r in results:
        parts = r["truncated_nelbo_nats_per_token"] + r["below_t_min_nats_per_token"]
        assert parts + r["reconstruction_nats_per_token"] == pytest.approx(r["nelbo_nats_per_token"], abs=1e-9)


def test_two_trainings_with_different_precisions_in_one_process(tmp_path):
    # accelerate's process-wide state refuses a second mixed-precision setting; each Trainer owns its own
    for i, dtype in enumerate(("float32", "bfloat16", "float32")):
        assert (
            main(["train", *TINY, "training.max_iters=1", f"system.dtype={dtype}", f"output_dir={tmp_path / str(i)}"])
            == 0
        )


def test_auto_dtype_is_bfloat16_only_where_bf16_matmul_is_native(monkeypatch):
    from tokendiff.build import resolve_dtype

    cpu = torch.device("cpu")
    for amx, avx512_bf16, expected in ((False, False, "float32"), (True, False, "bfloat16"), (False, True, "bfloat16")):
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        assert resolve_dtype("auto", cpu)[0] == expected
    assert resolve_dtype("float32", cpu)[0] == "float32" and resolve_dtype("bfloat16", cpu)[0] == "bfloat16"


def test_auto_compile_only_for_long_cpu_runs(tmp_path):
    # torch.compile is lazy: building the Trainer decides, nothing is compiled here
    from tokendiff.build import build_training
    from tokendiff.cli.train import trainer_from_config
    from tokendiff.configs import compose_config
    from tokendiff.training.trainer import AUTO_COMPILE_MIN_STEPS

    decided = []
    for steps, setting in ((10, "null"), (AUTO_COMPILE_MIN_STEPS, "null"), (AUTO_COMPILE_MIN_STEPS, "false")):
        cfg = compose_config([*TINY, f"training.max_iters={steps}", f"system.compile={setting}"])
        cfg.output_dir = str(tmp_path / f"{steps}-{setting}")
        parts = build_training(cfg)
        trainer = trainer_from_config(cfg, parts.model, parts.objective, parts.tokenizer, parts.data)
        decided.append(trainer.compiled)
        # Ctrl-C before the compiled first step has run: a line says the key was heard and when it applies
        notice = trainer._interrupt_notice()
        assert (notice is not None and "compil" in notice) == trainer.compiled
    assert decided == [False, True, False]


def test_the_first_ctrl_c_prints_the_notice_and_sets_the_flag(capsys):
    import os
    import signal

    from tokendiff.training.interrupts import interrupts_between_steps

    with interrupts_between_steps(lambda: "heard: stopping after this step") as interrupted:
        assert not interrupted()
        os.kill(os.getpid(), signal.SIGINT)
        assert interrupted()
    assert capsys.readouterr().err.strip() == "heard: stopping after this step"


def test_eval_of_raw_and_ema_weights(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "training.max_iters=3", "training.ema=0.5", f"output_dir={run}"]) == 0
    capsys.readouterr()
    results = {}
    for which in ("ema", "raw"):
        assert main(["eval", f"checkpoint={run}", "eval.max_windows=4", f"eval.weights={which}"]) == 0
        results[which] = json.loads(capsys.readouterr().out)
    assert results["ema"]["weights"] == "ema" and results["raw"]["weights"] == "raw"
    assert results["ema"]["nelbo_nats_per_token"] != results["raw"]["nelbo_nats_per_token"]


@pytest.mark.parametrize(
    "args",
    [
        ["+experiment=shakespeare_char_udlm", "diffusion.estimator=count"],
        ["+experiment=shakespeare_char_ar", "diffusion.estimator=count"],
        ["model.time_conditioning=true", "diffusion.estimator=count"],
    ],
)
def test_count_estimator_where_it_does_not_apply_is_one_line(args, tmp_path, capsys):
    assert main(["train", *args, f"output_dir={tmp_path / 'x'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "diffusion.estimator=count applies to masked diffusion" in err[0]
    assert not (tmp_path / "x").exists()
