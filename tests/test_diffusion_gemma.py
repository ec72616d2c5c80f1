"""DiffusionGemma (transformers' ``DiffusionGemmaForBlockDiffusion``) in tokendiff, offline: a tiny random model
(2 layers, width 32, 96 ids, canvases of 4) built from a config in the test.

The claims: tokendiff's logits are the model's own forward; tokendiff's canvas loop, given transformers'
draws, is the model's own ``generate`` token for token; with tokendiff's per-row generators a sample does not
depend on the batch size; a model saved by ``save_pretrained`` loads back with the same logits."""

import json

import pytest
import torch

import transformers  # the hf extra (transformers >= 5.25 ships DiffusionGemma); CI installs it

from tokendiff.data.hf_tokenizer import HFTokenizer  # noqa: E402
from tokendiff.errors import TokenDiffError  # noqa: E402
from tokendiff.models.diffusion_gemma import DiffusionGemmaLM, load_diffusion_gemma, vocabulary_facts  # noqa: E402
from tokendiff.samplers.canvas import (  # noqa: E402
    CanvasSettings,
    RowNoise,
    StableAndConfident,
    TorchNoise,
    linear_temperature,
    sample_canvases,
)
from tokendiff.samplers.entropy_bound import entropy_bound_accept, token_entropy  # noqa: E402
from tokendiff.samplers.noise import row_generators  # noqa: E402
from tokendiff.samplers.text import generate  # noqa: E402

V_HF, CANVAS, PAD, EOS, BOS, MASK = 96, 4, 0, 1, 2, 4
WORDS = ["<pad>", "<eos>", "<bos>", "<unk>", "[MASK]"] + [f"w{i}" for i in range(V_HF - 5)]


