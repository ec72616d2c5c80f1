"""``checkpoint=`` a pretrained masked diffusion LM (tokendiff.pretrained): a transformers ``save_pretrained``
folder (a masked LM, or a LLaDA-style model with its own code) sampled, evaluated and scored by lm-eval through
tokendiff's commands, offline: every model and tokenizer is built here from a config, with width 32."""

import json
import math
import textwrap

import pytest
import torch

import transformers  # the [hf] extra (CI installs it)
from tokenizers import Tokenizer, models, pre_tokenizers

from tokendiff.checkpoint import load_checkpoint
from tokendiff.cli.main import main
from tokendiff.errors import TokenDiffError

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list("abcdefghijklmnopqrstuvwxyz.,;:!?'")
WORDS += ["the", "lamb", "went", "to", "meadow", "came", "back", "little", "lambs"]
TEXT = "".join(f"little lambs went to the meadow; {'abc'[i % 3]} came back.\n" for i in range(200))


def run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_refusal(capsys, *argv) -> str:
    """The stderr of a command that must fail as a user error: exit status 2, one line."""
    capsys.readouterr()  # what the test printed before (transformers' progress bars)
    code, _, err = run(capsys, *argv)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    return err


# ---------------------------------------------------------------- a masked LM (BERT)
def save_bert(folder, seed: int = 0):
    """A 1-layer BertForMaskedLM (width 32) and its WordPiece tokenizer (mask [MASK], id 4 of 42), saved as
    ``save_pretrained`` writes them."""
    torch.manual_seed(seed)
    config = transformers.BertConfig(
        vocab_size=len(WORDS),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=48,
    )
    model = transformers.BertForMaskedLM(config).eval()
    model.save_pretrained(folder)
    transformers.BertTokenizer(vocab={w: i for i, w in enumerate(WORDS)}).save_pretrained(folder)
    return model


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bert")
    return folder, save_bert(folder)


def test_a_bert_folder_loads_as_a_checkpoint_whose_logits_are_berts(bert_dir):
    folder, bert = bert_dir
    ckpt = load_checkpoint(folder)
    tok = ckpt.tokenizer
    V, m = tok.vocab_size, tok.hf_mask_id
    assert (V, m) == (len(WORDS) - 1, 4) and ckpt.kernel.mask_token_id == V and ckpt.step == -1
    assert ckpt.config.model.arch == "hf" and ckpt.config.model.hf_name == str(folder)
    assert ckpt.config.model.block_size == 48  # the position table (under the cap)
    kernel = ckpt.kernel.to_config()  # masked diffusion with a linear schedule: what these models are trained with
    assert (kernel["forward_process"], kernel["alpha_schedule"], kernel["vocab_size"]) == ("absorbing", "linear", V + 1)
    x = torch.tensor([tok.encode("the little lamb went to the meadow")])  # (1, L) tokendiff ids
    x[0, 2] = V  # one mask, fed as BERT's [MASK]
    with torch.no_grad():
        ours = ckpt.model(x)  # (1, L, V)
        theirs = bert(input_ids=tok.to_hf(x)).logits  # (1, L, V + 1) in BERT's ids
    # tokendiff id i is BERT id i below the mask and i + 1 above it; the mask's own logit is dropped
    expected = torch.cat([theirs[..., :m], theirs[..., m + 1 :]], dim=-1)
    assert ours.shape == (1, x.shape[1], V)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)


def test_sample_and_eval_run_on_a_bert_folder_through_the_command_line(bert_dir, tmp_path, capsys):
    folder, _ = bert_dir
    args = ["sample", f"checkpoint={folder}", "num_samples=2", "sampling.steps=4", "sampling.length=16"]
    code, out, err = run(capsys, *args, "prompt=the little", "system.device=cpu")
    assert code == 0, err
    samples = [s.split("-----\n", 1)[1].strip() for s in out.split("----- sample ") if s.strip()]
    assert len(samples) == 2 and all(s.startswith("the little") for s in samples)
    assert "[MASK]" not in out  # every position revealed
    text = tmp_path / "lambs.txt"
    text.write_text(TEXT)
    evaluation = ["eval.num_draws=2", "eval.max_windows=3", "eval.batch_size=3", "model.block_size=32"]
    code, out, err = run(capsys, "eval", f"checkpoint={folder}", f"eval.data={text}", *evaluation, "system.device=cpu")
    assert code == 0, err
    result = json.loads(out)
    # an untrained BERT knows nothing: its bound lies near log V per token (and never below 0)
    assert 0 < result["nelbo_nats_per_token"] < 3 * math.log(len(WORDS) - 1)
    assert result["checkpoint"] == str(folder) and result["step"] == -1


