"""Every number evaluation prints is a bound, and the sampler converges at first order: by enumeration on
V = 3 tokens, L = 2 positions, with the exact leave-one-out denoiser of a known joint (tests/toy.py)."""

import math

import numpy as np
import pytest
import torch

from toy import Toy, minus_log_p, random_joint_tensor, tanh_sinh
from tokendiff.evaluation.likelihood import evaluate_likelihood
from tokendiff.objectives import CleanObjective
from tokendiff.objectives.bound import starts_clean
from tokendiff.objectives.times import importance_times
from tokendiff.processes import AbsorbingKernel, HybridKernel, UniformKernel
from tokendiff.samplers import DiffusionSampler, row_generators
from tokendiff.schedules import LogLinearSchedule, make_schedule

V, L = 3, 2
SCHEDULES = ("log_linear", "linear", "cosine", "geometric")


def make_kernel(name: str):
    process, _, rest = name.partition("/")
    if process == "hybrid":
        p_uniform, _, gamma = rest.partition("/")
        return HybridKernel(V, p_uniform=float(p_uniform), gamma=float(gamma or 1.0))
    if process == "absorbing":
        return AbsorbingKernel(V, make_schedule(rest))
    return UniformKernel(V, make_schedule(rest), exclude_mask_from_uniform=process == "uniform")


BOUND_CASES = [f"{p}/{s}" for p in ("absorbing", "uniform", "uniform_with_mask") for s in SCHEDULES] + [
    "hybrid/0.0", "hybrid/0.1", "hybrid/0.5", "hybrid/0.5/2.0",
]  # fmt: skip


@pytest.mark.parametrize("name", BOUND_CASES)
def test_nelbo_with_the_exact_denoiser_bounds_every_sequence(name):
    # NELBO(x) = reconstruction + int_0^1 E[terms] dt + prior, by enumeration of every state and tanh-sinh
    # quadrature over t (nothing truncated). With the exact denoiser the reverse process is the true one, so
    #   NELBO(x) = -log p(x) + gap(x),   gap(x) = E_{z ~ q_1(.|x)} log(q_1(z) / p_1(z))   (the prior mismatch)
    # when alpha(0) = 1: the quadrature agrees to < 1e-5 (measured: 3e-6 at worst, hybrid 0.5's sqrt(t) end).
    # When alpha(0) < 1 the t = 0 term decodes z0 one token at a time, which costs O(eps^2) more (measured
    # up to 1.4e-5): the slack lies in [-1e-5, 1e-4], and without the reconstruction term it would be
    # negative by the term itself (>= 1e-4 here: not a bound). Per sequence the bound is on the model's own
    # -log p_theta(x), which differs from -log p(x) by the prior mismatch (either sign for one sequence).
    kernel = make_kernel(name)
    toy = Toy(kernel, random_joint_tensor(V, L, seed=7))
    clean = starts_clean(kernel)
    for x0 in map(tuple, toy.clean.tolist()):
        path = tanh_sinh(lambda t, x0=x0: toy.expected_terms(x0, t))
        recon = toy.expected_reconstruction(x0)
        nelbo = path + recon + float(kernel.prior_terms(torch.tensor([x0])).double().sum())
        slack = nelbo - (minus_log_p(toy, x0) + toy.prior_gap(x0))
        if clean:
            assert recon == 0.0
            assert abs(slack) < 1e-5, (x0, slack)
            assert nelbo >= toy.minus_log_model(x0) - 1e-5
        else:
            assert -1e-5 < slack < 1e-4, (x0, slack)
            assert recon >= 1e-4 and slack - recon < -1e-4 + 1e-5


