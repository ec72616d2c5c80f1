"""The full posterior ``p(x0_i | x_t)`` and the leave-one-out law ``p(x0_i | x_t^{-i})``: the maps between them
(tokendiff.processes.denoisers) against both laws enumerated from a known joint (V = 3, L = 2), for uniform
and hybrid noise; and the block objective's bound of a model that predicts the posterior (DiffusionGemma's
kind) against the enumerated NELBO."""

import math

import pytest
import torch

from test_block_uniform import ExactUniformBlocks, exact_block_nelbo
from test_block_uniform import L as BLOCK_L
from test_block_uniform import B as BLOCK
from tokendiff.evaluation.likelihood import evaluate_likelihood
from tokendiff.objectives import BlockDiffusionObjective
from tokendiff.processes import HybridKernel, UniformKernel
from tokendiff.processes.denoisers import loo_from_posterior, posterior_from_loo
from tokendiff.schedules import LogLinearSchedule
from toy import Toy, random_joint_tensor

V, L = 3, 2


def kernels():
    return {
        "uniform": UniformKernel(V, LogLinearSchedule(eps=0.1)),
        "uniform_with_mask": UniformKernel(V, LogLinearSchedule(eps=0.1), exclude_mask_from_uniform=False),
        "hybrid": HybridKernel(V, p_uniform=0.3, gamma=1.0),
    }


@pytest.mark.parametrize("name", ["uniform", "uniform_with_mask", "hybrid"])
def test_the_maps_turn_each_enumerated_law_into_the_other(name):
    kernel = kernels()[name]
    toy = Toy(kernel, random_joint_tensor(V, L, seed=3))
    states = toy.states  # (K^L, L) every noisy state, masks included
    for t in (0.02, 0.3, 0.7, 0.97):
        loo, post = toy.loo_log_probs(states, t), toy.loo_log_probs(states, t, own=True)
        reachable = post.isfinite().all(-1).all(-1)  # states with q_t(z) > 0 under the joint
        assert reachable.sum() >= V**L
        assert (post - loo)[reachable].abs().max() > 0.05  # the two laws differ: the maps have work to do
        torch.testing.assert_close(posterior_from_loo(kernel, loo, states, t)[reachable], post[reachable])
        torch.testing.assert_close(loo_from_posterior(kernel, post, states, t)[reachable], loo[reachable])
        # one time per row, as the block objective passes them
        rows = torch.full((len(states),), t, dtype=torch.float64)
        torch.testing.assert_close(loo_from_posterior(kernel, post, states, rows)[reachable], loo[reachable])


def test_the_maps_stay_finite_where_the_noise_underflows():
    # at t ~ 1e-20 a float64 1 - alpha_t is 0: any other token has likelihood 0, and the floor keeps a law
    kernel = kernels()["uniform"]
    logits = torch.randn(2, 4, V, dtype=torch.float64)
    x = torch.randint(0, V, (2, 4))
    for t in (1e-20, 0.0):
        out = loo_from_posterior(kernel, logits, x, t)
        assert out.isfinite().all()
        torch.testing.assert_close(out.exp().sum(-1), torch.ones(2, 4, dtype=torch.float64))


class PosteriorBlocks(ExactUniformBlocks):
    """The exact block model of test_block_uniform.py, predicting the full posterior of each block instead."""

    def __init__(self, kernel, joint, flag: bool = True):
        super().__init__(kernel, joint)
        self.predicts_posterior = flag

    def forward_block_diffusion(self, xt, x0, t):
        out = torch.zeros(*xt.shape, V, dtype=torch.float64)
        for a in range(0, BLOCK_L, BLOCK):
            prefixes = x0[:, :a]
            for prefix in {tuple(p) for p in prefixes.tolist()}:
                rows = (prefixes == torch.tensor(prefix, dtype=x0.dtype)).all(1)
                toy = self.toy(a, prefix)
                out[rows, a : a + BLOCK] = toy.loo_log_probs(xt[rows, a : a + BLOCK], t[rows, a].double(), own=True)
        return out


def test_a_posterior_model_is_scored_by_the_leave_one_out_bound():
    # the exact posterior, converted by the objective, is the exact leave-one-out denoiser: the estimate averages
    # to the enumerated block NELBO (-log p(x) plus the prior gaps) within 4 standard errors. Without the
    # conversion (predicts_posterior false) the same logits give a looser value, 4 standard errors off.
    joint = random_joint_tensor(V, BLOCK_L, seed=7)
    kernel = UniformKernel(V, LogLinearSchedule(eps=0.2))
    x0 = (1, 2, 0, 2)
    exact, _ = exact_block_nelbo(kernel, ExactUniformBlocks(kernel, joint), x0)
    windows = torch.tensor([x0]).repeat(2048, 1)
    objective = BlockDiffusionObjective(kernel, BLOCK)
    r = evaluate_likelihood(PosteriorBlocks(kernel, joint), objective, windows, num_draws=2, batch_size=2048)
    se = r.nelbo_nats_per_token_stderr
    assert abs(r.nelbo_nats_per_token - exact / BLOCK_L) < 4 * se, (r.nelbo_nats_per_token, exact / BLOCK_L)
    raw = evaluate_likelihood(PosteriorBlocks(kernel, joint, flag=False), objective, windows, num_draws=2,
                              batch_size=2048)  # fmt: skip
    assert raw.nelbo_nats_per_token - exact / BLOCK_L > 4 * max(se, raw.nelbo_nats_per_token_stderr)
    assert math.isfinite(raw.nelbo_nats_per_token)
