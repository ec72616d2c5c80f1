import pytest
import torch

from tokendiff.errors import TokenDiffError
from tokendiff.schedules import SCHEDULES, LogLinearSchedule, make_schedule

NAMES = sorted(SCHEDULES)


@pytest.mark.parametrize("name", NAMES)
def test_alpha_prime_matches_autograd(name):
    s = make_schedule(name)
    t = torch.linspace(0.01, 0.99, 50, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(s.alpha(t).sum(), t)
    torch.testing.assert_close(s.alpha_prime(t.detach()), grad, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_alpha_runs_from_clean_to_noise(name):
    # t = 0 is clean (alpha = 1 up to the schedule's floor), t = 1 is (almost) all mask, and in between
    # alpha strictly decreases, so the NELBO weight -alpha'/(1-alpha) is positive.
    s = make_schedule(name)
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    a = s.alpha(t)
    assert a[0] >= 0.999 - 1e-12 and a[-1] < 0.01  # diffusers' linear and cosine start at 1 - eps
    assert (a[1:] < a[:-1]).all()
    assert (s.weight(t[1:-1]) > 0).all() and s.weight(t[-1:]) >= 0  # diffusers' cosine is flat at t = 1


def test_loglinear_is_the_seeds_formula():
    # alpha(t) = 1 - (1 - eps) t with eps = 1e-3: at t = 1 a token survives with probability eps.
    s = LogLinearSchedule(eps=1e-3)
    t = torch.tensor([0.0, 0.25, 1.0], dtype=torch.float64)
    torch.testing.assert_close(s.alpha(t), 1 - 0.999 * t)
    torch.testing.assert_close(
        s.weight(torch.tensor([0.5], dtype=torch.float64)), torch.tensor([0.999 / (0.999 * 0.5)], dtype=torch.float64)
    )


def test_unknown_schedule_is_a_clear_error():
    with pytest.raises(TokenDiffError, match="unknown noise schedule 'quadratic'"):
        make_schedule("quadratic")