@pytest.mark.parametrize("name", ["absorbing/log_linear", "absorbing/cosine", "uniform/linear", "hybrid/0.5"])
def test_evaluation_estimates_the_whole_bound(name):
    # evaluate_likelihood (importance times on (0, 1], the t = 0 term, the prior) with the exact denoiser
    # averages to the quadrature NELBO of the previous test within 4 standard errors (its own, from
    # 512 draws per sequence), and its parts add up. The old estimator (uniform times on [1e-3, 1], no
    # t = 0 term) sat 15 standard errors below -log p for hybrid 0.5: here the mean must not.
    kernel = make_kernel(name)
    toy = Toy(kernel, random_joint_tensor(V, L, seed=7))
    windows = toy.clean  # every clean sequence once
    exact = []
    for x0 in map(tuple, windows.tolist()):
        path = tanh_sinh(lambda t, x0=x0: toy.expected_terms(x0, t), 0.2)
        prior = float(kernel.prior_terms(torch.tensor([x0])).double().sum())
        exact.append((path + toy.expected_reconstruction(x0) + prior) / L)
    r = evaluate_likelihood(toy.model, CleanObjective(kernel), windows, num_draws=512, batch_size=64, seed=1)
    assert abs(r.nelbo_nats_per_token - np.mean(exact)) < 4 * r.nelbo_nats_per_token_stderr, (r, np.mean(exact))
    parts = r.truncated_nelbo_nats_per_token + r.below_t_min_nats_per_token + r.reconstruction_nats_per_token
    assert parts == pytest.approx(r.nelbo_nats_per_token, abs=1e-12)
    assert r.below_t_min_nats_per_token >= 0 and r.t_min == 1e-3  # masks: ~1e-3 x a cross-entropy, often no draw
    assert (r.reconstruction_nats_per_token > 0) == (not starts_clean(kernel))
    entropy = float(-(toy.joint * toy.joint.log()).sum()) / L  # E_p[-log p] per token
    assert r.nelbo_nats_per_token > entropy - 4 * r.nelbo_nats_per_token_stderr


@pytest.mark.parametrize("name", ["hybrid/0.5", "absorbing/cosine"])
def test_training_on_the_bound_estimates_it(name):
    # diffusion.estimator=bound: the training terms are evaluation's draws (no t_min, the t = 0 term), so
    # their mean is the quadrature NELBO without the prior term (within 4 standard errors), with gradients.
    kernel = make_kernel(name)
    toy = Toy(kernel, random_joint_tensor(V, L, seed=7))
    x0 = (1, 2)
    exact = tanh_sinh(lambda t: toy.expected_terms(x0, t), 0.2) + toy.expected_reconstruction(x0)
    objective = CleanObjective(kernel, estimator="bound")
    n = 20000
    per_seq = objective.loss_terms(toy.model, torch.tensor([x0]).repeat(n, 1), torch.Generator().manual_seed(0))
    per_seq = per_seq.double().sum(1)
    assert abs(per_seq.mean().item() - exact) < 4 * per_seq.std().item() / math.sqrt(n), (per_seq.mean(), exact)
    logits = torch.zeros(4, L, V, requires_grad=True)
    objective.loss_terms(lambda xt, t: logits, torch.tensor([x0]).repeat(4, 1)).mean().backward()
    assert logits.grad is not None and bool(logits.grad.abs().sum() > 0)


def test_importance_times_integrate_exactly_and_reach_zero():
    # weight * f(t) averages to int_0^1 f: for f = t^(-1/2) (GIDD-like, integral 2) and f = 1.
    g = torch.Generator().manual_seed(0)
    t, w = importance_times(200_000, order=0.5, generator=g)
    assert float(w.mean()) == pytest.approx(1.0, abs=0.01)
    est = w * t.pow(-0.5)
    assert float(est.mean()) == pytest.approx(2.0, abs=4 * float(est.std()) / math.sqrt(len(t)))
    assert float(t.min()) < 1e-12 and float(t.max()) <= 1.0 and t.dtype == torch.float64


# ------------------------------------------------------------------------------------------ sampler

GRID_CASES = {  # alpha(1) = 0 for every one, so the sampler's limit is p itself (no prior mismatch)
    "absorbing": lambda: AbsorbingKernel(V, LogLinearSchedule(eps=0.0)),
    "uniform": lambda: UniformKernel(V, LogLinearSchedule(eps=0.0)),
    "uniform_with_mask": lambda: UniformKernel(V, LogLinearSchedule(eps=0.0), exclude_mask_from_uniform=False),
    "hybrid_0.1": lambda: HybridKernel(V, p_uniform=0.1),
    "hybrid_0.5": lambda: HybridKernel(V, p_uniform=0.5),
    "hybrid_0.5_gamma2": lambda: HybridKernel(V, p_uniform=0.5, gamma=2.0),
}
STEPS = [64, 128, 256, 512, 1024]


