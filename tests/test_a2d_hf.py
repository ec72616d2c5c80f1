"""Autoregressive-to-diffusion adaptation (``model.adapt=a2d``) of a Hugging Face causal LM (``model.arch=hf``):
the adapted wrapper under a causal mask is the causal LM (shifted by one with ``model.logit_shift``), its
attention sees later tokens, a GPT-2 with a GPT-2-style tokenizer (no mask: one is appended, the embeddings
grow a row) trains, samples, evaluates and exports, and a masked LM named for adaptation is one line.
Offline: every model and tokenizer is built here (width 32, a byte-level BPE of 260 tokens)."""

import json

import pytest
import torch

import transformers  # noqa: E402  (the [hf] extra: CI installs it)
from test_hf_models import TINY as HF_TINY  # noqa: E402

import tokendiff.models.hf as hf  # noqa: E402
from tokendiff.checkpoint import load_checkpoint  # noqa: E402
from tokendiff.cli.main import main  # noqa: E402
from tokendiff.errors import TokenDiffError  # noqa: E402
from tokendiff.models.hf import HFMaskedLM, check_adaptable  # noqa: E402

V = 50  # the backbones' vocabulary in the unit tests; the mask is appended at V
TEXT = "".join(f"{i} little lambs went to the meadow; {i * 7 % 13} came back.\n" for i in range(300))


def tiny_causal_lm(kind: str, attn: str, vocab_rows: int = V + 1, seed: int = 0):
    torch.manual_seed(seed)
    if kind == "gpt2":
        last = vocab_rows - 1  # GPT-2's <|endoftext|> is its last id
        config = transformers.GPT2Config(
            n_layer=2, n_head=2, n_embd=32, vocab_size=vocab_rows, n_positions=64, bos_token_id=last, eos_token_id=last
        )
    else:
        config = transformers.LlamaConfig(
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            hidden_size=32,
            intermediate_size=64,
            vocab_size=vocab_rows,
            max_position_embeddings=64,
        )
    config._attn_implementation = attn
    return transformers.AutoModelForCausalLM.from_config(config).eval()


def causal_mask(backbone, ids):
    B, L = ids.shape
    big = torch.finfo(backbone.dtype).min
    return torch.full((L, L), big, dtype=backbone.dtype).triu(1).expand(B, 1, L, L)


ARCHS = [("gpt2", "eager"), ("gpt2", "sdpa"), ("llama", "eager"), ("llama", "sdpa")]


@pytest.mark.parametrize("kind, attn", ARCHS)
@pytest.mark.parametrize("logit_shift", [False, True])
def test_the_adapted_wrapper_under_a_causal_mask_is_the_causal_lm(kind, attn, logit_shift, monkeypatch):
    backbone = tiny_causal_lm(kind, attn)
    assert backbone.config._attn_implementation == attn
    model = HFMaskedLM(backbone, V, V, block_size=16, adapted=True, logit_shift=logit_shift)
    assert model.logit_shift is logit_shift and not model.supports_kv_cache and not model.causal
    x = torch.randint(0, V, (3, 16), generator=torch.Generator().manual_seed(1))  # no masks
    monkeypatch.setattr(hf, "bidirectional_mask", causal_mask)  # the 4D mask the wrapper feeds, made causal
    with torch.no_grad():
        want, got = backbone(input_ids=x).logits[..., :V], model(x)  # (B, L, V): the mask's logit dropped
    if logit_shift:  # Dream: token i is read from position i - 1, where the causal LM predicts it
        torch.testing.assert_close(got[:, 1:], want[:, :-1], rtol=0, atol=1e-5)
        torch.testing.assert_close(got[:, 0], want[:, 0], rtol=0, atol=1e-5)
    else:
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind, attn", ARCHS)
def test_the_adapted_wrapper_sees_later_tokens(kind, attn):
    backbone = tiny_causal_lm(kind, attn)
    check_adaptable(backbone, "model.hf_name='tiny'")  # causal without a mask, bidirectional with one
    model = HFMaskedLM(backbone, V, V, block_size=16, adapted=True)
    x = torch.randint(0, V, (1, 16), generator=torch.Generator().manual_seed(2))
    y = x.clone()
    y[0, -1] = (x[0, -1] + 1) % V
    with torch.no_grad():
        moved = (model(x) - model(y))[0].abs().amax(-1)  # (L,)
        causal = (backbone(input_ids=x).logits - backbone(input_ids=y).logits)[0].abs().amax(-1)
    assert torch.all(moved > 1e-4), moved  # every position, the first included
    assert torch.all(causal[:-1] == 0)


