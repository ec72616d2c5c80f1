"""Every kernel against brute-force enumeration on V = 3 tokens, L = 2 positions (DESIGN.md, Tests).

The exact denoiser of a kernel with the plug-in reverse step (processes/interpolating.py) is the law of
each clean token given the *other* noisy positions, ``p(x0_i | x_t^{-i})``: :class:`LeaveOneOut`
computes it from a known joint by enumeration.
"""

import itertools
import math

import pytest
import torch

from conftest import random_joint
from toy import tanh_sinh as integral
from tokendiff.processes import AbsorbingKernel, HybridKernel, UniformKernel
from tokendiff.schedules import LogLinearSchedule

V, L = 3, 2
K = V + 1  # ids: the V real tokens and the mask

KERNELS = {
    "absorbing": lambda: AbsorbingKernel(V, LogLinearSchedule(eps=1e-3)),
    "uniform": lambda: UniformKernel(V, LogLinearSchedule(eps=1e-3)),
    "uniform_with_mask": lambda: UniformKernel(V, LogLinearSchedule(eps=1e-3), exclude_mask_from_uniform=False),
    "hybrid": lambda: HybridKernel(V, p_uniform=0.3, gamma=1.0),
    "hybrid_gamma2": lambda: HybridKernel(V, p_uniform=0.3, gamma=2.0),
}


def forward_matrix(kernel, t: float) -> torch.Tensor:
    """(K, K) q_t(y | x) for every start x (the mask row: a masked token stays... whatever the kernel's
    marginal from a mask start is never needed; rows x < V are the clean tokens)."""
    tt = torch.tensor([t], dtype=torch.float64)
    Q = kernel.alpha(tt)[0] * torch.eye(K, dtype=torch.float64) + kernel.noise(tt)[0]  # (K, K)
    return Q


def closed_form_marginal(name: str, t: float) -> torch.Tensor:
    """q_t(. | x) for x = 0..V-1, (V, K), written from the papers (not from the kernel's code)."""
    out = torch.zeros(V, K, dtype=torch.float64)
    if name.startswith("hybrid"):
        gamma = 2.0 if name.endswith("2") else 1.0
        B = 2**gamma * 0.3 / 0.7
        c = B * (t * (1 - t)) ** (gamma / 2)
        for x in range(V):
            out[x, x] += (1 - t) / (1 + c)
            out[x, V] += t / (1 + c)
            out[x, :V] += c / V / (1 + c)
        return out
    a = 1 - (1 - 1e-3) * t
    for x in range(V):
        out[x, x] += a
        if name == "absorbing":
            out[x, V] += 1 - a
        elif name == "uniform":
            out[x, :V] += (1 - a) / V
        else:
            out[x, :] += (1 - a) / K
    return out


class LeaveOneOut(torch.nn.Module):
    """logits[b, i, v] = log p(x0_i = v | x_t^{-i}) under a known joint, for the kernel's q_t."""

    time_conditioning = True
    block_size = L
    vocab_size = V

    def __init__(self, joint: dict, kernel):
        super().__init__()
        self.joint, self.kernel = joint, kernel

    def table(self, t: float) -> torch.Tensor:
        """(K**L, L, V) logits for every state, indexed by the state's base-K number."""
        Q = forward_matrix(self.kernel, t)
        out = torch.full((K**L, L, V), -1e300, dtype=torch.float64)
        for index, z in enumerate(itertools.product(range(K), repeat=L)):
            for i in range(L):
                for v in range(V):
                    mass = sum(
                        p * math.prod(Q[x[j], z[j]].item() for j in range(L) if j != i)
                        for x, p in self.joint.items()
                        if x[i] == v
                    )
                    out[index, i, v] = math.log(mass) if mass > 0 else -1e300
        return out

    def forward(self, xt, t):
        index = sum(xt[:, i] * K ** (L - 1 - i) for i in range(L))  # (B,)
        out = torch.empty(xt.shape[0], L, V, dtype=torch.float64)
        for tv in t.unique():
            rows = t == tv
            out[rows] = self.table(float(tv))[index[rows]]
        return out


def states():
    return list(itertools.product(range(K), repeat=L))


def expected_integrand(kernel, model, x0: tuple, t: float) -> float:
    """E_{x_t ~ q_t(.|x0)} [sum_i term_i] at time t, by enumerating every state x_t."""
    Q = forward_matrix(kernel, t)
    zs = [z for z in states() if math.prod(Q[x0[i], z[i]].item() for i in range(L)) > 0]
    probs = torch.tensor([math.prod(Q[x0[i], z[i]].item() for i in range(L)) for z in zs], dtype=torch.float64)
    Z = torch.tensor(zs)
    tt = torch.full((len(zs),), t, dtype=torch.float64)
    terms = kernel.nelbo_terms(model(Z, tt), torch.tensor([x0] * len(zs)), Z, tt).double()  # (S, L)
    return float((probs * terms.sum(1)).sum())


