"""Samplers: exactness on known distributions, and invariants with their reasons."""

import math

import pytest
import torch

from conftest import ExactConditionals
from tokendiff.errors import TokenDiffError
from tokendiff.models import Backbone, Transformer
from tokendiff.processes import AbsorbingKernel
from tokendiff.samplers import DiffusionSampler, row_generators
from tokendiff.samplers.noise import process_log_probs
from tokendiff.samplers.threshold import confidence_measure
from tokendiff.schedules import LogLinearSchedule

V = 11


class FixedLogits(Backbone):
    """A factorized "model": the same per-position logits whatever the input."""

    time_conditioning = False

    def __init__(self, logits):
        super().__init__()
        self.logits = logits  # (L, V)
        self.block_size = logits.shape[0]
        self.calls = 0

    def forward(self, x, t=None):
        self.calls += 1
        return self.logits.expand(x.shape[0], -1, -1)


def tiny_model(seed=0, L=24):
    torch.manual_seed(seed)
    return Transformer(V, n_layer=2, n_head=2, n_embd=32, block_size=L).eval()


def process():
    return AbsorbingKernel(V, LogLinearSchedule())


def masked_start(B, L, prefix=()):
    x = torch.full((B, L), V)
    x[:, : len(prefix)] = torch.tensor(prefix)
    return x


@pytest.mark.parametrize("strategy", ["ancestral", "confidence", "threshold"])
def test_prompt_kept_no_mask_left_and_seeded(strategy):
    model, prefix = tiny_model(), (3, 1, 4)
    sampler = DiffusionSampler(model, process(), steps=10, strategy=strategy)
    x = masked_start(5, 24, prefix)
    a = sampler.sample(x, row_generators(7, 5))
    b = sampler.sample(x, row_generators(7, 5))
    c = sampler.sample(x, row_generators(8, 5))
    # Prompt tokens never change: SUBS carries every unmasked token over.
    assert (a[:, :3] == torch.tensor(prefix)).all()
    # No mask remains: the last step goes to alpha(0) = 1, which reveals every remaining mask.
    assert (a != V).all() and (a < V).all()
    # Same seed, same output; another seed, another output (11^21 possible continuations).
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("strategy", ["ancestral", "confidence", "threshold"])
def test_output_does_not_depend_on_batch_size(strategy):
    # Each row draws its noise from its own generator seeded by (seed, row index).
    model = tiny_model()
    sampler = DiffusionSampler(model, process(), steps=12, strategy=strategy)
    together = sampler.sample(masked_start(6, 24), row_generators(3, 6))
    one_by_one = torch.cat([sampler.sample(masked_start(1, 24), row_generators(3, 1, start=i)) for i in range(6)])
    assert torch.equal(together, one_by_one)


@pytest.mark.parametrize("strategy", ["ancestral", "confidence", "threshold"])
def test_cached_equals_uncached_exactly_with_fewer_calls(strategy):
    # A time-agnostic model gives the same logits for the same input, and both loops draw the same noise,
    # so skipping the call when nothing changed cannot change the output (atol = 0).
    model = tiny_model()
    steps = 200  # more steps than positions: many steps reveal nothing
    cached = DiffusionSampler(model, process(), steps=steps, strategy=strategy, cache=True)
    plain = DiffusionSampler(model, process(), steps=steps, strategy=strategy, cache=False)
    x = masked_start(3, 24, (1, 2))
    out_cached = cached.sample(x, row_generators(0, 3))
    out_plain = plain.sample(x, row_generators(0, 3))
    assert torch.equal(out_cached, out_plain)
    if strategy == "threshold":  # every step reveals a token, so nothing is skipped: the loop ends early instead
        assert cached.model_calls == plain.model_calls <= 22
        return
    assert cached.model_calls < plain.model_calls
    # At most one call per distinct batch state: each call but the first follows a step that revealed
    # a token in some row, and each of the 3 rows has 22 masks to reveal.
    assert cached.model_calls <= 3 * 22 + 1


def test_ancestral_marginals_of_a_factorized_model():
    # With logits that ignore the input, every position's final token is drawn from softmax(logits)
    # exactly (the reveal time does not matter). 4000 samples: each frequency within 5 standard errors.
    L, n = 3, 4000
    logits = torch.randn(L, V, generator=torch.Generator().manual_seed(0)) * 1.5
    sampler = DiffusionSampler(FixedLogits(logits), process(), steps=8)
    out = sampler.sample(masked_start(n, L), row_generators(0, n))
    probs = logits.double().softmax(-1)
    for i in range(L):
        freq = torch.bincount(out[:, i], minlength=V).double() / n
        se = (probs[i] * (1 - probs[i]) / n).sqrt()
        assert ((freq - probs[i]).abs() <= 5 * se + 1e-12).all()