def tiny_config(**text_overrides):
    text = dict(
        vocab_size=V_HF, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, global_head_dim=16, max_position_embeddings=128, sliding_window=8,
        layer_types=["sliding_attention", "full_attention"], num_experts=2, top_k_experts=1,
        moe_intermediate_size=16, pad_token_id=PAD, eos_token_id=EOS, bos_token_id=BOS,
    )  # fmt: skip
    text.update(text_overrides)
    vision = dict(
        model_type="gemma4_vision", hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, head_dim=8, position_embedding_size=16,
    )  # fmt: skip
    # the image ids sit inside the tiny vocabulary; no test feeds images
    ids = dict(boi_token_id=90, eoi_token_id=91, image_token_id=92)
    return transformers.DiffusionGemmaConfig(text_config=text, vision_config=vision, canvas_length=CANVAS, **ids)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Matrices of width 32: a second thread only adds its hand-off (10x slower on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def hf_model():
    torch.manual_seed(0)
    return transformers.DiffusionGemmaForBlockDiffusion(tiny_config()).eval()


def word_tokenizer() -> HFTokenizer:
    """A word-level tokenizer over the model's 96 ids, its mask (id 4) inside the vocabulary as Gemma's is."""
    vocab = {w: i for i, w in enumerate(WORDS)}
    special = dict(unk_token="<unk>", pad_token="<pad>", mask_token="[MASK]", cls_token="<bos>", sep_token="<eos>")
    tok = HFTokenizer(transformers.BertTokenizer(vocab=vocab, **special))
    assert len(tok.tokenizer) == V_HF and tok.eos_id == EOS  # no token added: the model's ids are the tokenizer's
    return tok


def test_vocabulary_facts_and_id_map(hf_model):
    facts = vocabulary_facts(hf_model)
    assert (facts.backbone_vocab_size, facts.canvas_length, facts.mask_id) == (V_HF, CANVAS, None)
    assert (facts.bos_id, facts.pad_id, facts.eos_ids) == (BOS, PAD, (EOS,))
    # without a tokenizer tokendiff ids are the backbone's: V = V_hf, and the mask id V is outside the model
    plain = DiffusionGemmaLM(hf_model)
    assert (plain.vocab_size, plain.mask_id, plain.block_diffusion, plain.self_conditioning) == (V_HF, V_HF, 4, True)
    # with a tokenizer whose mask is backbone id 4: tokendiff ids skip it, and every backbone id but 4 is a token
    lm = DiffusionGemmaLM(hf_model, vocab_size=V_HF - 1, mask_id=MASK)
    every = torch.arange(V_HF - 1)
    hf = lm.to_backbone_ids(every)
    assert MASK not in hf.tolist() and sorted(hf.tolist() + [MASK]) == list(range(V_HF))
    assert torch.equal(lm.from_backbone_ids(hf), every)
    assert lm.from_backbone_ids(torch.tensor([MASK])).item() == V_HF - 1  # the mask reads back as tokendiff's V
    # uniform noise: the mask is never fed
    with pytest.raises(TokenDiffError, match="takes no mask"):
        lm.to_backbone_ids(torch.tensor([0, V_HF - 1]))
    with pytest.raises(TokenDiffError, match="backbone ids"):
        DiffusionGemmaLM(hf_model, vocab_size=V_HF, mask_id=MASK)  # 97 ids needed, 96 there


def test_logits_equal_the_models_own_forward(hf_model):
    g = torch.Generator().manual_seed(1)
    lm = DiffusionGemmaLM(hf_model, vocab_size=V_HF - 1, mask_id=MASK)
    for P in (3, 11):  # a context inside and one past the sliding window (8)
        context = torch.randint(0, V_HF - 1, (2, P), generator=g)  # (B, P) tokendiff ids
        canvas = torch.randint(0, V_HF - 1, (2, CANVAS), generator=g)  # (B, C)
        previous = torch.randn(2, CANVAS, V_HF - 1, generator=g)  # (B, C, V) last step's logits
        with torch.no_grad():
            ours = lm.canvas_logits(context, canvas, previous)  # (B, C, V)
            theirs = hf_model(
                input_ids=lm.to_backbone_ids(context),
                decoder_input_ids=lm.to_backbone_ids(canvas),
                self_conditioning_logits=lm.to_backbone_logits(previous),
            ).logits  # (B, C, V_hf)
            plain = lm.canvas_logits(context, canvas)  # no self-conditioning
            whole = lm(torch.cat([context, canvas], dim=1))  # the backbone call: context then canvas
        assert ours.shape == (2, CANVAS, V_HF - 1)
        # the same computation: equal to the last bit, the mask's column (backbone id 4) dropped
        assert torch.equal(ours, torch.cat([theirs[..., :MASK], theirs[..., MASK + 1 :]], dim=-1))
        assert torch.equal(whole, plain)
        assert not torch.allclose(ours, plain)  # the self-conditioning input is used
        # the tokendiff -> backbone logits of the previous step put no probability on the mask
        assert lm.to_backbone_logits(previous).softmax(-1)[..., MASK].max().item() == 0.0


def test_encoder_cache_built_in_pieces_equals_one_pass(hf_model):
    """The loop encodes the prompt, then each finished canvas, into one cache: the decoder must read the
    same context as from one pass over the whole (up to float rounding: different kernel shapes)."""
    lm = DiffusionGemmaLM(hf_model)
    g = torch.Generator().manual_seed(2)
    context = torch.randint(0, V_HF, (2, 13), generator=g)  # past the sliding window of 8
    canvas = torch.randint(0, V_HF, (2, CANVAS), generator=g)
    with torch.no_grad():
        one = lm.decoder_logits(canvas, lm.encode(context), 13)
        cache = lm.encode(context[:, :5])
        cache = lm.encode(context[:, 5:9], cache, 5)
        cache = lm.encode(context[:, 9:], cache, 9)
        pieces = lm.decoder_logits(canvas, cache, 13)
        shifted = lm.decoder_logits(canvas, lm.encode(context), 14)  # positions matter: a wrong start is seen
    torch.testing.assert_close(pieces, one, rtol=0, atol=1e-5)
    assert (shifted - one).abs().max().item() > 1e-4


def test_entropy_bound_acceptance_and_temperature():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(5, 7, 6, generator=g) * torch.rand(5, 7, 1, generator=g) * 6  # (B, C, V) varied peaks
    H = -(logits.softmax(-1) * logits.log_softmax(-1)).sum(-1)  # (B, C) the entropies, by their definition
    torch.testing.assert_close(token_entropy(logits.log_softmax(-1)), H, rtol=0, atol=1e-6)
    for bound in (0.05, 0.5, 2.0, 100.0):
        accept = entropy_bound_accept(logits.log_softmax(-1), bound)
        for b in range(5):
            # position i is accepted iff the positions at most as uncertain as it, minus itself, sum to <= bound
            # (no ties in random logits), so the accepted set is a prefix of the entropy order
            expected = [(H[b][H[b] <= H[b, i]].sum() - H[b, i]).item() <= bound for i in range(7)]
            assert accept[b].tolist() == expected
            assert accept[b, H[b].argmin()]  # the most certain position is always accepted
        assert accept.all() == (bound == 100.0)
    # tau = t_min + (t_max - t_min) n / N: t_max at the first step (n = N), t_min + (t_max - t_min) / N at the last
    assert linear_temperature(8, 8, 0.4, 0.8).item() == pytest.approx(0.8)
    assert linear_temperature(1, 8, 0.4, 0.8).item() == pytest.approx(0.45)
    assert linear_temperature(4, 8, 0.4, 0.8).dtype == torch.float32


@pytest.mark.parametrize(
    "steps, stability, confidence, bound, initial",
    [
        (4, 1, 0.005, 0.1, False),  # DiffusionGemma's defaults: never confident here, every step runs
        (6, 1, 5.0, 0.1, False),  # confident at once (entropy < log 96): rows stop when their argmax is stable
        (5, 2, 4.45, 30.0, True),  # a loose bound accepts many tokens; a given first canvas
        # stability 0: stop on confidence alone; a threshold inside the tiny model's entropies (~4.54 nats) makes
        # rows stop at different steps, the stopped ones frozen while the others go on
        (8, 0, 4.545, 8.0, False),
        (8, 0, 4.548, 0.1, True),
    ],
)
def test_sampling_equals_the_models_own_generate(hf_model, steps, stability, confidence, bound, initial):
    """Same initial canvas and same draws (torch's global generator, as transformers draws) -> the same tokens,
    with EOS (id 7 here, frequent enough in the tiny model) ending rows and padding them."""
    lm = DiffusionGemmaLM(hf_model)
    context = torch.tensor([[BOS, 5, 6, 7, 8], [BOS, 9, 10, 11, 12], [BOS, 3, 3, 3, 3]])  # (B, P) backbone ids
    first = torch.randint(0, V_HF, (3, CANVAS), generator=torch.Generator().manual_seed(4)) if initial else None
    knobs = dict(max_denoising_steps=steps, stability_threshold=stability, confidence_threshold=confidence)
    gen_config = transformers.DiffusionGemmaGenerationConfig(
        **knobs, sampler_config=transformers.EntropyBoundSamplerConfig(entropy_bound=bound)
    )
    settings = CanvasSettings.from_generation_config(gen_config)
    assert (settings.max_denoising_steps, settings.entropy_bound) == (steps, bound)
    extra = {} if first is None else {"decoder_input_ids": first}
    for seed in (1, 2):
        torch.manual_seed(seed)
        theirs = hf_model.generate(
            context, generation_config=gen_config, max_new_tokens=10, eos_token_id=7, pad_token_id=PAD, **extra
        ).sequences
        torch.manual_seed(seed)
        ours = sample_canvases(lm, context, 10, settings, TorchNoise(), eos_ids=(7,), pad_id=PAD, initial_canvas=first)
        assert ours.tokens.shape == theirs.shape == (3, 5 + 3 * CANVAS)  # ceil(10 / 4) canvases
        assert torch.equal(ours.tokens, theirs)
        if stability == 0:
            assert len(set(ours.steps.tolist())) > 1  # the rows did stop at different steps


def test_row_noise_is_batch_invariant_and_seeded(hf_model):
    """Sample i of seed s is the same alone or in a batch of 3, although rows stop at different steps and may end
    (EOS) at different canvases: a row draws from its own generator, and only while it denoises."""
    lm = DiffusionGemmaLM(hf_model)
    settings = CanvasSettings(max_denoising_steps=8, stability_threshold=0, confidence_threshold=4.545)
    context = torch.tensor([[BOS, 5, 6], [BOS, 9, 10], [BOS, 3, 3]])

    def run(seed, rows, greedy=False):
        noise = RowNoise(row_generators(seed, len(rows), rows[0]), greedy=greedy)
        return sample_canvases(lm, context[rows], 12, settings, noise, eos_ids=(7,), pad_id=PAD)

    batch = run(0, [0, 1, 2])
    assert len(set(batch.steps.tolist())) > 1  # the rows did stop at different steps
    for i in range(3):
        alone = run(0, [i])
        assert alone.steps.item() == batch.steps[i].item()
        assert torch.equal(alone.tokens[0], batch.tokens[i, : alone.tokens.shape[1]])
        # a row that ended before the batch did has only pad after its own end
        assert (batch.tokens[i, alone.tokens.shape[1] :] == PAD).all()
    assert torch.equal(run(0, [0, 1, 2]).tokens, batch.tokens)  # same seed, same samples
    assert not torch.equal(run(1, [0, 1, 2]).tokens, batch.tokens)  # another seed, other samples
    greedy = run(0, [0, 1, 2], greedy=True)
    assert not torch.equal(greedy.tokens, batch.tokens)  # the argmax denoiser is another sampler


def test_row_noise_draws_the_same_tokens_a_chunk_of_positions_at_a_time(monkeypatch):
    import tokendiff.samplers.canvas as canvas

    logits = torch.randn(3, 5, 7, generator=torch.Generator().manual_seed(0)) * 3  # (B, C, V)
    active = torch.tensor([True, False, True])
    whole = RowNoise(row_generators(4, 3)).denoise(logits, active)
    monkeypatch.setattr(canvas, "CDF_CHUNK", 7)  # one position of one row's table at a time
    chunked = RowNoise(row_generators(4, 3)).denoise(logits, active)
    assert torch.equal(whole, chunked) and (whole[1] == 0).all()  # an inactive row draws nothing
    # and the draws follow softmax(logits): 4000 rows of one position, each frequency within 5 standard errors
    one = logits[:1, :1].expand(4000, 1, 7)
    drawn = RowNoise(row_generators(5, 4000)).denoise(one, torch.ones(4000, dtype=torch.bool))
    p = torch.softmax(logits[0, 0].double(), -1)
    freq = torch.bincount(drawn.flatten(), minlength=7).double() / 4000
    assert ((freq - p).abs() <= 5 * (p * (1 - p) / 4000).sqrt() + 1e-9).all()


def test_stable_and_confident_stopping():
    """A row stops at the first step whose argmax canvas equals each of the previous ``stability`` ones and
    whose mean entropy is below the threshold; fabricated canvases make every case explicit."""
    flat = torch.zeros(2, 3, 5)  # (B, C, V) uniform: entropy log 5 ~ 1.609 nats at every position
    sharp = torch.tensor([0.0, -30, -30, -30, -30]).expand(2, 3, 5)  # entropy ~ 0
    a, b = torch.tensor([[1, 2, 3], [1, 2, 3]]), torch.tensor([[1, 2, 3], [0, 2, 3]])  # row 1 differs
    stop = StableAndConfident(stability=2, confidence=0.5)
    assert stop(a, sharp).tolist() == [False, False]  # no history yet
    assert stop(a, sharp).tolist() == [False, False]  # one earlier canvas, two needed
    assert stop(b, sharp).tolist() == [True, False]  # row 0 as in the last two (a, a); row 1 changed
    assert stop(b, sharp).tolist() == [True, False]  # row 1: its history (a, b) still holds the old canvas
    assert stop(b, sharp).tolist() == [True, True]  # row 1: (b, b), stable now
    assert stop(b, flat).tolist() == [False, False]  # stable, but log 5 > 0.5: not confident
    assert StableAndConfident(0, 2.0)(a, flat).tolist() == [True, True]  # stability 0: confidence alone, log 5 < 2


def test_generate_routes_to_the_canvas_loop(hf_model):
    """tokendiff's generate() sends a DiffusionGemma to its own loop: texts in tokendiff's ids, batch-invariant."""
    tok = word_tokenizer()
    lm = DiffusionGemmaLM(hf_model, vocab_size=tok.vocab_size, mask_id=tok.hf_mask_id, tokenizer=tok)
    options = dict(num_samples=3, length=11, steps=5, prompt="w1 w2", seed=3)
    frames = []
    texts, stats = generate(lm, None, tok, batch_size=3, callback=lambda step, x: frames.append(x), **options)
    alone, _ = generate(lm, None, tok, batch_size=1, **options)
    assert texts == alone
    assert len(frames) == stats["model_calls"]  # one frame a decoder step (one batch here), in tokendiff ids
    assert all(f.shape[0] == 3 and 0 <= f.min() and f.max() <= tok.vocab_size for f in frames)
    assert stats["model_calls"] > 0 and stats["tokens"] == 33
    for text in texts:
        assert text.startswith("w1 w2")  # the prompt is kept (BOS is the model's, not part of the text)
        assert len(tok.encode(text)) <= 11
    with pytest.raises(TokenDiffError, match="templates"):
        generate(lm, None, tok, num_samples=1, length=8, template="w1 [MASK:3]")


def test_save_pretrained_loads_back_with_the_same_logits(hf_model, tmp_path):
    tok = word_tokenizer()
    hf_model.save_pretrained(tmp_path)
    tok.save(tmp_path)
    loaded = load_diffusion_gemma(tmp_path, "cpu")
    assert isinstance(loaded, DiffusionGemmaLM) and not loaded.backbone.training
    assert loaded.tokenizer is not None and (loaded.vocab_size, loaded.mask_id) == (V_HF - 1, MASK)
    lm = DiffusionGemmaLM(hf_model, vocab_size=V_HF - 1, mask_id=MASK)
    g = torch.Generator().manual_seed(5)
    x = torch.randint(0, V_HF - 1, (2, 6 + CANVAS), generator=g)  # context then canvas, tokendiff ids
    previous = torch.randn(2, CANVAS, V_HF - 1, generator=g)
    with torch.no_grad():
        assert torch.equal(loaded(x), lm(x))
        assert torch.equal(
            loaded.canvas_logits(x[:, :6], x[:, 6:], previous), lm.canvas_logits(x[:, :6], x[:, 6:], previous)
        )
    # a folder of another architecture is refused in one line
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(TokenDiffError, match="model_type='bert'"):
        load_diffusion_gemma(other, "cpu")


def test_tokendiff_sample_runs_on_a_diffusion_gemma_folder(hf_model, tmp_path, capsys):
    from tokendiff.cli.main import main

    folder = tmp_path / "dg"
    hf_model.save_pretrained(folder)
    word_tokenizer().save(folder)
    assert main(["sample", f"checkpoint={folder}", "num_samples=2", "sampling.length=8", "sampling.steps=4"]) == 0
    out = capsys.readouterr().out
    assert out.count("----- sample") == 2


# ---------------------------------------------------------------- the bound: tokendiff eval and lm-eval
def test_block_logits_are_the_two_pass_denoiser_given_bos_and_the_clean_canvases_before(hf_model):
    # forward_block_diffusion (what the block objective scores) against canvas_logits by hand: canvas b given BOS
    # and the clean canvases before it, its second pass fed the first pass's logits
    model = DiffusionGemmaLM(hf_model)  # no tokenizer: tokendiff ids are the backbone's
    g = torch.Generator().manual_seed(0)
    x0, xt = torch.randint(5, V_HF, (2, 3 * CANVAS), generator=g), torch.randint(5, V_HF, (2, 3 * CANVAS), generator=g)
    with torch.no_grad():
        logits = model.forward_block_diffusion(xt, x0)  # (2, 12, V)
        assert logits.shape == (2, 3 * CANVAS, V_HF)
        for a in range(0, 3 * CANVAS, CANVAS):
            context = torch.cat([torch.full((2, 1), BOS), x0[:, :a]], dim=1)
            first = model.canvas_logits(context, xt[:, a : a + CANVAS])
            second = model.canvas_logits(context, xt[:, a : a + CANVAS], first)
            torch.testing.assert_close(logits[:, a : a + CANVAS], second, rtol=0, atol=1e-5)
            assert (second - first).abs().max() > 1e-4  # the second pass is not the first
        # a later clean canvas changes nothing before it; an earlier one changes what follows
        later, earlier = x0.clone(), x0.clone()
        later[:, -1], earlier[:, 0] = (x0[:, -1] + 1) % V_HF, (x0[:, 0] + 1) % V_HF
        torch.testing.assert_close(model.forward_block_diffusion(xt, later), logits, rtol=0, atol=0)
        assert (model.forward_block_diffusion(xt, earlier)[:, CANVAS:] - logits[:, CANVAS:]).abs().max() > 1e-4
    with pytest.raises(TokenDiffError, match="multiple of 4"):
        model.forward_block_diffusion(xt[:, :5], x0[:, :5])
    with pytest.raises(TokenDiffError, match="exceed"):
        model.forward_block_diffusion(torch.zeros(1, 128, dtype=torch.long), torch.zeros(1, 128, dtype=torch.long))


def text_file(tmp_path, words: int = 3000):
    g = torch.Generator().manual_seed(1)
    picks = torch.randint(5, V_HF, (words,), generator=g).tolist()
    path = tmp_path / "words.txt"
    path.write_text(" ".join(WORDS[i] for i in picks))
    return path


def test_tokendiff_eval_prints_the_uniform_block_bound_of_a_diffusion_gemma(hf_model, tmp_path, capsys):
    from tokendiff.cli.main import main

    folder = tmp_path / "dg"
    hf_model.save_pretrained(folder)
    word_tokenizer().save(folder)
    data = text_file(tmp_path)
    args = ["eval", f"checkpoint={folder}", f"eval.data={data}", "eval.max_windows=2", "eval.num_draws=2"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    # windows of whole canvases after BOS (124 of the 128 positions), a finite bound with its error
    assert out["tokens_per_sequence"] == 124 and out["sequences"] == 2 and out["draws"] == 2
    assert 0 < out["nelbo_nats_per_token"] < 100 and out["nelbo_nats_per_token_stderr"] > 0
    assert out["prior_nats_per_token"] > 0 and out["reconstruction_nats_per_token"] == 0.0
    assert main(args + ["model.block_size=10"]) == 2  # not a whole number of canvases: one line
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("tokendiff eval: error:") and "whole number of this DiffusionGemma" in last


def test_the_lm_eval_backend_scores_and_writes_with_a_diffusion_gemma(hf_model, tmp_path):
    from lm_eval.api.instance import Instance

    from tokendiff.evaluation.conditional import score_continuation
    from tokendiff.harness.backend import TokendiffLM

    folder = tmp_path / "dg"
    hf_model.save_pretrained(folder)
    word_tokenizer().save(folder)
    lm = TokendiffLM(checkpoint=str(folder), mc_num=4, batch_size=4)
    context, continuation = "w1 w2 w3 w4 w5", " w6 w7 w8"
    request = Instance(request_type="loglikelihood", doc={}, arguments=(context, continuation), idx=0)
    ((loglik, greedy),) = lm.loglikelihood([request])
    ctx, cont = lm.tokenizer.encode(context), lm.tokenizer.encode(continuation)
    nats = score_continuation(lm.model, lm.kernel, ctx, cont, window=lm.window, draws=4, seed=0, batch_size=4).nats
    assert loglik == pytest.approx(-nats, rel=1e-9) and loglik < 0 and isinstance(greedy, bool)
    gen = Instance(request_type="generate_until", doc={}, arguments=(context, {"until": ["\n"], "max_gen_toks": 6}),
                   idx=0)  # fmt: skip
    (text,) = lm.generate_until([gen])
    assert isinstance(text, str) and 0 < len(text.split()) <= 6