def test_a_backbone_that_ignores_the_4d_mask_or_is_already_bidirectional_is_refused():
    class IgnoresMask(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner
            self.dtype = inner.dtype

        def forward(self, input_ids, attention_mask=None):
            return self.inner(input_ids=input_ids)

    with pytest.raises(TokenDiffError, match="ignores a 4D attention mask"):
        check_adaptable(IgnoresMask(tiny_causal_lm("gpt2", "sdpa")), "model.hf_name='x'")
    torch.manual_seed(0)
    bert = transformers.BertForMaskedLM(
        transformers.BertConfig(
            vocab_size=V + 1, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
        )
    )
    with pytest.raises(TokenDiffError, match="not an autoregressive model"):
        check_adaptable(bert, "model.hf_name='x'")


def gpt2_style_folder(folder):
    """A GPT-2 release-layout tokenizer (encoder.json, vocab.bpe: every byte and 3 merges; no mask) and a
    tiny GPT-2 of exactly its 260 rows, as a pretrained GPT-2 has 50257: tokendiff must append the mask row."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {c: i for i, c in enumerate(bytes_to_unicode().values())}
    merges = [("Ġ", "t"), ("t", "h"), ("Ġt", "h")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    folder.mkdir()
    (folder / "encoder.json").write_text(json.dumps(vocab))
    (folder / "vocab.bpe").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    tiny_causal_lm("gpt2", "sdpa", vocab_rows=len(vocab), seed=3).save_pretrained(folder)
    return len(vocab)


TINY = [*HF_TINY, "training.log_interval=1"]  # test_hf_models.py's, logging every step


def test_a_gpt2_adapted_trains_samples_evaluates_and_exports_a_causal_lm(tmp_path, capsys):
    (tmp_path / "lambs.txt").write_text(TEXT)
    pretrained = tmp_path / "tiny-gpt2"
    rows = gpt2_style_folder(pretrained)
    run = tmp_path / "run"
    args = [f"data.input={tmp_path / 'lambs.txt'}", "model.arch=hf", f"model.hf_name={pretrained}"]
    args += ["model.adapt=a2d", "model.logit_shift=true", "data.tokenizer=hf", f"data.tokenizer_name={pretrained}"]
    assert main(["train", *args, *TINY, f"output_dir={run}"]) == 0
    losses = [json.loads(line).get("train/loss") for line in (run / "log.jsonl").read_text().splitlines()]
    losses = [x for x in losses if x is not None]
    assert losses and all(0 < x < 100 for x in losses), losses
    capsys.readouterr()

    loaded = load_checkpoint(run)
    model = loaded.model
    assert isinstance(model, HFMaskedLM) and model.adapted and model.logit_shift and not model.causal
    assert loaded.tokenizer.vocab_size == rows and model.mask_id == rows  # the mask appended at V
    folder = run / "final" / "model"
    exported = transformers.AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    assert exported.config.model_type == "gpt2" and exported.config.vocab_size == rows + 1  # grown by the mask row
    assert transformers.AutoTokenizer.from_pretrained(str(folder)).mask_token_id == rows
    x = torch.randint(0, rows + 1, (2, 16), generator=torch.Generator().manual_seed(0))  # masks included
    with torch.no_grad():
        want = exported(input_ids=x, attention_mask=torch.zeros(2, 1, 16, 16)).logits[..., :rows]
        torch.testing.assert_close(model(x), torch.cat([want[:, :1], want[:, :-1]], dim=1))

    assert main(["sample", f"checkpoint={run}", "num_samples=2", "sampling.steps=4"]) == 0
    assert capsys.readouterr().out.strip()
    assert main(["eval", f"checkpoint={run}", "eval.max_windows=4", "eval.num_draws=1"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out[out.index("{") :])
    assert all(v == v for v in result.values() if isinstance(v, float))  # no NaN


def test_a_masked_lm_named_for_adaptation_is_one_line(tmp_path, capsys):
    (tmp_path / "lambs.txt").write_text(TEXT)
    pretrained = tmp_path / "tiny-gpt2"
    gpt2_style_folder(pretrained)  # its tokenizer
    bert = tmp_path / "tiny-bert"
    torch.manual_seed(0)
    transformers.BertForMaskedLM(
        transformers.BertConfig(
            vocab_size=261, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
        )
    ).save_pretrained(bert)
    args = [f"data.input={tmp_path / 'lambs.txt'}", "model.arch=hf", f"model.hf_name={bert}", "model.adapt=a2d"]
    args += ["data.tokenizer=hf", f"data.tokenizer_name={pretrained}", *TINY, f"output_dir={tmp_path / 'run'}"]
    capsys.readouterr()  # save_pretrained's progress bars
    assert main(["train", *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert f"model.hf_name='{bert}'" in lines[0] and "drop model.adapt=a2d" in lines[0]
    assert "not an autoregressive model (its config.json names BertForMaskedLM)" in lines[0]
