"""The step rules of diffusers' schedulers in tokendiff's loop: their math by enumeration (V = 3, L = 2) and their
invariants in the sampler (every mask filled, the prompt kept, batch invariance, the model-call budget)."""

import itertools
import math

import pytest
import torch

from tokendiff.errors import TokenDiffError
from tokendiff.models import Backbone, Transformer
from tokendiff.processes import AbsorbingKernel, HybridKernel, UniformKernel
from tokendiff.samplers import DiffusionSampler, row_generators
from tokendiff.samplers.ddim import DDIMStep, posterior_routes
from tokendiff.samplers.entropy_bound import entropy_bound_accept, token_entropy
from tokendiff.samplers.loo_corrector import LeaveOneOutCorrector, corrector_budget, loo_conditional
from tokendiff.samplers.settings import SamplingSettings
from tokendiff.samplers.step import StepInput
from tokendiff.schedules import LinearSchedule, LogLinearSchedule

V = 11


def q(y: int, z: int, keep: float, n: int) -> float:
    """Uniform noise over n tokens: the probability of y after keeping z with probability ``keep``."""
    return keep * (y == z) + (1.0 - keep) / n


# --------------------------------------------------------------------------------- the math, by enumeration
@pytest.mark.parametrize("alpha_t,alpha_s", [(0.0, 0.25), (0.3, 0.6), (0.7, 0.9), (0.5, 1.0)])
def test_ddim_routes_are_bayes_posterior_of_uniform_noise(alpha_t, alpha_s):
    # q(x_s | x_t, x0) is proportional to q(x_t | x_s) q(x_s | x0), with survival a = alpha_t / alpha_s over (s, t]
    n, a = 3, alpha_t / alpha_s
    for xt, x0 in itertools.product(range(n), repeat=2):
        routes = posterior_routes(torch.tensor([[xt]]), torch.tensor([[x0]]), alpha_t, alpha_s, n)[0, 0]
        law = [routes[0] * (v == x0) + routes[1] * (v == xt) + routes[2] / n for v in range(n)]
        bayes = [q(xt, v, a, n) * q(v, x0, alpha_s, n) for v in range(n)]
        total = sum(bayes)
        for v in range(n):
            assert abs(float(law[v]) - bayes[v] / total) < 1e-12, (xt, x0, v)


def exact_joint(seed=0, n=3, L=2):
    g = torch.Generator().manual_seed(seed)
    joint = torch.rand((n,) * L, generator=g, dtype=torch.float64) + 0.05
    return joint / joint.sum()


def marginal_at(joint, alpha, n=3):
    """p_s(z) over every z in n^L: the clean joint pushed through uniform noise that keeps a token w.p. alpha."""
    L = joint.dim()
    out = torch.zeros_like(joint)
    for z in itertools.product(range(n), repeat=L):
        out[z] = sum(float(joint[x]) * math.prod(q(z[i], x[i], alpha, n) for i in range(L))
                     for x in itertools.product(range(n), repeat=L))  # fmt: skip
    return out


def plain_denoiser(joint, z, alpha, n=3):
    """log p(x0_i = v | z) for every i, v: the posterior given every position, z_i included (a plain denoiser)."""
    L = joint.dim()
    out = torch.zeros(L, n, dtype=torch.float64)
    for x in itertools.product(range(n), repeat=L):
        w = float(joint[x]) * math.prod(q(z[j], x[j], alpha, n) for j in range(L))
        for i in range(L):
            out[i, x[i]] += w
    return torch.log(out / out.sum(-1, keepdim=True))


@pytest.mark.parametrize("alpha", [0.2, 0.6, 0.9])
def test_loo_conditional_of_the_exact_denoiser_is_the_one_coordinate_conditional(alpha):
    n, joint = 3, exact_joint()
    p_s = marginal_at(joint, alpha)
    for z in itertools.product(range(n), repeat=2):
        cond = loo_conditional(plain_denoiser(joint, z, alpha)[None], torch.tensor([z]), alpha, n)[0].exp()
        for i in range(2):
            other = list(z)
            exact = []
            for w in range(n):
                other[i] = w
                exact.append(float(p_s[tuple(other)]))
            exact = torch.tensor(exact, dtype=torch.float64) / sum(exact)
            assert torch.allclose(cond[i], exact, atol=1e-12), (z, i)