def test_the_logit_shift_reads_each_position_from_the_one_before(bert_dir):
    folder, _ = bert_dir
    plain = load_checkpoint(folder)
    shifted = load_checkpoint(folder, model_options={"logit_shift": True})
    assert shifted.model.logit_shift and not plain.model.logit_shift
    x = torch.tensor([plain.tokenizer.encode("the lamb came back to the meadow")])
    x[0, 3] = plain.tokenizer.vocab_size  # (1, L), one mask
    with torch.no_grad():
        a, b = plain.model(x), shifted.model(x)  # (1, L, V) each
    # Dream's convention: position i's token is read from position i - 1; position 0 from itself
    assert torch.equal(b[:, 1:], a[:, :-1]) and torch.equal(b[:, 0], a[:, 0])
    assert not torch.equal(a, b)


def test_the_lm_eval_backend_scores_a_request_on_a_pretrained_folder(bert_dir):
    from lm_eval.api.instance import Instance

    from tokendiff.evaluation.conditional import score_continuation
    from tokendiff.harness.backend import TokendiffLM

    folder, _ = bert_dir
    lm = TokendiffLM(checkpoint=str(folder), mc_num=4, batch_size=4, **{"model.block_size": 24})
    assert lm.model.block_size == 24 and lm.ckpt.step == -1
    request = Instance(request_type="loglikelihood", doc={}, arguments=("the little lamb", " went back"), idx=0)
    ((loglik, greedy),) = lm.loglikelihood([request])
    # the backend's number is the estimator's, on the pretrained model
    ctx, cont = lm.tokenizer.encode("the little lamb"), lm.tokenizer.encode(" went back")
    nats = score_continuation(lm.model, lm.kernel, ctx, cont, window=24, draws=4, seed=0, batch_size=4).nats
    assert loglik == pytest.approx(-nats, rel=1e-6) and loglik < 0 and isinstance(greedy, bool)


# ---------------------------------------------------------------- a LLaDA-style model with its own code
CONFIGURATION = """
from transformers import PretrainedConfig


class TinyLLaDAConfig(PretrainedConfig):
    model_type = "tinyllada"

    def __init__(self, vocab_size=48, d_model=32, max_sequence_length=40, mask_token_id=None, as_tuple=True, **kw):
        self.vocab_size, self.d_model, self.max_sequence_length = vocab_size, d_model, max_sequence_length
        self.mask_token_id, self.as_tuple = mask_token_id, as_tuple
        super().__init__(**kw)
"""

MODELING = '''
import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput

from .configuration_tinyllada import TinyLLaDAConfig


class TinyLLaDAModelLM(PreTrainedModel):
    """One bidirectional attention layer (no causal mask) and an LM head, as LLaDA is built."""

    config_class = TinyLLaDAConfig

    def __init__(self, config):
        super().__init__(config)
        self.wte = nn.Embedding(config.vocab_size, config.d_model)
        self.wpe = nn.Embedding(config.max_sequence_length, config.d_model)
        self.attn = nn.MultiheadAttention(config.d_model, 2, batch_first=True)
        self.head = nn.Linear(config.d_model, config.vocab_size)
        self.post_init()

    def _init_weights(self, module):
        pass

    def get_input_embeddings(self):
        return self.wte

    def forward(self, input_ids, attention_mask=None, **kwargs):
        h = self.wte(input_ids) + self.wpe(torch.arange(input_ids.shape[1], device=input_ids.device))
        h = h + self.attn(h, h, h, need_weights=False)[0]  # every position sees every other
        logits = self.head(h)
        return (logits,) if self.config.as_tuple else CausalLMOutput(logits=logits)
'''

# the mask sits inside the vocabulary (as LLaDA's 126336 does), and the tokenizer does not declare it
LLADA_WORDS = ["<unk>", "<eos>"] + WORDS[5:20] + ["<|mdm_mask|>"] + WORDS[20:]


