"""-log p(continuation | context): exact for autoregressive models, the conditional NELBO for diffusion models,
checked by enumeration on a known joint (V = 2 or 3, a few tokens)."""

import itertools
import math

import pytest
import torch
from conftest import ExactConditionals, random_joint
from test_block_diffusion import ExactBlockConditionals
from toy import Toy

from tokendiff.evaluation.conditional import score_continuation, score_tokens, windows
from tokendiff.models import Transformer
from tokendiff.processes import AbsorbingKernel, HybridKernel, UniformKernel
from tokendiff.processes.absorbing import scored_nll
from tokendiff.schedules import LogLinearSchedule


def conditional(joint: dict, x: tuple, c: int) -> float:
    """-log p(x[c:] | x[:c]) of a joint given as {sequence: probability}."""
    context = sum(p for s, p in joint.items() if s[:c] == x[:c])
    return -math.log(joint[x] / context)


def test_the_count_estimators_expectation_is_minus_log_p_of_the_continuation_given_the_context():
    # Every mask pattern S of the n continuation positions, weighted as the estimator draws it (count l uniform
    # on 1..n, then a uniform set of size l: probability 1 / (n C(n, l))) and scored n / l per masked token with
    # the exact conditionals p(x_i | visible tokens, context): the sum is -log p(continuation | context).
    V, L, c = 3, 5, 2
    joint = random_joint(V, L, seed=1)
    model = ExactConditionals(joint, V, L)
    for x in [(0, 1, 2, 0, 1), (2, 2, 0, 1, 1)]:
        x0 = torch.tensor([x])
        n = L - c
        expected = 0.0
        for size in range(1, n + 1):
            for S in itertools.combinations(range(c, L), size):
                masked = torch.zeros(1, L, dtype=torch.bool)
                masked[0, list(S)] = True
                xt = torch.where(masked, torch.full_like(x0, V), x0)
                nll = scored_nll(model(xt), x0, masked, torch.tensor(n / size, dtype=torch.float64)).sum()
                expected += float(nll) / (n * math.comb(n, size))
        assert expected == pytest.approx(conditional(joint, x, c), abs=1e-12)


@pytest.mark.parametrize("c", [0, 2])
def test_the_masked_estimate_converges_to_minus_log_p_within_its_standard_error(c):
    V, L = 3, 5
    joint = random_joint(V, L, seed=2)
    model = ExactConditionals(joint, V, L)
    kernel = AbsorbingKernel(V, LogLinearSchedule())
    x = (1, 0, 2, 2, 1)
    score = score_tokens(model, kernel, list(x), c, draws=600, seed=0, batch_size=600)
    truth = conditional(joint, x, c)
    assert score.tokens == L - c and score.draws == 600
    assert abs(score.nats - truth) < 4 * score.stderr, (score, truth)
    assert 0 < score.stderr < 0.2


def test_block_diffusion_scores_each_block_given_the_clean_earlier_ones():
    # V = 2, L = 4, blocks of 2 (test_block_diffusion's exact block conditionals); the context is the first
    # token, so block 0 holds the context and one scored token, block 1 two scored tokens
    joint = random_joint(2, 4, seed=3)
    model = ExactBlockConditionals(joint)
    model.block_diffusion, model.vocab_size = 2, 2
    kernel = AbsorbingKernel(2, LogLinearSchedule())
    x = (1, 0, 1, 1)
    score = score_tokens(model, kernel, list(x), 1, draws=800, seed=1, batch_size=800)
    truth = conditional(joint, x, 1)
    assert abs(score.nats - truth) < 4 * score.stderr, (score, truth)


class ContextAsserting(torch.nn.Module):
    """The exact denoiser of ``p(continuation | context)`` for a uniform kernel: it checks that the context
    arrives clean and denoises the continuation with the toy of the conditional joint."""

    def __init__(self, toy: Toy, context: tuple):
        super().__init__()
        self.toy, self.context = toy, torch.tensor(context)

    def forward(self, xt, t):
        c = len(self.context)
        assert torch.equal(xt[:, :c], self.context.expand(xt.shape[0], c)), "the context was corrupted"
        out = torch.zeros(*xt.shape, self.toy.V, dtype=torch.float64)
        out[:, c:] = self.toy.model(xt[:, c:], t)
        return out