def test_the_corrector_leaves_the_marginal_at_s_invariant():
    # a random-scan Gibbs sweep (one position, chosen uniformly) with the exact conditionals: p_s T = p_s
    n, L, alpha = 3, 2, 0.55
    joint = exact_joint(seed=3)
    p_s = marginal_at(joint, alpha).flatten()
    states = list(itertools.product(range(n), repeat=L))
    T = torch.zeros(len(states), len(states), dtype=torch.float64)
    for a, z in enumerate(states):
        cond = loo_conditional(plain_denoiser(joint, z, alpha)[None], torch.tensor([z]), alpha, n)[0].exp()
        for i in range(L):
            for w in range(n):
                moved = list(z)
                moved[i] = w
                T[a, states.index(tuple(moved))] += cond[i, w] / L
    assert torch.allclose(T.sum(1), torch.ones(len(states), dtype=torch.float64))
    assert torch.allclose(p_s @ T, p_s, atol=1e-12)


def test_corrector_sweep_with_random_positions_draws_the_conditional():
    # the implemented sweep (k = 1, random positions): frequencies of the moved state within 5 standard errors
    n, alpha, rows = 3, 0.55, 20000
    joint = exact_joint(seed=4)
    z = (2, 0)
    log_p = plain_denoiser(joint, z, alpha)[None].expand(rows, -1, -1)
    settings = SamplingSettings(strategy="ddim", corrector_steps=1, corrector_selection="random")
    corrector = LeaveOneOutCorrector(n, settings)  # a plain denoiser: the sweep applies the shift
    x = torch.tensor([z]).expand(rows, -1)
    state = StepInput(
        x, x, torch.ones(rows, 2, dtype=torch.bool), 0.5, 0.45, torch.tensor(0.5), torch.tensor(alpha),
        torch.tensor(0.0), torch.zeros(rows, dtype=torch.long), row_generators(0, rows),
    )  # fmt: skip
    out = corrector.sweep(log_p, state)
    cond = loo_conditional(log_p[:1], x[:1], alpha, n)[0].exp()
    for i in range(2):
        for w in range(n):
            moved = list(z)
            moved[i] = w
            p = float(cond[i, w]) / 2 + (float(cond[1 - i, z[1 - i]]) / 2 if w == z[i] else 0.0)
            freq = float((out == torch.tensor(moved)).all(1).double().mean())
            assert abs(freq - p) < 5 * math.sqrt(p * (1 - p) / rows) + 1e-9, (i, w, freq, p)


@pytest.mark.parametrize("process", ["uniform", "hybrid"])
def test_ddim_step_draws_follow_the_kernels_reverse_posterior(process):
    # x0 from the posterior made from the model's leave-one-out output, then q(x_s | x_t, x0): per position the law
    # of the plug-in (ancestral) step, whose exact denoiser is that leave-one-out law
    n, rows = 3, 20000
    kernel = UniformKernel(n, LinearSchedule()) if process == "uniform" else HybridKernel(n, p_uniform=0.3)
    rule = DDIMStep(kernel, SamplingSettings(strategy="ddim"))
    log_p = torch.log_softmax(torch.tensor([[[1.0, -0.5, 0.3], [0.2, 0.9, -1.0]]], dtype=torch.float64), -1)
    xt = torch.tensor([[1, n if process == "hybrid" else 0]])  # hybrid: the second position is masked
    t, s = 0.7, 0.4
    alpha = kernel.alpha(torch.tensor([t, s], dtype=torch.float64))
    x = xt.expand(rows, -1)
    state = StepInput(
        x, x, torch.ones(rows, 2, dtype=torch.bool), t, s, alpha[0], alpha[1], alpha[0],
        torch.zeros(rows, dtype=torch.long), row_generators(1, rows),
    )  # fmt: skip
    out = rule.step(log_p.expand(rows, -1, -1), state)
    law = kernel.reverse_log_probs(log_p, xt, t, s)[0].exp()  # (2, K)
    for i in range(2):
        for v in range(n + 1):
            p, freq = float(law[i, v]), float((out[:, i] == v).double().mean())
            assert abs(freq - p) < 5 * math.sqrt(p * (1 - p) / rows) + 1e-9, (i, v, freq, p)


