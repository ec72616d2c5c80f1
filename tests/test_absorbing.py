"""The absorbing process against brute-force enumeration (DESIGN.md, Tests)."""

import itertools
import math

import numpy as np
import pytest
import torch

from conftest import ExactConditionals, random_joint
from tokendiff.objectives import CleanObjective
from tokendiff.processes import AbsorbingKernel
from tokendiff.schedules import LogLinearSchedule


def quadrature(f, a: float, b: float, n: int = 24) -> float:
    """Gauss-Legendre on [a, b]; exact for polynomials of degree < 2n."""
    x, w = np.polynomial.legendre.leggauss(n)
    t = 0.5 * (b - a) * x + 0.5 * (b + a)
    return float(0.5 * (b - a) * sum(wi * f(ti) for wi, ti in zip(w, t)))


def expected_terms(process, model, x0: tuple, t: float) -> float:
    """E_{x_t ~ q(.|x0)} [sum of NELBO terms] at time t, by enumerating all 2^L mask patterns."""
    V, L = process.vocab_size, len(x0)
    alpha = float(process.schedule.alpha(torch.tensor(t, dtype=torch.float64)))
    total = 0.0
    for pattern in itertools.product([0, 1], repeat=L):
        k = sum(pattern)
        prob = (1 - alpha) ** k * alpha ** (L - k)
        xt = torch.tensor([[V if m else v for m, v in zip(pattern, x0)]])
        logits = model(xt)
        terms = process.nelbo_terms(logits, torch.tensor([x0]), xt, torch.tensor([t], dtype=torch.float64))
        total += prob * float(terms.sum())
    return total


@pytest.mark.parametrize("V,L", [(2, 3), (3, 2)])
def test_nelbo_of_exact_conditionals_is_minus_log_likelihood(V, L):
    # Any-order autoregressive identity: with alpha(1) = 0 (eps = 0) and the exact conditionals, the
    # continuous-time NELBO equals -log p(x) for every x. With alpha = 1 - t the integrand is a polynomial
    # of degree L - 1 in t, so 24-point Gauss-Legendre quadrature is exact. Tolerance: the cross-entropy
    # is computed in float32 (relative error ~1e-7 per term), so we ask for 1e-6 relative.
    joint = random_joint(V, L, seed=V * 10 + L)
    model = ExactConditionals(joint, V, L)
    process = AbsorbingKernel(V, LogLinearSchedule(eps=0.0))
    for x0, p in joint.items():
        nelbo = quadrature(lambda t, x0=x0: expected_terms(process, model, x0, t), 0.0, 1.0)
        assert nelbo == pytest.approx(-math.log(p), rel=1e-6)


def test_nelbo_of_a_wrong_model_is_larger():
    # The NELBO is a bound: conditionals of a different distribution give more than -log p(x) on average
    # under p (the gap is a KL divergence, > 0 for distinct distributions).
    V, L = 2, 3
    joint, other = random_joint(V, L, seed=1), random_joint(V, L, seed=2)
    process = AbsorbingKernel(V, LogLinearSchedule(eps=0.0))
    wrong = ExactConditionals(other, V, L)
    expected_nelbo = sum(
        p * quadrature(lambda t, x0=x0: expected_terms(process, wrong, x0, t), 0.0, 1.0) for x0, p in joint.items()
    )
    entropy = -sum(p * math.log(p) for p in joint.values())
    assert expected_nelbo > entropy + 1e-3


def test_uniform_logits_give_L_log_V():
    # With uniform logits every masked token costs log V, and for alpha = 1 - (1-eps) t:
    # E[w(t) * #masked] = (1-eps)/((1-eps) t) * L (1-eps) t = L (1-eps), for every t.
    # So every Monte Carlo draw has expectation L (1-eps) log V, and over [0, 1] the NELBO is that too.
    V, L, B, eps = 5, 16, 4096, 1e-3
    objective = CleanObjective(AbsorbingKernel(V, LogLinearSchedule(eps=eps)))
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, V, (B, L), generator=g)
    terms = objective.loss_terms(lambda xt, t: torch.zeros(*xt.shape, V), x0, g)  # (B, L)
    per_seq = terms.sum(1).double()
    expected = L * (1 - eps) * math.log(V)
    stderr = per_seq.std().item() / math.sqrt(B)
    assert abs(per_seq.mean().item() - expected) < 5 * stderr