# ------------------------------------------------------------------------------------------ forward


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_forward_marginals_equal_the_closed_form_and_compose(name):
    kernel = KERNELS[name]()
    for t in (0.1, 0.5, 0.9):
        Q = forward_matrix(kernel, t)[:V]  # (V, K)
        torch.testing.assert_close(Q, closed_form_marginal(name, t), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(Q.sum(1), torch.ones(V, dtype=torch.float64))
    # Chapman-Kolmogorov: q_t = q_s then the conditional transition q_{t|s}(z | y) = a_ts [y = z] + g(z),
    # a_ts = alpha_t / alpha_s and g = m_t - a_ts m_s >= 0 (a valid kernel: rows sum to 1)
    s, t = 0.3, 0.7
    a_ts = float(
        kernel.alpha(torch.tensor(t, dtype=torch.float64)) / kernel.alpha(torch.tensor(s, dtype=torch.float64))
    )
    g = (
        kernel.noise(torch.tensor([t], dtype=torch.float64))[0]
        - a_ts * kernel.noise(torch.tensor([s], dtype=torch.float64))[0]
    )
    assert (g >= -1e-15).all()
    Q_ts = a_ts * torch.eye(K, dtype=torch.float64) + g  # (K, K)
    torch.testing.assert_close(Q_ts.sum(1), torch.ones(K, dtype=torch.float64))
    torch.testing.assert_close(forward_matrix(kernel, s)[:V] @ Q_ts, forward_matrix(kernel, t)[:V])


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_corrupt_draws_the_marginal(name):
    # 200,000 draws of each of the V clean tokens at t = 0.6: every frequency within 5 binomial standard
    # errors of q_t(y | x) (a false alarm has probability < 1e-5 per cell).
    kernel = KERNELS[name]()
    g = torch.Generator().manual_seed(0)
    n = 200_000
    x0 = torch.arange(V).repeat_interleave(n // V).view(-1, 1).repeat(1, 2)  # (n, 2)
    xt = kernel.corrupt(x0, torch.full((x0.shape[0],), 0.6), g)
    Q = forward_matrix(kernel, 0.6)
    for x in range(V):
        rows = xt[x0[:, 0] == x].flatten()
        freq = torch.bincount(rows, minlength=K).double() / len(rows)
        se = (Q[x] * (1 - Q[x]) / len(rows)).sqrt()
        assert ((freq - Q[x]).abs() <= 5 * se + 1e-12).all(), (x, freq, Q[x])


# ------------------------------------------------------------------------------------------ reverse


@pytest.mark.parametrize("name", sorted(KERNELS))
@pytest.mark.parametrize("s", [0.35, 0.0])
def test_reverse_step_is_bayes_rule_on_the_transition_matrices(name, s):
    # p(x_s = y | x_t = z) = q(z | y) q_s(y | x_theta) / q_t(z | x_theta), with q_s(y | x_theta) =
    # sum_x x_theta(x) Q_s[x, y] and explicit matrices; at s = 0 the step lands on clean tokens.
    kernel = KERNELS[name]()
    t = 0.6
    x_theta = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    Q_t = forward_matrix(kernel, t)[:V]
    Q_s = forward_matrix(kernel, s)[:V] if s > 0 else torch.eye(V, K, dtype=torch.float64)
    # the transition s -> t as the matrix that maps q_s to q_t for every start (solved, not assumed)
    a_s = float(kernel.alpha(torch.tensor(s, dtype=torch.float64))) if s > 0 else 1.0
    m_s = kernel.noise(torch.tensor([s], dtype=torch.float64))[0] if s > 0 else torch.zeros(K, dtype=torch.float64)
    a_ts = float(kernel.alpha(torch.tensor(t, dtype=torch.float64))) / a_s
    Q_ts = a_ts * torch.eye(K, dtype=torch.float64) + (
        kernel.noise(torch.tensor([t], dtype=torch.float64))[0] - a_ts * m_s
    )
    torch.testing.assert_close(Q_s @ Q_ts, Q_t)
    for z in range(K):
        evidence = float(x_theta @ Q_t[:, z])
        if evidence == 0:
            continue  # a state no clean token reaches at time t
        expected = Q_ts[:, z] * (x_theta @ Q_s) / evidence  # (K,)
        got = kernel.reverse_log_probs(x_theta.log().view(1, 1, V), torch.tensor([[z]]), t, s).exp()[0, 0]
        if name == "absorbing" and z < V:
            expected = torch.nn.functional.one_hot(torch.tensor(z), K).double()  # SUBS: a clean token stays
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)
        assert got.sum().item() == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------ NELBO


# The NELBO of the exact denoiser for every kernel and schedule (and the t = 0 term): tests/test_bounds.py


@pytest.mark.parametrize("name", ["uniform", "hybrid"])
def test_nelbo_of_a_wrong_denoiser_is_larger(name):
    # A bound: the exact denoiser of another distribution scores worse on average under p.
    kernel = KERNELS[name]()
    joint, other = random_joint(V, L, seed=1), random_joint(V, L, seed=2)
    wrong, right = LeaveOneOut(other, kernel), LeaveOneOut(joint, kernel)

    def expected_nelbo(model):
        return sum(p * integral(lambda t, x=x: expected_integrand(kernel, model, x, t), 0.2) for x, p in joint.items())

    assert expected_nelbo(wrong) > expected_nelbo(right) + 1e-3


def test_hybrid_without_uniform_noise_is_masked_diffusion():
    # p_uniform = 0: alpha_t = 1 - t and all noise is the mask, so GIDD's terms equal MDLM's with
    # alpha = 1 - t (log-linear, eps = 0) on every state, and so do the reverse steps.
    hybrid, masked = HybridKernel(V, p_uniform=0.0), AbsorbingKernel(V, LogLinearSchedule(eps=0.0))
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, V, (64, 5), generator=g)
    t = torch.rand(64, generator=g, dtype=torch.float64) * 0.98 + 0.01
    xt = masked.corrupt(x0, t, g)
    logits = torch.randn(64, 5, V, generator=g, dtype=torch.float64)
    torch.testing.assert_close(hybrid.nelbo_terms(logits, x0, xt, t), masked.nelbo_terms(logits, x0, xt, t))
    log_p = torch.log_softmax(logits, -1)
    for t_, s_ in ((0.8, 0.5), (0.3, 0.0)):
        torch.testing.assert_close(
            hybrid.reverse_log_probs(log_p, xt, t_, s_).exp(), masked.reverse_log_probs(log_p, xt, t_, s_).exp()
        )
    assert not hybrid.time_conditioned and hybrid.reveals_are_final