def test_entropy_bound_accepts_the_longest_low_entropy_prefix_within_the_bound():
    torch.manual_seed(0)
    log_p = torch.log_softmax(torch.randn(4, 9, 5, dtype=torch.float64) * torch.rand(4, 9, 1) * 4, -1)
    eligible = torch.rand(4, 9) < 0.7
    for bound in (0.01, 0.3, 1.0, 5.0):
        accepted = entropy_bound_accept(log_p, bound, eligible)
        H = token_entropy(log_p)
        for b in range(4):
            order = sorted((float(H[b, i]), i) for i in range(9) if eligible[b, i])
            expect, total = set(), 0.0
            for h, i in order:  # the sorted prefix whose sum less its largest stays within the bound
                if total > bound:  # total = the sum of the earlier entropies (the new one is the largest)
                    break
                expect.add(i)
                total += h
            assert set(accepted[b].nonzero().flatten().tolist()) == expect
            assert len(expect) >= min(1, int(eligible[b].sum()))  # the most certain one always goes


# -------------------------------------------------------------------------------------------- in the loop
def tiny_model(seed=0, L=24):
    torch.manual_seed(seed)
    return Transformer(V, n_layer=2, n_head=2, n_embd=32, block_size=L).eval()


class TimedModel(Backbone):
    """A time-conditioned "model" (uniform noise needs t): logits from a fixed map of the tokens, calls counted."""

    time_conditioning = True

    def __init__(self, L=16):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.table = torch.randn(V + 1, V, generator=g)
        self.block_size = L
        self.calls = 0

    def forward(self, x, t=None):
        self.calls += 1
        return 3 * self.table[x] + self.table[x].mean(1, keepdim=True)


def masked_start(B, L, prefix=()):
    x = torch.full((B, L), V)
    x[:, : len(prefix)] = torch.tensor(prefix)
    return x


MASKED_RULES = [
    {"strategy": "block_refinement"},
    {"strategy": "block_refinement", "editing_threshold": 0.5, "temperature": 0.0},
    {"strategy": "block_refinement", "block_size": 8, "threshold": 0.6},
    {"strategy": "entropy_bound", "entropy_bound": 0.5},
    {"strategy": "entropy_bound", "temperature_start": 0.8, "temperature_end": 0.4, "block_size": 8},
    {"strategy": "confidence", "temperature": 0.0},
]


@pytest.mark.parametrize("options", MASKED_RULES, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_masked_rules_keep_the_prompt_fill_every_mask_and_are_batch_invariant(options):
    model, prefix = tiny_model(), (3, 1, 4)
    sampler = DiffusionSampler(model, AbsorbingKernel(V, LogLinearSchedule()), steps=12, **options)
    x = masked_start(4, 24, prefix)
    together = sampler.sample(x, row_generators(7, 4))
    one_by_one = torch.cat([sampler.sample(x[:1], row_generators(7, 1, start=i)) for i in range(4)])
    assert torch.equal(together, one_by_one)
    assert (together[:, :3] == torch.tensor(prefix)).all() and (together < V).all()


@pytest.mark.parametrize(
    "options",
    [
        {"strategy": "ddim"},
        {"strategy": "ddim", "corrector_steps": 2, "corrector_k": 3},
        {"strategy": "ddim", "corrector_steps": 1, "corrector_selection": "random"},
        {"strategy": "block_refinement", "editing_threshold": 0.0},
    ],
    ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()),
)
def test_uniform_rules_keep_the_prompt_spend_the_budget_and_are_batch_invariant(options):
    model = TimedModel()
    sampler = DiffusionSampler(model, UniformKernel(V, LinearSchedule()), steps=10, **options)
    x = masked_start(3, 16, (5, 6))
    together = sampler.sample(x, row_generators(2, 3))
    one_by_one = torch.cat([sampler.sample(x[:1], row_generators(2, 1, start=i)) for i in range(3)])
    assert torch.equal(together, one_by_one)
    assert (together[:, :2] == torch.tensor([5, 6])).all() and (together < V).all()
    assert sampler.model_calls == 4 * 10  # the corrector's sweeps are folded into the budget of 10 calls a sample


