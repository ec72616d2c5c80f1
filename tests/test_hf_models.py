"""Hugging Face backbones and tokenizers (``model.arch=hf``, ``data.tokenizer=hf``), offline: every model
and tokenizer is built inside the test (a BERT / GPT-2 config of width 32, a word-level BERT vocabulary)."""

import json
import math
import subprocess
import sys

import pytest
import torch

import transformers  # noqa: E402  (the [hf] extra: CI installs it)

from tokendiff.checkpoint import load_checkpoint  # noqa: E402
from tokendiff.data.hf_tokenizer import HFTokenizer  # noqa: E402
from tokendiff.models.hf import HFMaskedLM  # noqa: E402

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list("abcdefghijklmnopqrstuvwxyz.,;:!?'")
WORDS += ["the", "lamb", "went", "to", "meadow", "came", "back", "little"]
TEXT = "".join(f"{i} little lambs went to the meadow; {i * 7 % 13} came back.\n" for i in range(300))


def bert_tokenizer() -> HFTokenizer:
    """A BERT tokenizer whose mask (id 4) sits inside the vocabulary, as in real BERTs."""
    return HFTokenizer(transformers.BertTokenizer(vocab={w: i for i, w in enumerate(WORDS)}))


def tiny_bert(vocab_rows: int, seed: int = 0):
    torch.manual_seed(seed)
    config = transformers.BertConfig(
        vocab_size=vocab_rows,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    return transformers.BertForMaskedLM(config).eval()


def test_tokenizer_renumbers_around_an_inner_mask():
    tok = bert_tokenizer()
    assert tok.hf_mask_id == 4 and tok.vocab_size == len(WORDS) - 1
    hf_ids = tok.tokenizer("the little lamb went back.", add_special_tokens=False)["input_ids"]
    ours = tok.encode("the little lamb went back.")
    assert ours == [h - (h > 4) for h in hf_ids] and max(ours) < tok.vocab_size
    assert tok.decode(ours) == "the little lamb went back."
    # every tokendiff id maps to a distinct tokenizer id, the mask (V) to the tokenizer's mask
    every = torch.arange(tok.vocab_size + 1)
    mapped = tok.to_hf(every)
    assert mapped[-1].item() == 4 and sorted(mapped.tolist()) == list(range(len(WORDS)))
    assert tok.eos_id == 3  # BERT has no EOS: its [SEP] separates documents
    # a literal "[MASK]" in text stays text, never the mask id
    assert tok.vocab_size not in tok.encode("the [MASK] lamb")


def test_gpt2_tokenizer_works_offline_and_gets_a_mask_appended(tmp_path):
    from tokendiff.data.paths import data_dir

    tok = HFTokenizer.from_name("gpt2", data_dir())
    assert tok.vocab_size == 50257 and tok.hf_mask_id == 50257 and tok.eos_id == 50256
    text = "First Citizen:\nBefore we proceed any further, hear me speak.<|endoftext|>"
    assert tok.decode(tok.encode(text)) == text
    tok.save(tmp_path)
    again = HFTokenizer.load(tmp_path)
    assert again.fingerprint() == tok.fingerprint() and again.encode(text) == tok.encode(text)


def test_a_tokenizer_without_a_rust_backend_has_a_fingerprint():
    tok = HFTokenizer(transformers.ByT5Tokenizer())  # bytes; a Python tokenizer with no backend_tokenizer
    assert not hasattr(tok.tokenizer, "backend_tokenizer")
    assert tok.decode(tok.encode("hello, byte")) == "hello, byte"
    assert tok.fingerprint() == HFTokenizer(transformers.ByT5Tokenizer()).fingerprint()
    assert tok.fingerprint() != bert_tokenizer().fingerprint()


def test_wrapper_maps_ids_in_and_drops_the_mask_logit():
    tok = bert_tokenizer()
    V, m = tok.vocab_size, tok.hf_mask_id
    backbone = tiny_bert(len(WORDS))
    model = HFMaskedLM(backbone, V, m, block_size=16)
    x = torch.tensor([[0, 3, 4, 5, V, V, 40], [V, 1, 2, 3, 4, 39, 4]])  # tokendiff ids, V = mask
    out = model(x)
    assert out.shape == (2, 7, V)
    hf_x = torch.where(x == V, m, x + (x >= m).long())
    with torch.no_grad():
        ref = backbone(input_ids=hf_x).logits  # (2, 7, V + 1)
    keep = [h for h in range(V + 1) if h != m]  # tokendiff real id i <-> column keep[i]
    torch.testing.assert_close(out, ref[..., keep])
    with pytest.raises(Exception, match="block_size"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_causal_wrapper_with_an_inner_mask_keeps_every_real_token():
    """An autoregressive backbone with BERT's tokenizer: ids above the mask are shifted in, and their
    logits shifted back out (the mask column is dropped, not column V)."""
    tok = bert_tokenizer()
    V, m = tok.vocab_size, tok.hf_mask_id
    torch.manual_seed(0)
    backbone = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(vocab_size=len(WORDS), n_embd=32, n_layer=1, n_head=2, n_positions=16)
    ).eval()
    model = HFMaskedLM(backbone, V, m, block_size=16, causal=True)
    x = torch.tensor([[0, 3, 4, 5, 40, V - 1]])
    with torch.no_grad():
        ref = backbone(input_ids=x + (x >= m).long()).logits
    keep = [h for h in range(V + 1) if h != m]
    torch.testing.assert_close(model(x), ref[..., keep])
    with pytest.raises(Exception, match="token embeddings"):  # a backbone without a row for every id
        HFMaskedLM(backbone, len(WORDS), m, block_size=16, causal=True)


def run(args, cwd):
    proc = subprocess.run([sys.executable, "-m", "tokendiff", *args], capture_output=True, text=True, cwd=cwd)
    return proc


TINY = [
    "model.block_size=16",
    "training.batch_size=4",
    "training.max_iters=3",
    "training.warmup_iters=1",
    "training.eval_interval=0",
    "training.sample_interval=0",
    "training.checkpoint_interval=0",
    "training.eval_iters=1",
    "system.device=cpu",
    "system.compile=false",
    "sampling.steps=4",
]


@pytest.fixture(scope="module")
def bert_run(tmp_path_factory):
    """3 steps of a fresh BERT-shaped denoiser from a config.json, on characters (the mask appended)."""
    tmp = tmp_path_factory.mktemp("hf")
    (tmp / "lambs.txt").write_text(TEXT)
    config = transformers.BertConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, max_position_embeddings=32
    )
    config.save_pretrained(tmp / "bert_config")
    proc = run(
        ["train", f"data.input={tmp / 'lambs.txt'}", "model.arch=hf", f"model.hf_config={tmp / 'bert_config'}"]
        + TINY
        + [f"output_dir={tmp / 'run'}"],
        tmp,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return tmp


def test_hf_checkpoint_loads_in_transformers_and_in_tokendiff(bert_run):
    ckpt = bert_run / "run" / "final"
    record = json.loads((ckpt / "model" / "config.json").read_text())
    assert record["model_type"] == "bert"
    exported = transformers.AutoModelForMaskedLM.from_pretrained(str(ckpt / "model")).eval()
    loaded = load_checkpoint(ckpt)
    assert isinstance(loaded.model, HFMaskedLM)
    V = loaded.tokenizer.vocab_size
    assert exported.config.vocab_size == V + 1  # the characters and the appended mask
    x = torch.randint(0, V + 1, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), exported(input_ids=x).logits[..., :V])