def test_monte_carlo_estimate_converges_to_the_exact_integral():
    # Training draws t ~ U[t_min, 1] and x_t ~ q; the mean of the terms estimates
    # (1 / (1 - t_min)) * integral_{t_min}^1 E[terms | t] dt, computed here by quadrature + enumeration.
    V, L = 2, 3
    joint = random_joint(V, L, seed=3)
    model = ExactConditionals(joint, V, L)
    process = AbsorbingKernel(V, LogLinearSchedule(eps=1e-3))
    objective = CleanObjective(process, t_min=0.05)
    x0 = max(joint, key=joint.get)
    exact = quadrature(lambda t, x0=x0: expected_terms(process, model, x0, t), 0.05, 1.0) / 0.95
    # The model depends only on the mask pattern: precompute its logits for all 2^L patterns.
    table = {}
    for pattern in itertools.product([0, 1], repeat=L):
        xt = torch.tensor([[V if m else v for m, v in zip(pattern, x0)]])
        table[tuple(xt[0].tolist())] = model(xt)[0]
    fast = lambda xt, t: torch.stack([table[tuple(r)] for r in xt.tolist()])  # noqa: E731
    g = torch.Generator().manual_seed(0)
    draws = torch.cat([objective.loss_terms(fast, torch.tensor([x0] * 1000), g).sum(1) for _ in range(8)])
    stderr = draws.std().item() / math.sqrt(len(draws))
    assert abs(draws.mean().item() - exact) < 5 * stderr


def test_corrupt_masks_with_probability_one_minus_alpha_and_keeps_the_rest():
    process = AbsorbingKernel(7, LogLinearSchedule())
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, 7, (400, 500), generator=g)
    t = torch.full((400,), 0.3)
    xt = process.corrupt(x0, t, g)
    masked = xt == 7
    # Unmasked positions carry x0 unchanged (the mask is the only corruption).
    assert torch.equal(xt[~masked], x0[~masked])
    rate = masked.double().mean().item()
    expected = 1 - float(process.schedule.alpha(torch.tensor(0.3)))
    assert abs(rate - expected) < 5 * math.sqrt(expected * (1 - expected) / masked.numel())


def test_antithetic_times_cover_every_stratum():
    # With antithetic sampling, the B times fall one in each interval [i/B, (i+1)/B) (before the affine
    # map to [t_min, 1]): lower variance, same uniform marginal.
    objective = CleanObjective(AbsorbingKernel(3, LogLinearSchedule()), t_min=0.0)
    t = objective.sample_t(8, torch.Generator().manual_seed(1))
    assert sorted((t * 8).floor().long().tolist()) == list(range(8))


def test_reverse_step_matches_bayes_rule_on_the_transition_matrix():
    # For one token: q(x_s | x_t, x0) = q(x_t | x_s) q(x_s | x0) / q(x_t | x0) with explicit (V+1)x(V+1)
    # transition matrices; the model posterior is sum_x0 p(x0) q(x_s | x_t = mask, x0).
    V = 3
    process = AbsorbingKernel(V, LogLinearSchedule())
    t, s = 0.7, 0.3
    alpha_t, alpha_s = (float(process.alpha(torch.tensor(u, dtype=torch.float64))) for u in (t, s))

    def transition(a):  # row x, column y: q(y | x) when a token survives with probability a
        Q = torch.zeros(V + 1, V + 1, dtype=torch.float64)
        for x in range(V):
            Q[x, x], Q[x, V] = a, 1 - a
        Q[V, V] = 1.0
        return Q

    Q_s, Q_ts = transition(alpha_s), transition(alpha_t / alpha_s)  # 0 -> s, s -> t
    p_x0 = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    expected = torch.zeros(V + 1, dtype=torch.float64)
    for x0 in range(V):
        q_t_given_x0 = (Q_s @ Q_ts)[x0, V]
        expected += p_x0[x0] * Q_s[x0] * Q_ts[:, V] / q_t_given_x0
    got = process.reverse_log_probs(p_x0.log().view(1, 1, V), torch.tensor([[V]]), t, s).exp()
    torch.testing.assert_close(got[0, 0], expected)
    assert got.sum().item() == pytest.approx(1.0)
    # An unmasked token stays what it is (SUBS carry-over).
    kept = process.reverse_log_probs(p_x0.log().view(1, 1, V), torch.tensor([[1]]), t, s).exp()
    assert kept[0, 0].tolist() == [0.0, 1.0, 0.0, 0.0]