def test_corrector_budget_folds_the_sweeps_into_the_steps():
    assert corrector_budget(10, 0) == (10, 0)
    for steps, sweeps in itertools.product(range(1, 40), range(1, 5)):
        predictor, corrected = corrector_budget(steps, sweeps)
        assert predictor + corrected * sweeps == steps and corrected < predictor  # the last step is never corrected


def test_entropy_bound_adapts_its_steps_to_the_bound():
    kernel, x = AbsorbingKernel(V, LogLinearSchedule()), masked_start(1, 24)
    calls = {}
    for bound in (1e-9, 1e9):
        model = tiny_model()
        sampler = DiffusionSampler(model, kernel, steps=64, strategy="entropy_bound", entropy_bound=bound)
        sampler.sample(x, row_generators(0, 1))
        calls[bound] = sampler.model_calls
    assert calls[1e9] == 1  # every mask accepted at once
    assert calls[1e-9] == 24  # one mask a step (the cache skips nothing: every step reveals one)


def test_editing_changes_committed_tokens_and_runs_every_step():
    kernel, x = AbsorbingKernel(V, LogLinearSchedule()), masked_start(2, 24)
    plain = DiffusionSampler(tiny_model(), kernel, steps=30, strategy="block_refinement", temperature=0.0)
    edited = DiffusionSampler(
        tiny_model(), kernel, steps=30, strategy="block_refinement", temperature=0.0, editing_threshold=0.05
    )
    a, b = plain.sample(x, row_generators(0, 2)), edited.sample(x, row_generators(0, 2))
    assert not torch.equal(a, b)  # a low editing threshold rewrites committed tokens
    assert edited.rule.remasks and not plain.rule.remasks


@pytest.mark.parametrize(
    "process,options,message",
    [
        ("uniform", {"strategy": "entropy_bound"}, "sampling.strategy=entropy_bound"),
        ("absorbing", {"strategy": "ddim"}, "sampling.strategy=ddim"),
        ("hybrid", {"strategy": "block_refinement"}, "sampling.strategy=block_refinement"),
        ("hybrid", {"strategy": "ddim", "corrector_steps": 1}, "sampling.corrector_steps=1"),
        ("absorbing", {"strategy": "ancestral", "corrector_steps": 2}, "sampling.corrector_steps=2"),
        ("absorbing", {"strategy": "entropy_bound", "entropy_bound": 0.0}, "sampling.entropy_bound=0.0"),
        ("absorbing", {"temperature_start": 0.8}, "sampling.temperature_end=None"),
        ("uniform", {"strategy": "ddim", "corrector_selection": "worst"}, "sampling.corrector_selection='worst'"),
        ("absorbing", {"strategy": "block_refinement", "editing_threshold": 2.0}, "sampling.editing_threshold=2.0"),
    ],
)
def test_a_rule_that_does_not_fit_is_refused_in_one_line(process, options, message):
    kernels = {
        "absorbing": lambda: AbsorbingKernel(V, LinearSchedule()),
        "uniform": lambda: UniformKernel(V, LinearSchedule()),
        "hybrid": lambda: HybridKernel(V, p_uniform=0.2),
    }
    with pytest.raises(TokenDiffError) as err:
        DiffusionSampler(TimedModel(), kernels[process](), steps=4, **options)
    assert message in str(err.value) and "\n" not in str(err.value)