@pytest.mark.parametrize(
    "kernel", [UniformKernel(2, LogLinearSchedule()), HybridKernel(2, p_uniform=0.5)], ids=["uniform", "hybrid"]
)
def test_the_uniform_bound_with_the_exact_conditional_denoiser_converges_to_its_enumerated_value(kernel):
    # With the exact denoiser of p(continuation | context) the conditional NELBO is -log p(continuation |
    # context) plus the prior's mismatch (tests/test_bounds.py); the context must stay clean in every call
    V, L, c = 2, 4, 1
    joint = random_joint(V, L, seed=4)
    x = (1, 0, 1, 1)
    table = torch.zeros((V,) * (L - c), dtype=torch.float64)
    for s, p in joint.items():
        if s[:c] == x[:c]:
            table[s[c:]] = p
    toy = Toy(kernel, table / table.sum())
    model = ContextAsserting(toy, x[:c])
    model.block_diffusion = None
    score = score_tokens(model, kernel, list(x), c, draws=1500, seed=2, batch_size=500)
    truth = conditional(joint, x, c) + toy.prior_gap(x[c:])
    assert abs(score.nats - truth) < 4 * score.stderr, (score, truth)


def test_the_autoregressive_score_is_exact_and_normalised():
    # the probabilities of all V^n continuations of a context add up to one (with and without a context: the
    # first token of a text without one is the sampler's uniform draw)
    torch.manual_seed(0)
    model = Transformer(vocab_size=3, block_size=8, n_layer=1, n_head=2, n_embd=8, causal=True).eval()
    for context in ([2, 0], []):
        total = sum(
            math.exp(-score_tokens(model, None, context + list(cont), len(context), draws=4, seed=0).nats)
            for cont in itertools.product(range(3), repeat=3)
        )
        assert total == pytest.approx(1.0, abs=1e-9)
    score = score_tokens(model, None, [2, 0, 1], 2, draws=4, seed=0)
    logits = model(torch.tensor([[2, 0]]), None).detach()
    assert score.nats == pytest.approx(-float(torch.log_softmax(logits[0, -1].double(), -1)[1]), abs=1e-6)
    assert score.stderr == 0.0 and score.draws == 1


def test_draws_depend_on_the_request_not_on_the_batch_size():
    torch.manual_seed(0)
    model = Transformer(vocab_size=5, block_size=12, n_layer=1, n_head=2, n_embd=16).eval()
    kernel = AbsorbingKernel(5, LogLinearSchedule())
    tokens = [1, 2, 3, 4, 0, 1, 2, 3]
    a = score_tokens(model, kernel, tokens, 3, draws=16, seed=5, batch_size=1)
    b = score_tokens(model, kernel, tokens, 3, draws=16, seed=5, batch_size=8)
    assert a.nats == pytest.approx(b.nats, abs=1e-5) and a.stderr == pytest.approx(b.stderr, abs=1e-5)
    assert score_tokens(model, kernel, tokens, 3, draws=16, seed=6).nats != a.nats  # the seed matters


def test_windows_split_long_texts_into_pieces_given_what_fits_before_them():
    tokens = list(range(10))
    assert windows(tokens, 3, 16) == [(tokens, 3)]
    assert windows(tokens, 8, 4) == [([6, 7, 8, 9], 2)]  # the context left-truncated to the window
    assert windows(tokens, 0, 4) == [([0, 1, 2, 3], 0), ([4, 5, 6, 7], 0), ([6, 7, 8, 9], 2)]
    assert windows(tokens, 10, 4) == []
    # the pieces of a long continuation add up: scored once each
    model = Transformer(vocab_size=10, block_size=4, n_layer=1, n_head=2, n_embd=8, causal=True).eval()
    whole = score_continuation(model, None, tokens[:2], tokens[2:], window=5, draws=1, seed=0)
    parts = sum(score_tokens(model, None, w, s, draws=1, seed=0).nats for w, s in windows(tokens, 2, 5))
    assert whole.nats == pytest.approx(parts) and whole.tokens == 8