def test_hf_checkpoint_samples_evaluates_and_resumes(bert_run):
    ckpt = bert_run / "run"
    sample = run(["sample", f"checkpoint={ckpt}", "num_samples=2", "sampling.steps=4"], bert_run)
    assert sample.returncode == 0, sample.stderr[-2000:]
    ev = run(["eval", f"checkpoint={ckpt}", "eval.max_windows=4", "eval.num_draws=1"], bert_run)
    assert ev.returncode == 0, ev.stderr[-2000:]
    result = json.loads(ev.stdout[ev.stdout.index("{") :])
    assert 0 < result["bits_per_char"] < 20
    resumed = run(["train", f"resume={ckpt}", "training.max_iters=4"], bert_run)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((ckpt / "final" / "config.json").read_text())["step"] == 4


def test_hf_causal_backbone_is_the_autoregressive_yardstick(tmp_path):
    (tmp_path / "lambs.txt").write_text(TEXT)
    transformers.GPT2Config(n_embd=32, n_layer=1, n_head=2, n_positions=32).save_pretrained(tmp_path / "gpt2_config")
    proc = run(
        ["train", f"data.input={tmp_path / 'lambs.txt'}", "model.arch=hf"]
        + [f"model.hf_config={tmp_path / 'gpt2_config'}", "model.causal=true"]
        + TINY
        + [f"output_dir={tmp_path / 'run'}"],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = load_checkpoint(tmp_path / "run")
    assert loaded.kernel is None and loaded.model.causal
    exported = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "run" / "final" / "model"))
    assert exported.config.model_type == "gpt2"


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["model.arch=hf"], "needs exactly one of model.hf_name"),
        (["model.hf_config=x"], "apply to model.arch=hf"),
        (["model.arch=hf", "model.hf_name=some/bert"], "need their own tokenizer"),
        (["model.arch=hf", "model.hf_config=/nonexistent/bert_config"], "could not be loaded"),
        # a backbone is never told t: a kernel that needs it names the backbone, not model.time_conditioning=true
        (
            ["model.arch=hf", "model.hf_config=x", "diffusion.process=uniform"],
            "a Hugging Face backbone (model.arch=hf) is time-agnostic: it can only use diffusion.process=absorbing",
        ),
        (["model.arch=hf", "model.hf_config=x", "diffusion.process=hybrid"], "(or hybrid with diffusion.p_uniform=0)"),
        (["model.arch=hf", "model.hf_config=x", "model.time_conditioning=true"], "set model.time_conditioning=false"),
    ],
)
def test_bad_hf_settings_are_one_line_errors(tmp_path, overrides, expected):
    (tmp_path / "lambs.txt").write_text(TEXT)
    proc = run(
        ["train", f"data.input={tmp_path / 'lambs.txt'}", *overrides, *TINY, f"output_dir={tmp_path / 'run'}"],
        tmp_path,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and "Traceback" not in proc.stderr


def test_pretrained_backbone_trains_with_its_own_tokenizer(tmp_path):
    """model.hf_name: a save_pretrained folder (a hub id works the same online) with its BERT tokenizer,
    whose mask sits inside the vocabulary; the checkpoint's model/ folder loads back as a pair."""
    (tmp_path / "lambs.txt").write_text(TEXT.replace(";", "."))
    pretrained = tmp_path / "tiny-bert"
    tiny_bert(len(WORDS), seed=3).save_pretrained(pretrained)
    bert_tokenizer().save(pretrained)
    proc = run(
        ["train", f"data.input={tmp_path / 'lambs.txt'}", "model.arch=hf", f"model.hf_name={pretrained}"]
        + ["data.tokenizer=hf", f"data.tokenizer_name={pretrained}", *TINY, f"output_dir={tmp_path / 'run'}"],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = load_checkpoint(tmp_path / "run")
    assert loaded.model.mask_id == 4 and loaded.tokenizer.vocab_size == len(WORDS) - 1
    folder = tmp_path / "run" / "final" / "model"
    assert transformers.AutoTokenizer.from_pretrained(str(folder)).mask_token_id == 4
    exported = transformers.AutoModelForMaskedLM.from_pretrained(str(folder)).eval()
    assert exported.config.hidden_size == 32 and exported.config.vocab_size == len(WORDS)
    x = torch.tensor([loaded.tokenizer.encode("the little lamb went back.")])
    with torch.no_grad():
        keep = [h for h in range(len(WORDS)) if h != 4]
        torch.testing.assert_close(loaded.model(x), exported(input_ids=loaded.tokenizer.to_hf(x)).logits[..., keep])


def test_the_conditional_nelbo_of_lm_eval_runs_on_a_hugging_face_backbone():
    # tokendiff.evaluation.conditional (the lm-eval backend's loglikelihood) through the HF wrapper: the context
    # reaches the backbone clean in every draw, and the value does not depend on the batch size
    from tokendiff.evaluation.conditional import score_tokens
    from tokendiff.processes import AbsorbingKernel
    from tokendiff.schedules import LogLinearSchedule

    tok = bert_tokenizer()
    V, m = tok.vocab_size, tok.hf_mask_id
    model = HFMaskedLM(tiny_bert(len(WORDS)), V, m, block_size=16).eval()
    seen = []
    record = lambda module, args, kwargs: seen.append(kwargs["input_ids"])  # noqa: E731
    model.backbone.register_forward_pre_hook(record, with_kwargs=True)
    tokens = tok.encode("the lamb went to the meadow")
    kernel = AbsorbingKernel(V, LogLinearSchedule())
    a = score_tokens(model, kernel, tokens, 3, draws=8, seed=0, batch_size=1)
    b = score_tokens(model, kernel, tokens, 3, draws=8, seed=0, batch_size=8)
    assert a.nats == pytest.approx(b.nats, abs=1e-4) and math.isfinite(a.nats) and a.nats > 0
    ids = torch.cat(seen)
    assert not (ids[:, :3] == m).any() and (ids[:, 3:] == m).any(1).all()  # context clean, some mask each draw