def test_ancestral_with_exact_conditionals_reproduces_the_joint():
    # Revealing one token at a time from the exact conditionals samples the joint exactly (chain rule in
    # a random order). The joint is strongly correlated (TV 0.4 from the product of its marginals, which
    # a sampler revealing both tokens at once would produce). With 64 steps both tokens are revealed in
    # the same step with probability ~1/64, an error of at most 0.4/64 in TV; with 3000 samples the
    # sampling error of a TV distance over 4 outcomes is ~0.02. We ask TV < 0.05.
    Vj, L, n = 2, 2, 3000
    joint = {(0, 0): 0.45, (1, 1): 0.45, (0, 1): 0.05, (1, 0): 0.05}
    model = ExactConditionals(joint, Vj, L)
    table = {}
    for s in [(a, b) for a in range(3) for b in range(3)]:
        table[s] = model(torch.tensor([s]))[0]
    fast = FixedLookup(table)
    sampler = DiffusionSampler(fast, AbsorbingKernel(Vj, LogLinearSchedule()), steps=64)
    out = sampler.sample(torch.full((n, L), Vj), row_generators(1, n))
    counts = {}
    for row in out.tolist():
        counts[tuple(row)] = counts.get(tuple(row), 0) + 1
    tv = 0.5 * sum(abs(counts.get(s, 0) / n - p) for s, p in joint.items())
    assert tv < 0.05


def test_each_step_reveals_a_masked_token_with_the_reverse_probability():
    # MDLM eq. 7: from t to s a masked token is revealed with probability (alpha_s - alpha_t)/(1 - alpha_t).
    # After the first of 4 steps (t = 1 -> s = 0.75) that is (0.25 * 0.999)/(1 - 0.001) = 0.25.
    L, n = 16, 500
    sampler = DiffusionSampler(FixedLogits(torch.zeros(L, V)), process(), steps=4)
    seen = []
    sampler.sample(masked_start(n, L), row_generators(0, n), callback=lambda i, x: seen.append(x.clone()))
    revealed = (seen[0] != V).double().mean().item()
    assert abs(revealed - 0.25) < 5 * math.sqrt(0.25 * 0.75 / (n * L))


class FixedLookup(Backbone):
    time_conditioning = False
    block_size = 2

    def __init__(self, table):
        super().__init__()
        self.table = table

    def forward(self, x, t=None):
        return torch.stack([self.table[tuple(r)] for r in x.tolist()])


def test_top_p_keeps_the_smallest_nucleus_and_temperature_zero_is_greedy():
    logits = torch.log(torch.tensor([[[0.5, 0.3, 0.15, 0.05]]]))
    kept = process_log_probs(logits, 1.0, 0.7).exp()[0, 0]
    # 0.5 alone is below 0.7, 0.5 + 0.3 reaches it: the nucleus is the first two tokens, renormalized.
    torch.testing.assert_close(kept, torch.tensor([0.625, 0.375, 0.0, 0.0], dtype=torch.float64))
    greedy = process_log_probs(logits, 0.0, 1.0).exp()[0, 0]
    assert greedy.tolist() == [1.0, 0.0, 0.0, 0.0]
    # top-k keeps the k most likely, renormalized; then top-p works on what is left
    top3 = process_log_probs(logits, 1.0, 1.0, top_k=3).exp()[0, 0]
    torch.testing.assert_close(top3, torch.tensor([0.5, 0.3, 0.15, 0.0], dtype=torch.float64) / 0.95)
    both = process_log_probs(logits, 1.0, 0.5, top_k=3).exp()[0, 0]  # 0.5/0.95 = 0.526 >= 0.5: the top token
    assert both.tolist() == [1.0, 0.0, 0.0, 0.0]
    assert torch.equal(process_log_probs(logits, 1.0, 1.0, top_k=4), process_log_probs(logits, 1.0, 1.0))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"steps": 0}, "sampling.steps=0"),
        ({"temperature": -0.5}, "sampling.temperature=-0.5"),
        ({"strategy": "zigzag"}, "zigzag"),
        ({"top_p": 0.0}, "sampling.top_p=0.0"),
        ({"top_k": -1}, "sampling.top_k=-1"),
        ({"strategy": "threshold", "threshold": 1.5}, "sampling.threshold=1.5"),
        ({"strategy": "threshold", "confidence": "vibes"}, "vibes"),
    ],
)
def test_bad_sampler_arguments_name_the_value(kwargs, message):
    with pytest.raises(TokenDiffError, match=message):
        DiffusionSampler(tiny_model(), process(), **kwargs)


