"""Block-wise sampling against the model's context: every block size, length and context either writes every
position or refuses with a message naming the limit; long texts hold no (B, L, vocabulary) tensor."""

import pytest
import torch

from tokendiff.data.tokenizers import CharTokenizer
from tokendiff.errors import TokenDiffError
from tokendiff.models import Backbone, Transformer
from tokendiff.processes import AbsorbingKernel, UniformKernel
from tokendiff.samplers import DiffusionSampler, diffusion, row_generators
from tokendiff.samplers.text import generate
from tokendiff.schedules import LogLinearSchedule

TOKENIZER = CharTokenizer.train("abcdefgh")  # one character per token: a text's length is its token count
V = TOKENIZER.vocab_size
MODELS = {}


def model(context: int, block_diffusion: int | None = None) -> Transformer:
    """An untrained model (shapes and behaviour only), built once per (context, block)."""
    key = (context, block_diffusion)
    if key not in MODELS:
        torch.manual_seed(context)
        MODELS[key] = Transformer(
            V, n_layer=1, n_head=2, n_embd=16, block_size=context, block_diffusion=block_diffusion
        ).eval()
    return MODELS[key]


def kernel():
    return AbsorbingKernel(V, LogLinearSchedule())


def sample_texts(net, length, **options):
    options = {"num_samples": 2, "steps": 6, "batch_size": 2, **options}
    return generate(net, kernel(), TOKENIZER, length=length, **options)[0]


def assert_written(texts, length, prefix=""):
    # CharTokenizer.decode cannot decode the mask id (it is no character), so a text of `length` characters
    # means that every position holds a token the model wrote (or the prompt's)
    assert len(texts) == 2 and all(len(t) == length and t.startswith(prefix) for t in texts)


