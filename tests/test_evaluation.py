import math

import pytest
import torch

from tokendiff.evaluation import evaluate_likelihood
from tokendiff.objectives import AutoregressiveObjective, CleanObjective
from tokendiff.processes import AbsorbingKernel
from tokendiff.schedules import LogLinearSchedule


def test_uniform_model_scores_log_V_per_token_within_its_stderr():
    # Each draw of the diffusion terms has expectation (1 - eps) log V per token (see test_absorbing) and the
    # prior term is KL(q_1 || eps u + (1 - eps) mask) = eps log V, so the NELBO is log V: what a model that
    # knows nothing must pay. The reported mean must be within a few Monte Carlo standard errors of it.
    V = 7
    process = CleanObjective(AbsorbingKernel(V, LogLinearSchedule(eps=1e-3)))
    windows = torch.randint(0, V, (64, 32), generator=torch.Generator().manual_seed(0))
    r = evaluate_likelihood(
        lambda x, t: torch.zeros(*x.shape, V), process, windows, num_draws=8, seed=0, chars_per_token=1.0
    )
    assert r.prior_nats_per_token == pytest.approx(1e-3 * math.log(V), rel=1e-6)
    assert abs(r.nelbo_nats_per_token - math.log(V)) < 4 * r.nelbo_nats_per_token_stderr
    assert r.bits_per_token == r.nelbo_nats_per_token / math.log(2)
    assert r.perplexity == math.exp(r.nelbo_nats_per_token)


def test_autoregressive_likelihood_is_exact():
    # Uniform next-token logits give exactly log V per predicted token, with no Monte Carlo error.
    V = 5
    windows = torch.randint(0, V, (10, 17), generator=torch.Generator().manual_seed(0))
    r = evaluate_likelihood(lambda x, t: torch.zeros(*x.shape, V), AutoregressiveObjective(V), windows)
    # (float32 cross-entropy: equal to log V up to float32 rounding)
    assert r.nelbo_nats_per_token == pytest.approx(math.log(V), rel=1e-7) and r.nelbo_nats_per_token_stderr == 0.0
    assert r.tokens_per_sequence == 16


class CopyModel(torch.nn.Module):
    """Predicts each masked token as 1 with the share of visible ones (uniform if none is visible):
    its cross-entropy depends strongly on how many tokens are masked, i.e. on t."""

    def forward(self, x, t=None):
        visible = x < 2
        share = ((x == 1) & visible).sum(1, keepdim=True) / visible.sum(1, keepdim=True).clamp(min=1)
        p1 = torch.where(visible.any(1, keepdim=True), share, torch.full_like(share, 0.5)).clamp(0.02, 0.98)
        return torch.stack([torch.log1p(-p1), torch.log(p1)], -1).expand(*x.shape, 2).float()


def test_evaluation_draws_times_independently_of_the_position_in_the_batch():
    # Training stratifies the times of a batch (row i of B gets t in [i/B, (i+1)/B)). Evaluation must not:
    # sequence n would sit in the same row, hence the same stratum, in every draw, a bias the standard
    # error cannot show. A spy records the masked share (~ t for 400 tokens) of every row it sees.
    process = CleanObjective(AbsorbingKernel(2, LogLinearSchedule()))
    seen = []

    def spy(x, t):
        seen.append((x == 2).double().mean(1))  # (B,)
        return torch.zeros(*x.shape, 2)

    evaluate_likelihood(spy, process, torch.zeros(8, 400, dtype=torch.long), num_draws=200, batch_size=8)
    last_row = torch.stack(seen)[:, 7]  # stratified, this row would always be masked at >= 7/8
    assert last_row.mean().item() < 0.65 and (last_row < 0.5).any()


def test_reported_stderr_matches_the_spread_over_seeds():
    # Over 20 seeds the standard deviation of the estimates should match the reported Monte Carlo
    # standard error (their ratio is ~1; [0.5, 2] allows for the sampling error of a 20-sample std).
    process = CleanObjective(AbsorbingKernel(2, LogLinearSchedule()))
    windows = torch.stack([torch.tensor([0, 1] * 4) if i % 2 else torch.zeros(8, dtype=torch.long) for i in range(40)])
    runs = [
        evaluate_likelihood(lambda x, t: CopyModel()(x), process, windows, num_draws=4, batch_size=8, seed=s)
        for s in range(20)
    ]
    spread = torch.tensor([r.nelbo_nats_per_token for r in runs]).std().item()
    reported = sum(r.nelbo_nats_per_token_stderr for r in runs) / len(runs)
    assert 0.5 < spread / reported < 2.0