def test_gumbel_noise_is_float64():
    # float32 uniforms cap the Gumbel tail at -log(-log(1 - 2^-24)) ~ 16.6; float64 reaches ~36.7.
    from tokendiff.samplers.noise import row_uniform

    u = row_uniform(row_generators(0, 2), (1000,), "cpu")
    assert u.dtype == torch.float64 and u.shape == (2, 1000)
    assert (u > 0).all() and (u < 1).all()  # so that -log(-log(u)) is finite
    # float64: values below 2^-24 apart are distinct, which float32 could not represent
    assert len(torch.unique(u)) == u.numel() and (u * 2**24 % 1 != 0).any()


def confident_logits(L=12, confident=(0, 3, 4, 9)):
    """Positions in ``confident`` put 0.99 on one token; the others are uniform over V."""
    logits = torch.zeros(L, V)
    for i in confident:
        logits[i, i % V] = math.log(0.99 * (V - 1) / 0.01)  # p = 0.99 on token i % V
    return logits


def test_threshold_reveals_every_confident_token_in_one_step():
    model = FixedLogits(confident_logits())
    sampler = DiffusionSampler(model, process(), steps=12, strategy="threshold", threshold=0.9)
    seen = []
    out = sampler.sample(masked_start(2, 12), row_generators(0, 2), callback=lambda i, x: seen.append(x.clone()))
    first = seen[0]
    for i in (0, 3, 4, 9):  # p = 0.99 > 0.9: revealed at the first step, as the token it is sure of
        assert (first[:, i] == i % V).all()
    # the uniform positions (p = 1/11) pass no threshold: the schedule reveals them, at least one a step
    assert ((first != V).sum(-1) >= 4).all() and ((first != V).sum(-1) <= 5).all()
    assert (out != V).all()
    assert sampler.model_calls <= 12 - 4 + 1  # the 4 confident tokens cost one call between them


def test_threshold_zero_reveals_everything_at_once_and_one_is_the_schedule():
    model = FixedLogits(confident_logits())
    everything = DiffusionSampler(model, process(), steps=12, strategy="threshold", threshold=0.0)
    out = everything.sample(masked_start(2, 12, (5,)), row_generators(0, 2))
    assert everything.model_calls == 1 and (out != V).all() and (out[:, 0] == 5).all()
    # threshold 1: nothing is that sure, so each step reveals what the schedule says (at least one)
    model.calls = 0
    strict = DiffusionSampler(model, process(), steps=6, strategy="threshold", threshold=1.0)
    out = strict.sample(masked_start(1, 12), row_generators(0, 1))
    assert (out != V).all() and strict.model_calls == 6


@pytest.mark.parametrize("kind", ["prob", "margin", "entropy"])
def test_confidence_measures_lie_in_zero_one_with_known_ends(kind):
    uniform = torch.full((1, 1, V), -math.log(V), dtype=torch.float64)
    sure = torch.full((1, 1, V), -1e9, dtype=torch.float64)
    sure[..., 2] = 0.0
    log_ps = torch.cat([uniform, sure], dim=1)  # (1, 2, V)
    candidate = log_ps[..., 2]  # the log-probability of token 2 at each position
    c = confidence_measure(kind, log_ps, candidate)
    assert c.shape == (1, 2) and torch.allclose(c[0, 1], torch.tensor(1.0, dtype=torch.float64))
    expected_uniform = {"prob": 1 / V, "margin": 0.0, "entropy": 0.0}[kind]
    assert abs(c[0, 0].item() - expected_uniform) < 1e-9


def joint_tv(sampler, joint, Vj, L, n=3000):
    out = sampler.sample(torch.full((n, L), Vj), row_generators(1, n))
    counts = {}
    for row in out.tolist():
        counts[tuple(row)] = counts.get(tuple(row), 0) + 1
    return 0.5 * sum(abs(counts.get(s, 0) / n - p) for s, p in joint.items())


def test_blocks_of_one_token_sample_the_joint_exactly_with_one_step_each():
    # Block-wise sampling with blocks of one token is the chain rule left to right: exact from exact
    # conditionals with a single step per block. Without blocks, 2 steps reveal both tokens in the same step
    # half of the time, sampling them independently: TV ~ 0.5 * 0.4 from this correlated joint.
    Vj, L = 2, 2
    joint = {(0, 0): 0.45, (1, 1): 0.45, (0, 1): 0.05, (1, 0): 0.05}
    model = ExactConditionals(joint, Vj, L)
    fast = FixedLookup({s: model(torch.tensor([s]))[0] for s in [(a, b) for a in range(3) for b in range(3)]})
    kernel = AbsorbingKernel(Vj, LogLinearSchedule())
    assert joint_tv(DiffusionSampler(fast, kernel, steps=2, block_size=1), joint, Vj, L) < 0.05
    assert joint_tv(DiffusionSampler(fast, kernel, steps=2), joint, Vj, L) > 0.1


