import math

import pytest
import torch

from tokendiff.evaluation import evaluate_likelihood
from tokendiff.processes import AbsorbingProcess, AutoregressiveProcess
from tokendiff.schedules import LogLinearSchedule


def test_uniform_model_scores_log_V_per_token_within_its_stderr():
    # Each draw has expectation (1 - eps) log V per token (see test_absorbing), so the reported mean
    # must be within a few Monte Carlo standard errors of it.
    V = 7
    process = AbsorbingProcess(V, LogLinearSchedule(eps=1e-3))
    windows = torch.randint(0, V, (64, 32), generator=torch.Generator().manual_seed(0))
    r = evaluate_likelihood(lambda x, t: torch.zeros(*x.shape, V), process, windows, num_draws=8, seed=0,
                            chars_per_token=1.0)
    expected = (1 - 1e-3) * math.log(V)
    assert abs(r.nelbo_nats_per_token - expected) < 4 * r.nelbo_nats_per_token_stderr
    assert r.bits_per_token == r.nelbo_nats_per_token / math.log(2)
    assert r.perplexity == math.exp(r.nelbo_nats_per_token)


def test_autoregressive_likelihood_is_exact():
    # Uniform next-token logits give exactly log V per predicted token, with no Monte Carlo error.
    V = 5
    windows = torch.randint(0, V, (10, 17), generator=torch.Generator().manual_seed(0))
    r = evaluate_likelihood(lambda x, t: torch.zeros(*x.shape, V), AutoregressiveProcess(V), windows)
    # (float32 cross-entropy: equal to log V up to float32 rounding)
    assert r.nelbo_nats_per_token == pytest.approx(math.log(V), rel=1e-7) and r.nelbo_nats_per_token_stderr == 0.0
    assert r.tokens_per_sequence == 16