def save_tiny_llada(folder, *, mask_in_config: bool = True, as_tuple: bool = True, seed: int = 0):
    """A LLaDA-style folder: its own configuration and modelling code (``auto_map``), a word-level tokenizer
    without a mask token, and (``mask_in_config``) the mask's id as the config's ``mask_token_id``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "configuration_tinyllada.py").write_text(textwrap.dedent(CONFIGURATION))
    (folder / "modeling_tinyllada.py").write_text(textwrap.dedent(MODELING))
    vocab = {w: i for i, w in enumerate(LLADA_WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="<eos>")
    tok.save_pretrained(folder)
    mask = vocab["<|mdm_mask|>"] if mask_in_config else None
    config = {
        "model_type": "tinyllada",
        "architectures": ["TinyLLaDAModelLM"],
        "auto_map": {
            "AutoConfig": "configuration_tinyllada.TinyLLaDAConfig",
            "AutoModel": "modeling_tinyllada.TinyLLaDAModelLM",
            "AutoModelForCausalLM": "modeling_tinyllada.TinyLLaDAModelLM",
        },
        "vocab_size": len(vocab) + 2,  # the embedding table is larger than the tokenizer, as LLaDA's is
        "d_model": 32,
        "max_sequence_length": 40,
        "mask_token_id": mask,
        "as_tuple": as_tuple,
    }
    (folder / "config.json").write_text(json.dumps(config))
    # random weights, from the folder's own code (imported as transformers imports it), saved beside it
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(
        transformers.AutoConfig.from_pretrained(folder, trust_remote_code=True), trust_remote_code=True
    )
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.3)
    model.save_pretrained(folder)
    return model.eval()


@pytest.fixture(scope="module")
def llada_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llada") / "tinyllada"
    return folder, save_tiny_llada(folder)


@pytest.mark.parametrize("as_tuple", [True, False])
def test_a_llada_style_folder_runs_its_own_code_when_trusted_and_gives_its_logits(tmp_path, as_tuple):
    folder = tmp_path / ("tuple" if as_tuple else "output")
    llada = save_tiny_llada(folder, as_tuple=as_tuple)
    ckpt = load_checkpoint(folder, model_options={"trust_remote_code": True})
    tok = ckpt.tokenizer
    V, m = tok.vocab_size, tok.hf_mask_id
    assert m == LLADA_WORDS.index("<|mdm_mask|>") and V == len(LLADA_WORDS) - 1  # the config's mask_token_id
    assert ckpt.config.model.block_size == 40 and ckpt.config.model.trust_remote_code
    x = torch.tensor([tok.encode("the little lamb went to the meadow")])  # (1, L) tokendiff ids
    assert int(x.max()) >= m  # some ids lie above the mask, so the map is not the identity
    x[0, 1] = V
    with torch.no_grad():
        ours = ckpt.model(x)  # (1, L, V)
        out = llada(input_ids=tok.to_hf(x))
        theirs = out[0] if as_tuple else out.logits  # (1, L, 47): two embedding rows beyond the tokenizer
    expected = torch.cat([theirs[..., :m], theirs[..., m + 1 : V + 1]], dim=-1)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)


def test_a_llada_style_folder_samples_with_trust_and_is_refused_without(llada_dir, capsys):
    folder, _ = llada_dir
    args = ["sample", f"checkpoint={folder}", "num_samples=2", "sampling.steps=4", "sampling.length=16"]
    err = one_line_refusal(capsys, *args)
    assert "model.trust_remote_code=true" in err and str(folder) in err
    code, out, err = run(capsys, *args, "model.trust_remote_code=true", "system.device=cpu")
    assert code == 0, err
    assert out.count("----- sample") == 2 and "<|mdm_mask|>" not in out


def test_the_lm_eval_backend_passes_trust_remote_code_to_a_pretrained_folder(llada_dir):
    from tokendiff.harness.backend import TokendiffLM

    folder, _ = llada_dir
    with pytest.raises(TokenDiffError, match="model.trust_remote_code=true"):
        TokendiffLM(checkpoint=str(folder), mc_num=2)
    for trust in ({"model.trust_remote_code": True}, {"trust_remote_code": True}):  # ours, and lm-eval's name
        lm = TokendiffLM(checkpoint=str(folder), mc_num=2, batch_size=2, **trust)
        assert lm.ckpt.config.model.trust_remote_code and lm.window == 40
        nats = lm._score(lm.tokenizer.encode("the lamb"), lm.tokenizer.encode("went back")).nats
        assert math.isfinite(nats) and nats > 0


def test_a_causal_lm_is_run_bidirectionally_only_with_model_adapt(bert_dir, tmp_path):
    # a DiffuGPT-style folder: GPT-2's architecture, a tokenizer with a mask token
    vocab = {w: i for i, w in enumerate(LLADA_WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    kw = dict(tokenizer_object=backend, unk_token="<unk>", eos_token="<eos>", mask_token="<|mdm_mask|>")
    transformers.PreTrainedTokenizerFast(**kw).save_pretrained(tmp_path)
    config = transformers.GPT2Config(vocab_size=len(vocab), n_embd=32, n_layer=1, n_head=2, n_positions=32)
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path)
    with pytest.raises(TokenDiffError, match="is a causal LM"):
        load_checkpoint(tmp_path)
    ckpt = load_checkpoint(tmp_path, model_options={"adapt": "a2d", "logit_shift": True})
    assert ckpt.model.adapted and ckpt.model.logit_shift and ckpt.config.model.adapt == "a2d"
    assert ckpt.model.block_size == 32 and ckpt.tokenizer.hf_mask_id == vocab["<|mdm_mask|>"]
    with pytest.raises(TokenDiffError, match="drop model.adapt=a2d"):  # a masked LM is bidirectional already
        load_checkpoint(bert_dir[0], model_options={"adapt": "a2d"})


# ---------------------------------------------------------------- bad input: one line, exit status 2
def _gpt2(folder):
    transformers.GPT2Config(n_embd=32, n_layer=1, n_head=2, architectures=["GPT2LMHeadModel"]).save_pretrained(folder)


def _encoder(folder):
    transformers.BertConfig(hidden_size=32, num_hidden_layers=1, architectures=["BertModel"]).save_pretrained(folder)


def _not_a_model(folder):
    (folder / "config.json").write_text(json.dumps({"hidden_size": 32}))


def _no_mask(folder):
    save_tiny_llada(folder, mask_in_config=False)


@pytest.mark.parametrize(
    "make, extra, message",
    [
        (lambda f: None, [], "holds no checkpoint"),  # an empty folder
        (_not_a_model, [], "nor a transformers config"),
        (_gpt2, [], "is a causal LM (GPT2LMHeadModel)"),
        (_encoder, [], "BertModel, which has no masked LM head"),
        (_no_mask, ["model.trust_remote_code=true"], "has no mask token"),
    ],
)
def test_bad_pretrained_folders_are_one_line_with_exit_status_2(tmp_path, capsys, monkeypatch, make, extra, message):
    folder = tmp_path / "model"
    folder.mkdir()
    make(folder)
    for command in ("sample", "eval"):
        data = [f"eval.data={tmp_path}"] if command == "eval" else []
        err = one_line_refusal(capsys, command, f"checkpoint={folder}", *extra, *data)
        assert message in err, err


def test_the_kinds_tokendiff_drives_are_named_when_refusing_one(tmp_path, capsys):
    _gpt2(tmp_path)
    err = one_line_refusal(capsys, "sample", f"checkpoint={tmp_path}")
    assert "AutoModelForMaskedLM" in err and "model.trust_remote_code=true" in err and "model.adapt=a2d" in err


def test_a_hub_id_offline_is_one_line(capsys, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no network in tests either way
    err = one_line_refusal(capsys, "sample", "checkpoint=no-such-owner/no-such-model")
    assert "checkpoint='no-such-owner/no-such-model'" in err and "hf download" in err


def test_what_counts_as_a_pretrained_model(bert_dir, tmp_path, monkeypatch):
    from tokendiff.pretrained import is_pretrained

    folder, _ = bert_dir
    record = tmp_path / "ckpt"
    record.mkdir()
    (record / "config.json").write_text(json.dumps({"config": {"model": {}}, "step": 3, "model_type": "x"}))
    monkeypatch.chdir(tmp_path)
    assert is_pretrained(folder) and is_pretrained("owner/name")
    # tokendiff's own record, a missing local path (its parent exists here) and relative paths are not
    assert not is_pretrained(record) and not is_pretrained("ckpt/final") and not is_pretrained("./owner/name")
    assert not is_pretrained(None) and not is_pretrained("a/b/c")


def test_eval_of_a_pretrained_folder_asks_for_eval_data(bert_dir, capsys):
    folder, _ = bert_dir
    err = one_line_refusal(capsys, "eval", f"checkpoint={folder}")
    assert "eval.data=" in err


def test_a_model_setting_a_pretrained_folder_does_not_take_is_refused(bert_dir):
    folder, _ = bert_dir
    with pytest.raises(TokenDiffError, match="model.n_layer=2 does not apply"):
        load_checkpoint(folder, model_options={"n_layer": 2})
    with pytest.raises(TokenDiffError, match="model.trust_remote_code='yes' must be true or false"):
        load_checkpoint(folder, model_options={"trust_remote_code": "yes"})