@pytest.mark.parametrize("strategy", ["ancestral", "confidence", "threshold"])
def test_blocks_go_left_to_right_keep_the_prompt_and_fill_everything(strategy):
    model, prefix, B = tiny_model(), (3, 1, 4), 5
    sampler = DiffusionSampler(model, process(), steps=12, strategy=strategy, block_size=B)
    states = {}
    x = masked_start(4, 24, prefix)
    out = sampler.sample(x, row_generators(2, 4), callback=lambda i, s: states.__setitem__(i, s.clone()))
    assert (out[:, :3] == torch.tensor(prefix)).all() and (out < V).all()
    # blocks start at the first position to generate (3): [3, 8), [8, 13), ..., [23, 24); 5 blocks share
    # 12 steps as 3, 3, 2, 2, 2. After a block's last step (or its early end, once it is complete) the
    # block is complete and everything after it is as it started: masks (and the rare prior draw of a
    # real token, eps = 1e-3).
    first = states[min(states)]
    for b, end in enumerate([3, 6, 8, 10, 12]):
        state = states[max(i for i in states if i < end)]
        cut = 3 + (b + 1) * B
        assert (state[:, :cut] != V).all()
        if cut < 24:
            assert torch.equal(state[:, cut:], first[:, cut:]) and (state[:, cut:] == V).float().mean() > 0.9
    # the same rows one at a time: block-wise sampling keeps samples independent of the batch
    alone = torch.cat([sampler.sample(x[:1], row_generators(2, 1, start=i)) for i in range(4)])
    assert torch.equal(out, alone)


def test_one_block_covering_the_sequence_is_the_plain_sampler():
    model = tiny_model()
    x = masked_start(3, 24, (1, 2))
    plain = DiffusionSampler(model, process(), steps=9).sample(x, row_generators(5, 3))
    block = DiffusionSampler(model, process(), steps=9, block_size=64).sample(x, row_generators(5, 3))
    assert torch.equal(plain, block)


def test_remasking_keeps_the_forward_marginals_and_ends_with_no_mask():
    # ReMDM's step keeps q(z_s | x): after each step the share of masked tokens is 1 - alpha_s, remasking or
    # not; with remask_eta > 0 some revealed tokens are masked again (and written anew) on the way.
    kernel, steps, n, L = process(), 8, 400, 12
    model = FixedLogits(confident_logits(L))
    sampler = DiffusionSampler(model, kernel, steps=steps, remask="cap", remask_eta=0.3)
    shares, changed = {}, torch.zeros(n, L, dtype=torch.bool)
    previous = {}

    def watch(i, x):
        shares[i] = (x == V).double().mean().item()
        if "x" in previous:
            changed.__ior__((previous["x"] != V) & (x != previous["x"]))
        previous["x"] = x.clone()

    out = sampler.sample(masked_start(n, L), row_generators(3, n), callback=watch)
    alphas = kernel.alpha(torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64))
    for i in range(steps - 1):
        expected = 1.0 - alphas[i + 1].item()
        se = math.sqrt(expected * (1 - expected) / n) + 1e-9  # rows independent; positions within a row too
        assert abs(shares[i] - expected) < 5 * se, (i, shares[i], expected)
    assert (out != V).all() and changed.any()  # revealed tokens were remasked (and redrawn) along the way


def test_remasking_with_exact_conditionals_still_samples_the_joint():
    Vj, L = 2, 2
    joint = {(0, 0): 0.45, (1, 1): 0.45, (0, 1): 0.05, (1, 0): 0.05}
    model = ExactConditionals(joint, Vj, L)
    fast = FixedLookup({s: model(torch.tensor([s]))[0] for s in [(a, b) for a in range(3) for b in range(3)]})
    kernel = AbsorbingKernel(Vj, LogLinearSchedule())
    assert joint_tv(DiffusionSampler(fast, kernel, steps=64, remask="cap", remask_eta=0.1), joint, Vj, L) < 0.05


def test_remasking_needs_masks_and_the_ancestral_step():
    with pytest.raises(TokenDiffError, match="strategy=ancestral"):
        DiffusionSampler(tiny_model(), process(), strategy="confidence", remask="cap")
    with pytest.raises(TokenDiffError, match="remask='loop'"):
        DiffusionSampler(tiny_model(), process(), remask="loop")