def test_subs_never_predicts_the_mask_and_carries_unmasked_tokens():
    process = AbsorbingKernel(4, LogLinearSchedule())
    xt = torch.tensor([[4, 2, 4]])
    log_probs = process.subs_log_probs(torch.randn(1, 3, 4), xt)  # (1, 3, 5)
    probs = log_probs.exp()
    assert (probs[..., 4] == 0).all()
    assert probs[0, 1].tolist() == [0.0, 0.0, 1.0, 0.0, 0.0]
    torch.testing.assert_close(probs.sum(-1), torch.ones(1, 3, dtype=torch.float64))


def count_estimator_expectation(model, x0: tuple, V: int) -> float:
    """E[terms.sum()] of the ``count`` estimator for one sequence, by enumeration: k uniform on 1..L,
    then every set S of k positions equally likely, each masked cross-entropy weighted L / k."""
    L = len(x0)
    total = 0.0
    for k in range(1, L + 1):
        subsets = list(itertools.combinations(range(L), k))
        for S in subsets:
            xt = torch.tensor([[V if i in S else v for i, v in enumerate(x0)]])
            log_p = torch.log_softmax(model(xt).double(), dim=-1)[0]  # (L, V)
            ce = -sum(float(log_p[i, x0[i]]) for i in S)
            total += (1 / L) * (1 / len(subsets)) * (L / k) * ce
    return total


@pytest.mark.parametrize("V,L", [(2, 3), (3, 3)])
def test_count_estimator_is_unbiased_for_the_nelbo_of_any_model(V, L):
    # The masked-count estimator targets the same NELBO as drawing t then masks (alpha(1) = 0): for a
    # model that is NOT the exact conditionals (the NELBO then differs from -log p), the enumerated
    # expectation equals the quadrature of the time integrand for every x, to float precision.
    joint, other = random_joint(V, L, seed=3), random_joint(V, L, seed=4)
    wrong = ExactConditionals(other, V, L)
    process = AbsorbingKernel(V, LogLinearSchedule(eps=0.0))
    for x0 in joint:
        by_time = quadrature(lambda t, x0=x0: expected_terms(process, wrong, x0, t), 0.0, 1.0)
        by_count = count_estimator_expectation(wrong, x0, V)
        assert by_count == pytest.approx(by_time, rel=1e-6)


def test_count_estimator_draws_exactly_k_masks_with_weight_L_over_k_and_matches_its_expectation():
    # The implementation: every row has exactly k masked positions, k is stratified over 1..L across the
    # batch, each masked term is L/k times its cross-entropy, and the Monte Carlo mean over many draws is
    # within 5 standard errors of the enumerated expectation; its variance is below the time estimator's.
    V, L, B = 3, 3, 6000
    joint = random_joint(V, L, seed=5)
    model = ExactConditionals(random_joint(V, L, seed=6), V, L)
    table = {}  # memoised logits of the 2^L mask patterns of one x0, so the Monte Carlo run is fast

    def fast(xt, t=None):
        rows = []
        for row in xt.tolist():
            key = tuple(row)
            if key not in table:
                table[key] = model(torch.tensor([row]))[0]
            rows.append(table[key])
        return torch.stack(rows)

    x0 = max(joint, key=joint.get)
    kernel = AbsorbingKernel(V, LogLinearSchedule(eps=0.0))
    count = CleanObjective(kernel, t_min=0.0, estimator="count")
    g = torch.Generator().manual_seed(0)
    batch = torch.tensor([x0] * B)
    terms = count.loss_terms(fast, batch, g).double()  # (B, L)
    masked = terms != 0
    k = masked.sum(1)
    assert torch.bincount(k, minlength=L + 1)[1:].tolist() == [B // L] * L  # stratified: exactly B/L each
    ce = -torch.log_softmax(fast(torch.where(masked, V, batch)).double(), -1).gather(-1, batch[..., None])[..., 0]
    assert torch.allclose(terms[masked], (ce * (L / k[:, None]))[masked].to(terms.dtype), rtol=1e-6)
    per_seq = terms.sum(1)
    exact = count_estimator_expectation(model, x0, V)
    assert abs(per_seq.mean().item() - exact) < 5 * per_seq.std().item() / math.sqrt(B)
    by_time = CleanObjective(kernel, t_min=0.0, estimator="time").loss_terms(fast, batch, g).double().sum(1)
    assert per_seq.var() < by_time.var()


def test_count_estimator_is_refused_where_it_does_not_apply():
    from tokendiff.errors import TokenDiffError
    from tokendiff.processes import UniformKernel

    with pytest.raises(TokenDiffError, match="diffusion.estimator=count needs masked diffusion"):
        CleanObjective(UniformKernel(3, LogLinearSchedule()), estimator="count")