def random_states(kernel, seed: int, B: int, n: int):
    """Clean tokens, times in [0.01, 0.99], noisy states and random float64 logits: (x0, t, xt, logits)."""
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randint(0, V, (B, n), generator=g)
    t = torch.rand(B, generator=g, dtype=torch.float64) * 0.98 + 0.01
    xt = kernel.corrupt(x0, t, g)
    return x0, t, xt, torch.randn(B, n, V, generator=g, dtype=torch.float64)


def test_generic_interpolating_terms_equal_the_masked_closed_form():
    # AbsorbingKernel uses MDLM's cross-entropy; the generic GIDD term of its m_t = (1 - alpha) e_mask
    # must be the same number on every state (the closed form is a special case, not another model).
    from tokendiff.processes.interpolating import InterpolatingKernel

    kernel = AbsorbingKernel(V, LogLinearSchedule(eps=1e-3))
    x0, t, xt, logits = random_states(kernel, 1, 32, 6)
    generic = InterpolatingKernel.nelbo_terms(kernel, logits, x0, xt, t)
    torch.testing.assert_close(generic, kernel.nelbo_terms(logits, x0, xt, t), rtol=1e-5, atol=1e-6)


def test_uniform_nelbo_is_udlm_formula():
    # UDLM (Schiff et al. 2025) in its own notation, x_bar = N alpha x + (1 - alpha):
    #   alpha'/(N alpha) [N/x_bar_z - N/x_bar_theta_z
    #                     - sum_j (x_bar_j/x_bar_z) log(x_bar_theta_z x_bar_j / (x_bar_theta_j x_bar_z))]
    kernel = UniformKernel(V, LogLinearSchedule(eps=1e-3))
    x0, t, xt, logits = random_states(kernel, 2, 16, 4)
    a = kernel.alpha(t)[:, None, None]
    a_prime = kernel.alpha_prime(t)[:, None, None]
    N = V
    x_bar = N * a * torch.nn.functional.one_hot(x0, V) + 1 - a
    x_bar_theta = N * a * torch.softmax(logits, -1) + 1 - a
    xb_z, xbt_z = x_bar.gather(-1, xt[..., None]), x_bar_theta.gather(-1, xt[..., None])
    term2 = ((x_bar / xb_z) * (xbt_z.log() - x_bar_theta.log() + x_bar.log() - xb_z.log())).sum(-1, keepdim=True)
    udlm = (a_prime / (N * a) * (N / xb_z - N / xbt_z - term2)).squeeze(-1)
    torch.testing.assert_close(kernel.nelbo_terms(logits, x0, xt, t).double(), udlm, rtol=1e-6, atol=1e-9)


# ------------------------------------------------------------------------------------------ sampling
# The sampler's draws against the exact law of its steps, and that law's convergence: tests/test_bounds.py