class Recording(Backbone):
    """Wraps a model and records the lengths of the sequences it was given."""

    time_conditioning = False

    def __init__(self, model):
        super().__init__()
        self.model, self.block_size, self.lengths = model, model.block_size, []

    def forward(self, x, t=None):
        self.lengths.append(x.shape[1])
        return self.model(x, t)


def test_blocks_slide_the_context_along_texts_longer_than_the_model():
    model = Recording(tiny_model(L=8))
    sampler = DiffusionSampler(model, process(), steps=10, block_size=4)
    x = masked_start(3, 20, (2, 7))
    out = sampler.sample(x, row_generators(1, 3))
    assert out.shape == (3, 20) and (out != V).all() and (out[:, :2] == torch.tensor([2, 7])).all()
    assert set(model.lengths) == {8}  # every call saw one context-sized window, never the 20 tokens
    alone = torch.cat([sampler.sample(x[:1], row_generators(1, 1, start=i)) for i in range(3)])
    assert torch.equal(out, alone)


def test_every_row_ending_stops_the_blocks_and_fills_the_rest_with_the_end():
    L, eos = 16, 7
    logits = torch.zeros(L, V)
    logits[5, eos] = 50.0  # position 5 is surely the end; elsewhere the end is never drawn
    logits[torch.arange(L) != 5, eos] = -50.0
    model = FixedLogits(logits)
    stopping = DiffusionSampler(model, process(), steps=16, block_size=4)
    out = stopping.sample(masked_start(2, L), row_generators(0, 2), stop_id=eos)
    assert (out[:, 5] == eos).all() and (out[:, 8:] == eos).all()  # blocks [8, 16) were never denoised
    calls = stopping.model_calls
    full = DiffusionSampler(model, process(), steps=16, block_size=4)
    rest = full.sample(masked_start(2, L), row_generators(0, 2))
    assert calls < full.model_calls and torch.equal(out[:, :8], rest[:, :8]) and (rest[:, 8:] != eos).all()


def test_generate_trims_each_text_at_its_first_end_token():
    from tokendiff.samplers.text import generate

    class Letters:
        eos_id = 7

        def encode(self, text):
            return [ord(c) - 97 for c in text]

        def decode(self, ids):
            return "".join(chr(97 + i) for i in ids)

    L = 16
    logits = torch.full((L, V), -50.0)
    logits[torch.arange(L), torch.arange(L) % 7] = 50.0  # position j is surely token j % 7, never the end...
    logits[9] = -50.0
    logits[9, 7] = 50.0  # ...but position 9, which ends the text
    texts, _ = generate(FixedLogits(logits), process(), Letters(), num_samples=2, length=L, steps=8, block_size=4)
    assert texts == ["abcdefgab", "abcdefgab"]


def test_sampling_options_are_config_keys_and_generate_keywords():
    import dataclasses
    import inspect

    from tokendiff.configs.schema import SamplingConfig
    from tokendiff.samplers.text import SAMPLING_KEYS, generate, sampling_options

    fields = {f.name for f in dataclasses.fields(SamplingConfig)}
    assert set(SAMPLING_KEYS) <= fields and set(SAMPLING_KEYS) <= set(inspect.signature(generate).parameters)
    assert sampling_options(SamplingConfig(top_k=3, block_size=8))["top_k"] == 3


def test_visible_limit_shows_the_model_at_most_that_many_known_tokens_and_stays_batch_invariant():
    # the training-free check for naive models: never more than visible_limit * L known tokens in a model call
    torch.manual_seed(0)
    model = Transformer(vocab_size=2, n_layer=1, n_head=2, n_embd=16, block_size=20).eval()
    seen = []

    class Spy(Backbone):
        time_conditioning = False
        block_size = 20

        def forward(self, x, t=None):
            seen.append(int((x != 2).sum(1).max()))
            return model(x)

    kernel = AbsorbingKernel(2, LogLinearSchedule())
    options = dict(steps=10, visible_limit=0.25, visible_subsets=2)
    batch = DiffusionSampler(Spy(), kernel, **options).sample(torch.full((3, 20), 2), row_generators(7, 3))
    assert max(seen) <= 5 and (batch != 2).all()
    alone = DiffusionSampler(Spy(), kernel, **options).sample(torch.full((1, 20), 2), row_generators(7, 1, start=2))
    assert torch.equal(alone[0], batch[2])
    with pytest.raises(TokenDiffError, match="visible_limit=0"):
        DiffusionSampler(model, kernel, visible_limit=0.0)
