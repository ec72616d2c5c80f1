"""LoRA adapters (training.lora, peft): only the adapters train, a checkpoint holds the adapter and a checked
reference to its base, it samples and evaluates unmerged, resumes exactly, and merges into a full checkpoint."""

import copy
import json
import shutil
import sys

import pytest
import torch
from safetensors.torch import save_file

pytest.importorskip("peft")

from test_training import TINY as TRAINING_TINY  # noqa: E402
from test_training import assert_same_weights, weights  # noqa: E402
from tokendiff.checkpoint import load_checkpoint  # noqa: E402
from tokendiff.cli.main import main  # noqa: E402
from tokendiff.training import lora  # noqa: E402

# test_training.py's tiny run, from the first step at the full learning rate and in float32
TINY = [a for a in TRAINING_TINY if not a.startswith("training.warmup_iters=")]
TINY += ["training.warmup_iters=0", "system.dtype=float32"]
# a large rate, so that 3 steps move the adapters far from their start (B = 0) and the comparisons mean something
LORA = ["training.lora.r=4", "training.lora.dropout=0.1", "training.learning_rate=0.02", "training.min_lr=0.001"]


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A base run (3 steps), and a LoRA run on it (6 steps, a checkpoint at step 3)."""
    tmp = tmp_path_factory.mktemp("lora")
    assert main(["train", *TINY, "training.max_iters=3", f"output_dir={tmp / 'base'}"]) == 0
    args = [*TINY, *LORA, "training.max_iters=6", "training.checkpoint_interval=3"]
    assert main(["train", *args, f"training.init_from={tmp / 'base'}", f"output_dir={tmp / 'lora'}"]) == 0
    return tmp


def test_a_lora_checkpoint_holds_the_adapter_in_peft_format_and_a_checked_reference_to_its_base(runs):
    final = runs / "lora" / "final"
    names = {p.name for p in final.iterdir()}
    assert "adapter" in names and "model.safetensors" not in names  # the base is referenced, not copied
    adapter = weights(final / "adapter" / "adapter_model.safetensors")
    assert adapter and all(k.startswith("base_model.model.blocks.") and ".lora_" in k for k in adapter)
    config = json.loads((final / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4
    assert sorted(config["target_modules"]) == ["down", "gate_up", "proj", "qkv"]  # the transformer's default
    record = json.loads((final / "config.json").read_text())["lora"]
    assert record["base_checkpoint"] == str((runs / "base" / "final").resolve())
    base = load_checkpoint(runs / "base").model
    assert record["base_sha256"] == lora.base_sha256(base)
    # peft loads it onto the base as it is (PeftModel.save_pretrained's names)
    from peft import PeftModel

    x = torch.randint(0, 65, (2, 32), generator=torch.Generator().manual_seed(0))
    ours = load_checkpoint(runs / "lora").model
    theirs = PeftModel.from_pretrained(base, str(final / "adapter")).eval()
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))


def test_only_the_adapters_train(runs, tmp_path):
    # the trainer as `tokendiff train` builds it: every base tensor is bitwise the base checkpoint's after three
    # steps, every adapter tensor moved, and the optimizer holds the adapters and nothing else
    from tokendiff.build import build_training
    from tokendiff.cli.train import trainer_from_config
    from tokendiff.configs import compose_config

    cfg = compose_config([*TINY, *LORA, "training.max_iters=3", f"training.init_from={runs / 'base'}"])
    cfg.output_dir = str(tmp_path / "run")
    parts = build_training(cfg)
    trainer = trainer_from_config(cfg, parts.model, parts.objective, parts.tokenizer, parts.data)
    model = trainer.raw_model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    adapters = {k for k in before if ".lora_" in k}
    assert adapters and all(p.requires_grad == (".lora_" in n) for n, p in model.named_parameters())
    optimized = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert optimized == {id(p) for n, p in model.named_parameters() if ".lora_" in n}
    for _ in range(3):
        trainer.train_step()
    after = model.state_dict()
    for k in before.keys() - adapters:
        assert torch.equal(before[k], after[k]), k
    assert all(not torch.equal(before[k], after[k]) for k in adapters if ".lora_B" in k)
    assert_same_weights(lora.base_state(model), weights(runs / "base" / "final" / "model.safetensors"))
    # the EMA copy shares the frozen base rather than holding a second copy of it
    ema_base = {id(p) for n, p in trainer.ema.module.named_parameters() if ".lora_" not in n}
    assert ema_base == {id(p) for n, p in model.named_parameters() if ".lora_" not in n}


def test_merged_and_unmerged_give_the_same_logits(runs, tmp_path, capsys):
    unmerged = load_checkpoint(runs / "lora")
    x = torch.randint(0, 66, (3, 32), generator=torch.Generator().manual_seed(1))  # the mask (65) included
    merged_in_memory = lora.merge(copy.deepcopy(unmerged.model))
    assert main(["merge", f"checkpoint={runs / 'lora'}", f"output_dir={tmp_path / 'merged'}"]) == 0
    capsys.readouterr()
    merged = load_checkpoint(tmp_path / "merged")
    assert not lora.is_lora(merged.model) and merged.config.training.lora.r == 0
    base = load_checkpoint(runs / "base").model
    with torch.no_grad():
        reference = unmerged.model(x)
        torch.testing.assert_close(merged_in_memory(x), reference, atol=1e-5, rtol=0)
        torch.testing.assert_close(merged.model(x), reference, atol=1e-5, rtol=0)
        assert (base(x) - reference).abs().max() > 1e-3  # the adapter does change the model
    # the merged checkpoint is an ordinary one: it samples, and a second merge has nothing to do
    assert main(["sample", f"checkpoint={tmp_path / 'merged'}", "num_samples=1", "sampling.length=16"]) == 0
    capsys.readouterr()
    assert main(["merge", f"checkpoint={tmp_path / 'merged'}", f"output_dir={tmp_path / 'again'}"]) == 2
    assert "nothing to merge" in one_error_line(capsys)


def test_stopped_and_resumed_lora_run_ends_with_the_same_adapters(runs, tmp_path):
    # as tests/test_training.py: B resumes A's step-3 checkpoint; batches, masks, adapter dropout and the
    # optimizer all come from checkpointed state, so B's adapters (raw and EMA) and moments equal A's
    a = runs / "lora"
    shutil.copytree(a, tmp_path / "b")
    shutil.rmtree(tmp_path / "b" / "final")
    assert main(["train", f"resume={tmp_path / 'b' / 'checkpoints' / 'step_000003'}"]) == 0
    b = tmp_path / "b"
    for name in (
        "adapter/adapter_model.safetensors",
        "training_state/model.safetensors",
        "training_state/optimizer.safetensors",
    ):
        assert_same_weights(weights(a / "final" / name), weights(b / "final" / name))
    step3 = weights(a / "checkpoints/step_000003/training_state/model.safetensors")
    final = weights(a / "final/training_state/model.safetensors")
    assert any(not torch.equal(step3[k], final[k]) for k in step3)  # steps 4-6 did move the adapters


def test_sample_and_eval_a_lora_checkpoint_through_the_cli(runs, capsys):
    assert main(["sample", f"checkpoint={runs / 'lora'}", "num_samples=2", "sampling.length=16"]) == 0
    assert "sample 1" in capsys.readouterr().out
    few = ["eval.max_windows=8", "eval.num_draws=1"]
    assert main(["eval", f"checkpoint={runs / 'lora'}", *few]) == 0
    ema = json.loads(capsys.readouterr().out)
    assert main(["eval", f"checkpoint={runs / 'lora'}", *few, "eval.weights=raw"]) == 0
    raw = json.loads(capsys.readouterr().out)
    assert ema["bits_per_char"] > 0 and raw["bits_per_char"] > 0 and ema["bits_per_char"] != raw["bits_per_char"]


def test_a_lora_checkpoint_whose_base_changed_is_refused(runs, tmp_path, capsys):
    # moved together, a run finds its base by the relative path; a base whose weights changed is refused
    shutil.copytree(runs / "base", tmp_path / "base")
    shutil.copytree(runs / "lora", tmp_path / "lora")
    final = tmp_path / "lora" / "final"
    record = json.loads((final / "config.json").read_text())
    record["lora"]["base_checkpoint"] = str(tmp_path / "nowhere")  # only the relative path can find the copy
    (final / "config.json").write_text(json.dumps(record))
    assert main(["sample", f"checkpoint={final}", "num_samples=1", "sampling.length=8"]) == 0
    assert main(["train", f"resume={final}", "training.max_iters=7"]) == 0  # and resumes, referencing the copy
    capsys.readouterr()
    record = json.loads((final / "config.json").read_text())
    assert record["step"] == 7 and record["lora"]["base_checkpoint"] == str((tmp_path / "base" / "final").resolve())
    base_weights = tmp_path / "base" / "final" / "model.safetensors"
    changed = weights(base_weights)
    changed["embed.weight"][0, 0] += 1e-3
    save_file(changed, str(base_weights))
    for command in (["sample", f"checkpoint={final}"], ["eval", f"checkpoint={final}"], ["train", f"resume={final}"]):
        assert main(command) == 2
        assert "a LoRA checkpoint with a different base" in one_error_line(capsys)
    shutil.rmtree(tmp_path / "base")
    assert main(["sample", f"checkpoint={final}"]) == 2
    assert "which is missing" in one_error_line(capsys)


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["training.lora.target_modules=[q_proj,v_proj]"], "matches no layer of Transformer; its layers LoRA"),
        (["training.lora.target_modules=[blocks]"], "that LoRA cannot adapt"),
    ],
)
def test_lora_on_layers_the_model_does_not_have_is_one_line(runs, tmp_path, capsys, extra, expected):
    args = [*TINY, "training.lora.r=4", f"training.init_from={runs / 'base'}", *extra, f"output_dir={tmp_path}"]
    assert main(["train", *args]) == 2
    line = one_error_line(capsys)
    assert expected in line and "qkv, proj, gate_up, down" in line
    assert not any(tmp_path.iterdir())  # refused before the run directory was touched


@pytest.mark.parametrize(
    "args, expected",
    [
        (["training.lora.r=-1"], "training.lora.r=-1 must lie in [0, 65536]"),
        (["training.lora.r=4", "training.lora.alpha=0"], "training.lora.alpha=0.0 must be > 0"),
        (["training.lora.r=4", "training.lora.dropout=1"], "training.lora.dropout=1.0 must lie in [0, 1)"),
        (["training.lora.r=4", "training.lora.target_modules=[]"], "must be a list of module names"),
        (["training.lora.r=4"], "add training.init_from=<the base run or checkpoint>"),
        (["training.lora.r=4", "+experiment=quickstart"], "with training.ar_share=0.25: the autoregressive stage"),
    ],
)
def test_bad_lora_settings_are_one_line(tmp_path, capsys, args, expected):
    assert main(["train", *args, f"output_dir={tmp_path}"]) == 2
    assert expected in one_error_line(capsys)


def test_without_peft_the_extra_is_named(runs, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # `import peft` raises ImportError, as when not installed
    args = [*TINY, "training.lora.r=4", f"training.init_from={runs / 'base'}", f"output_dir={tmp_path}"]
    assert main(["train", *args]) == 2
    assert "pip install 'tokendiff[lora]'" in one_error_line(capsys)
    assert main(["sample", f"checkpoint={runs / 'lora'}"]) == 2
    assert "pip install 'tokendiff[lora]'" in one_error_line(capsys)


def test_resume_keeps_the_adapters(runs, capsys):
    assert main(["train", f"resume={runs / 'lora'}", "training.lora.r=8"]) == 2
    assert "keeps its LoRA adapters" in one_error_line(capsys)


def test_muon_takes_the_adapter_matrices_alone():
    # every trainable parameter of a LoRA model is a hidden matrix: Muon gets them all, and no AdamW part is made
    from types import SimpleNamespace

    from tokendiff.models.transformer import Transformer
    from tokendiff.training.muon import MuonAdamW
    from tokendiff.training.optimizer import build_optimizer

    model = lora.attach(Transformer(65, 2, 2, 32, 16), 4, 8.0, 0.0)
    training = SimpleNamespace(optimizer="muon", beta1=0.9, beta2=0.99, learning_rate=1e-3, weight_decay=0.1)
    optimizer = build_optimizer(model, training, fused=False)
    assert isinstance(optimizer, MuonAdamW) and len(optimizer.parts) == 1
    assert sum(len(g["params"]) for g in optimizer.param_groups) == 16  # A and B of 4 layers in 2 blocks
    model(torch.zeros(1, 16, dtype=torch.long)).sum().backward()
    optimizer.step()  # runs, and restores from its own state dict
    optimizer.load_state_dict(optimizer.state_dict())


def test_a_transformers_backbone_gets_peft_defaults_and_its_adapter_loads_in_peft(tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    from peft import PeftModel

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from test_hf_models import TEXT, WORDS, bert_tokenizer, tiny_bert

    (tmp_path / "lambs.txt").write_text(TEXT.replace(";", "."))
    pretrained = tmp_path / "tiny-bert"
    tiny_bert(len(WORDS), seed=3).save_pretrained(pretrained)
    bert_tokenizer().save(pretrained)
    args = ["model.arch=hf", f"model.hf_name={pretrained}", "data.tokenizer=hf", f"data.tokenizer_name={pretrained}"]
    args += [f"data.input={tmp_path / 'lambs.txt'}", *TINY[3:], *LORA, "training.max_iters=2"]
    assert main(["train", *args, f"output_dir={tmp_path / 'run'}"]) == 0  # no init_from: the pretrained base
    capsys.readouterr()
    config = json.loads((tmp_path / "run/final/adapter/adapter_config.json").read_text())
    assert sorted(config["target_modules"]) == ["query", "value"]  # peft's default for bert
    loaded = load_checkpoint(tmp_path / "run")
    base = transformers.AutoModelForMaskedLM.from_pretrained(str(pretrained)).eval()
    theirs = PeftModel.from_pretrained(base, str(tmp_path / "run/final/adapter")).eval()
    x = torch.tensor([loaded.tokenizer.encode("the little lamb went back.")])
    keep = [h for h in range(len(WORDS)) if h != 4]
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), theirs(input_ids=loaded.tokenizer.to_hf(x)).logits[..., keep])