CONTEXTS = [8, 12]
# sizes as functions of the context c; the lengths: shorter than a block, not a multiple of one, several contexts
BLOCKS = {"1": lambda c: 1, "c/4": lambda c: c // 4, "c": lambda c: c, "c+1": lambda c: c + 1, "2c": lambda c: 2 * c}
LENGTHS = {"3": lambda c: 3, "c+3": lambda c: c + 3, "3c+1": lambda c: 3 * c + 1}


@pytest.mark.parametrize("context", CONTEXTS)
@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("length", LENGTHS)
def test_every_block_size_against_every_context_writes_the_text_or_names_the_limit(context, block, length):
    block, length = BLOCKS[block](context), LENGTHS[length](context)
    if min(block, length) > context:  # a block the model cannot see whole
        with pytest.raises(TokenDiffError, match=rf"sampling.block_size={block} .*context of {context} tokens"):
            sample_texts(model(context), length, block_size=block)
        with pytest.raises(TokenDiffError, match=rf"use sampling.block_size<={context}$"):
            sample_texts(model(context), length, block_size=block, strategy="confidence")
    else:
        assert_written(sample_texts(model(context), length, block_size=block), length)
        options = dict(block_size=block, kv_cache="dual", strategy="threshold")  # the approximate cache's path
        assert_written(sample_texts(model(context), length, **options), length)


@pytest.mark.parametrize("context,block", [(8, 1), (8, 2), (8, 8), (12, 3), (12, 4), (12, 12)])
@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("kv_cache", ["auto", "none"])
def test_block_diffusion_models_write_every_length(context, block, length, kv_cache):
    length = LENGTHS[length](context)
    texts = sample_texts(model(context, block), length, kv_cache=kv_cache, strategy="confidence")
    assert_written(texts, length)


def test_the_crash_of_the_issue_is_a_one_line_error():
    # sampling.block_size=64 sampling.length=128 on a 32-token model: half of each block was never denoised
    # (its window could not hold it) and decoding the masks left raised IndexError
    with pytest.raises(TokenDiffError) as info:
        sample_texts(model(32), 128, block_size=64)
    assert str(info.value) == (
        "sampling.block_size=64 is larger than the model's context of 32 tokens, and this 128-token text needs "
        "a block of 64; use sampling.block_size<=32"
    )


@pytest.mark.parametrize("context", CONTEXTS)
def test_prompts_longer_than_a_block_near_the_context_and_past_it(context):
    net = model(context)
    prompt = "abcdef"  # longer than a block of 4: the blocks start after it
    assert_written(sample_texts(net, 3 * context, prompt=prompt, block_size=4), 3 * context, prompt)
    near = ("abcdefgh" * 2)[: context - 1]  # one token short of the context: 6 tokens left to write...
    for block in (4, context, context + 1, 2 * context):  # ...which fit in the context, whatever the block size
        assert_written(sample_texts(net, context + 5, prompt=near, block_size=block), context + 5, near)
    past = ("abcdefgh" * 3)[: context + 2]  # longer than the context: each window ends with its block
    for block in (4, context):
        assert_written(sample_texts(net, 2 * context + 3, prompt=past, block_size=block), 2 * context + 3, past)


def test_block_diffusion_with_prompts_that_start_mid_block_or_pass_the_context():
    net = model(8, 4)
    for prompt in ("abcde", "abcdefghab"):  # mid-block; longer than the context of 8
        assert_written(sample_texts(net, 21, prompt=prompt), 21, prompt)


def test_templates_longer_than_the_context_fill_every_gap_block_by_block():
    template = "ab[MASK:5]cd[MASK:9]efgh[MASK]a[MASK:7]"  # 31 tokens on a 12-token context
    for net, options in ((model(12), {"block_size": 4}), (model(12), {"block_size": 12}), (model(12, 4), {})):
        texts = sample_texts(net, 40, template=template, **options)
        assert all(len(t) == 31 and (t[:2], t[7:9], t[18:22], t[23]) == ("ab", "cd", "efgh", "a") for t in texts)
    with pytest.raises(TokenDiffError, match="context of 12 tokens"):
        sample_texts(model(12), 40, template="a[MASK:20]b", block_size=16)  # one gap of 20 in a 16-block


def test_the_advice_for_lengths_past_the_context_fits_the_context():
    with pytest.raises(TokenDiffError, match=r"sampling.block_size=8\)$"):
        sample_texts(model(8), 20)


class Ends(Backbone):
    """A "model" sure that every position is token 2 (the end token below), whatever its input."""

    time_conditioning = False
    block_size = 8

    def forward(self, x, t=None):
        return torch.nn.functional.one_hot(torch.full_like(x, 2), V + 1).float() * 50.0


def test_progress_counts_every_block_once_also_when_an_end_token_stops_early():
    x = torch.full((3, 40), V)
    for net, stop in ((model(8), None), (Ends(), 2)):
        sampler = DiffusionSampler(net, kernel(), steps=4, block_size=4)
        done = []
        out = sampler.sample(x, row_generators(0, 3), stop_id=stop, progress=done.append)
        assert sum(done) == len(sampler.blocks(x == V)) == 10 and (out != V).all()
    assert done == [1, 9] and (out == 2).all()  # the first block ended every row; the rest is filled with it


def test_the_progress_bar_draws_on_request_and_never_into_captured_stderr(capsys):
    sample_texts(model(8), 30, block_size=4)  # progress=None: stderr here is no terminal
    assert capsys.readouterr().err == ""
    sample_texts(model(8), 30, block_size=4, progress=True)
    assert "sampling" in capsys.readouterr().err
    sample_texts(model(8), 8, progress=True)  # one block: nothing to estimate
    assert capsys.readouterr().err == ""


def test_long_texts_hold_no_tensor_of_length_times_vocabulary(monkeypatch):
    # the prior's noise is drawn a chunk of positions at a time; each step's logits cover one window
    seen = []
    draw = diffusion.gumbel_argmax
    monkeypatch.setattr(diffusion, "gumbel_argmax", lambda lp, g: seen.append(lp.numel()) or draw(lp, g))
    monkeypatch.setattr(diffusion, "PRIOR_CHUNK", 200)
    B, L, context = 2, 1000, 8
    sampler = DiffusionSampler(model(context), kernel(), steps=1, block_size=8)
    out = sampler.sample(torch.full((B, L), V), row_generators(0, B))
    assert (out != V).all()
    assert max(seen) <= max(200, B * context * (V + 1)) < B * L * (V + 1) // 50


@pytest.mark.parametrize("make_kernel", [kernel, lambda: UniformKernel(V, LogLinearSchedule())])
def test_the_prior_drawn_in_chunks_gives_the_tokens_of_one_draw(monkeypatch, make_kernel):
    # a CPU generator yields the same numbers however its draws are split, so the chunk size changes nothing
    x = torch.full((3, 12), V)
    outs = []
    for chunk in (1, 7, 1 << 20):
        monkeypatch.setattr(diffusion, "PRIOR_CHUNK", chunk)
        outs.append(DiffusionSampler(model(12), make_kernel(), steps=4).sample(x, row_generators(5, 3)))
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])
