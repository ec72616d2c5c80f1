"""Autoregressive-to-diffusion adaptation (A2D, ``model.adapt=a2d``) of tokendiff's transformer: the causal
model's weights land where they should, the adapted run trains, samples, evaluates and resumes exactly,
and the inputs that cannot mean an adaptation are one line."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from test_training import TINY as TRAINING_TINY

from tokendiff.cli.main import main
from tokendiff.models.transformer import Transformer

TINY = [*(a for a in TRAINING_TINY if not a.startswith("training.batch_size")), "training.batch_size=8"]


def _pair(logit_shift: bool):
    torch.manual_seed(0)
    ar = Transformer(vocab_size=11, n_layer=2, n_head=2, n_embd=16, block_size=12, causal=True).eval()
    adapted = Transformer(vocab_size=11, n_layer=2, n_head=2, n_embd=16, block_size=12, logit_shift=logit_shift)
    adapted.load_state_dict(ar.state_dict())
    return ar, adapted.eval()


@pytest.mark.parametrize("logit_shift", [False, True])
def test_the_adapted_model_under_a_causal_mask_is_the_autoregressive_model(logit_shift):
    ar, adapted = _pair(logit_shift)
    x = torch.randint(0, 11, (3, 12), generator=torch.Generator().manual_seed(1))  # no masks
    adapted.attention_reach = 0  # causal: the first step of training.attention_anneal_iters
    with torch.no_grad():
        want, got = ar(x), adapted(x)  # (B, L, V)
    if logit_shift:  # Dream: token i is read from position i - 1, where the AR model predicts it
        torch.testing.assert_close(got[:, 1:], want[:, :-1], rtol=0, atol=1e-6)
        torch.testing.assert_close(got[:, 0], want[:, 0], rtol=0, atol=1e-6)
    else:
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_the_adapted_model_sees_the_future_once_attention_is_opened():
    ar, adapted = _pair(True)
    x = torch.randint(0, 11, (1, 12), generator=torch.Generator().manual_seed(2))
    y = x.clone()
    y[0, -1] = (x[0, -1] + 1) % 11
    with torch.no_grad():
        adapted.attention_reach = 3  # position i sees keys up to i + 3
        near = (adapted(x) - adapted(y))[0].abs().amax(-1)  # (L,): which positions the last token reaches
        adapted.attention_reach = None  # bidirectional
        full = (adapted(x) - adapted(y))[0].abs().amax(-1)
    # two layers reaching 3 ahead each: the output at j sees position 11 iff j + 6 >= 11, i.e. j >= 5; with the
    # shift, position i's logits are the output at i - 1, so positions 6..11 of the logits see the last token
    assert torch.all(near[:6] == 0) and torch.all(near[6:] > 0)
    assert torch.all(full > 0)


def assert_resumed_run_ends_the_same(tmp_path, args, step: int):
    """Run ``args`` straight through in ``a``; resume a copy of it (``b``) from its checkpoint at ``step``: both
    end with the same sampling weights, raw weights and optimizer moments."""
    assert main(["train", *args, f"output_dir={tmp_path}/a"]) == 0
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "b" / "final")
    assert main(["train", f"resume={tmp_path}/b/checkpoints/step_{step:06d}"]) == 0
    for name in ("model.safetensors", "training_state/model.safetensors", "training_state/optimizer.safetensors"):
        a, b = load_file(str(tmp_path / "a/final" / name)), load_file(str(tmp_path / "b/final" / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def _ar_run(tmp_path, steps=20):
    run = tmp_path / "ar"
    assert main(["train", *TINY, "model.causal=true", f"training.max_iters={steps}", f"output_dir={run}"]) == 0
    return run


def test_an_autoregressive_run_adapted_trains_samples_evaluates_and_trains_its_mask_row(tmp_path, capsys):
    ar = _ar_run(tmp_path)
    run = tmp_path / "a2d"
    args = [*TINY, "model.adapt=a2d", "model.logit_shift=true", f"training.init_from={ar}", "training.max_iters=30"]
    assert main(["train", *args, "training.attention_anneal_iters=10", f"output_dir={run}"]) == 0
    records = map(json.loads, (run / "log.jsonl").read_text().splitlines())
    losses = [r["train/loss"] for r in records if "train/loss" in r]
    assert len(losses) == 30 and sum(losses[-5:]) < sum(losses[:5])  # it learns the masked objective
    start, end = load_file(str(ar / "final/model.safetensors")), load_file(str(run / "final/model.safetensors"))
    V = start["head.weight"].shape[0]
    assert not torch.equal(start["embed.weight"][V], end["embed.weight"][V])  # the mask row (id V) was trained
    saved = json.loads((run / "final/config.json").read_text())
    assert saved["config"]["model"]["adapt"] == "a2d" and saved["config"]["model"]["logit_shift"] is True
    capsys.readouterr()
    assert main(["sample", f"checkpoint={run}", "num_samples=2", "sampling.steps=8", "prompt=RO"]) == 0
    out = capsys.readouterr().out
    assert out.count("----- sample") == 2 and "RO" in out
    cached = ["sample", f"checkpoint={run}", "sampling.block_size=8", "sampling.kv_cache=dual", "sampling.length=32"]
    assert main(cached) == 2  # the shift reads the previous position's output, which a cached tail call lacks
    assert "without model.logit_shift" in capsys.readouterr().err
    assert main(["eval", f"checkpoint={run}", "eval.num_draws=2", "eval.max_windows=4", "eval.batch_size=4"]) == 0
    assert json.loads(capsys.readouterr().out)["nelbo_nats_per_token"] > 0


def test_an_adapted_run_resumed_in_its_annealing_ends_with_the_same_weights(tmp_path):
    ar = _ar_run(tmp_path, steps=4)
    args = [*TINY, "model.adapt=a2d", f"training.init_from={ar}", "training.max_iters=6", "model.dropout=0.1"]
    args += ["training.attention_anneal_iters=5", "training.checkpoint_interval=3"]
    assert_resumed_run_ends_the_same(tmp_path, args, step=3)


@pytest.mark.parametrize(
    "extra, says",
    [
        (["model.adapt=a2d"], "add training.init_from"),
        (["model.adapt=a2d", "model.causal=true", "training.init_from=x"], "model.causal=false"),
        (["model.logit_shift=true", "model.causal=true"], "model.logit_shift=true"),
        (["training.attention_anneal_iters=10"], "needs model.adapt=a2d"),
        (["model.adapt=ar2diff"], "model.adapt='ar2diff' is unknown"),
    ],
)
def test_settings_that_cannot_mean_an_adaptation_are_one_line(tmp_path, capsys, extra, says):
    assert main(["train", *TINY, *extra, f"output_dir={tmp_path}/run"]) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and "\n" not in err


def test_init_from_that_is_not_what_the_adaptation_needs_is_one_line(tmp_path, capsys):
    ar = _ar_run(tmp_path, steps=2)
    masked = tmp_path / "masked"
    assert main(["train", *TINY, "training.max_iters=2", f"output_dir={masked}"]) == 0
    other = tmp_path / "other_tokenizer"  # the AR run as if trained with another tokenizer
    shutil.copytree(ar, other)
    record = json.loads((other / "final/config.json").read_text())
    (other / "final/config.json").write_text(json.dumps({**record, "tokenizer_fingerprint": "another"}))
    capsys.readouterr()
    cases = [
        (["model.adapt=a2d", f"training.init_from={masked}"], "is not one"),  # adapting a model that is not causal
        ([f"training.init_from={ar}"], "add model.adapt=a2d"),  # an AR model taken as it is
        (["model.adapt=a2d", f"training.init_from={ar}", "model.n_embd=64"], "do not fit"),  # another size
        (["model.adapt=a2d", f"training.init_from={other}"], "another tokenizer"),
    ]
    for extra, says in cases:
        assert main(["train", *TINY, "training.max_iters=2", *extra, f"output_dir={tmp_path}/x"]) == 2, extra
        err = capsys.readouterr().err.strip()
        assert says in err and "\n" not in err, (extra, err)


def test_one_command_trains_the_autoregressive_stage_then_adapts_it(tmp_path, capsys):
    run = tmp_path / "run"
    args = [*TINY, "model.adapt=a2d", "model.logit_shift=true", "training.ar_share=0.5", "training.max_iters=20"]
    assert main(["train", *args, "training.attention_anneal_iters=4", f"output_dir={run}"]) == 0
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    lr = {r["step"]: r["train/lr"] for r in records if "train/lr" in r}
    assert lr[1] == lr[11] and lr[10] < lr[3]  # each stage warms up and decays on its own (steps 1-10, 11-20)
    loss = {r["step"]: r["train/loss"] for r in records if "train/loss" in r}
    assert loss[11] > loss[10]  # the masked objective starts above where next-token prediction ended
    capsys.readouterr()
    assert main(["eval", f"checkpoint={run}", "eval.num_draws=2", "eval.max_windows=4", "eval.batch_size=4"]) == 0
    assert json.loads(capsys.readouterr().out)["prior_nats_per_token"] > 0  # scored as masked diffusion


@pytest.mark.parametrize("at", [2, 4, 6])  # inside the autoregressive stage, at the switch, inside the adaptation
def test_a_one_command_run_resumed_in_either_stage_ends_with_the_same_weights(tmp_path, at):
    args = [*TINY, "model.adapt=a2d", "model.logit_shift=true", "training.ar_share=0.5", "training.max_iters=8"]
    args += ["training.checkpoint_interval=2", "model.dropout=0.1", "training.attention_anneal_iters=2"]
    assert_resumed_run_ends_the_same(tmp_path, args, step=at)


@pytest.mark.parametrize(
    "extra, says",
    [
        (["training.ar_share=0.5"], "needs model.adapt=a2d"),
        (["model.adapt=a2d", "training.ar_share=0.5", "training.init_from=x"], "without training.init_from"),
        (["model.adapt=a2d", "training.ar_share=0.5", "training.max_minutes=5"], "drop training.max_minutes"),
        (["model.adapt=a2d", "training.ar_share=1.0"], "training.ar_share=1.0 must lie in [0, 1)"),
    ],
)
def test_a_budget_split_that_cannot_apply_is_one_line(tmp_path, capsys, extra, says):
    assert main(["train", *TINY, *extra, f"output_dir={tmp_path}/run"]) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and "\n" not in err