def convergence(kernel, grid: str, joint_seed: int = 3) -> tuple[list[float], float]:
    toy = Toy(kernel, random_joint_tensor(V, L, seed=joint_seed))
    tvs = [toy.total_variation(toy.sampler_law(n, grid)) for n in STEPS]
    return tvs, -float(np.polyfit(np.log(STEPS), np.log(tvs), 1)[0])


@pytest.mark.parametrize("name", sorted(GRID_CASES))
def test_sampler_law_converges_at_first_order_on_the_default_grid(name):
    # The sampler's exact output law (its reverse steps over all 16 states) against p, N = 64..1024:
    # the fitted order is 1.00 for every kernel on its default grid (uniform in alpha), and the error
    # at 1024 steps is under 2e-4 (measured 1.1e-4 to 1.5e-4).
    tvs, order = convergence(GRID_CASES[name](), "auto")
    assert order > 0.95, (tvs, order)
    assert tvs[-1] < 2e-4, tvs


def test_hybrid_on_the_linear_grid_converges_more_slowly():
    # Why the default is not the linear grid: GIDD's uniform noise ~ sqrt(t) near 0 (order 0.72 measured).
    tvs, order = convergence(HybridKernel(V, p_uniform=0.5), "linear")
    assert order < 0.85 and tvs[-1] > 2e-3, (tvs, order)  # the default grid: 1.5e-4 at 1024 steps


@pytest.mark.parametrize("name", ["absorbing", "uniform", "hybrid_0.5"])
def test_ancestral_samples_follow_the_exact_law_of_their_steps(name):
    # DiffusionSampler's draws at 100 steps against the exact law of those 100 steps (not against p, which
    # the discretization misses by C/N): Pearson's chi-square over the 9 sequences, df = 8, mean 8 and sd 4;
    # the bound 8 + 6 sd = 32 (p ~ 1e-4). The exact law's own error is bounded by the first-order fit.
    kernel = GRID_CASES[name]()
    toy = Toy(kernel, random_joint_tensor(V, L, seed=3))
    law = toy.sampler_law(100)[toy.index(toy.clean)]  # (9,)
    assert toy.total_variation(toy.sampler_law(100)) < 0.02
    n = 3000

    def model(xt, t):
        return toy.loo_log_probs(xt, float(t[0]))

    model.time_conditioning, model.block_size, model.vocab_size = True, L, V
    model.block_diffusion, model.supports_kv_cache = None, False  # the backbone protocol's declarations
    model.self_conditioning = False
    out = DiffusionSampler(model, kernel, steps=100, cache=False).sample(torch.full((n, L), V), row_generators(0, n))
    counts = torch.zeros(len(law), dtype=torch.float64)
    index = {int(i): k for k, i in enumerate(toy.index(toy.clean))}
    for i in toy.index(out).tolist():
        counts[index[i]] += 1
    chi2 = float(((counts - n * law) ** 2 / (n * law)).sum())
    assert chi2 < 32, chi2


def test_time_grids():
    from tokendiff.samplers.time_grid import time_grid

    linear = AbsorbingKernel(V, make_schedule("log_linear"))
    assert torch.equal(time_grid(linear, 8, "alpha"), torch.linspace(1.0, 0.0, 9, dtype=torch.float64))
    cosine = AbsorbingKernel(V, make_schedule("cosine"))
    times = time_grid(cosine, 8)  # auto = alpha: alpha evenly spaced
    a = cosine.alpha(times)
    torch.testing.assert_close(a.diff(), torch.full((8,), float(a[-1] - a[0]) / 8, dtype=torch.float64))
    for kind in ("linear", "alpha", "cosine"):
        t = time_grid(HybridKernel(V, p_uniform=0.5), 16, kind)
        assert t[0] == 1.0 and t[-1] == 0.0 and bool((t.diff() < 0).all())
