import pytest
import torch
from conftest import fit

from tokendiff.errors import TokenDiffError
from tokendiff.models import Transformer
from tokendiff.objectives import CleanObjective
from tokendiff.processes import AbsorbingKernel
from tokendiff.samplers import DiffusionSampler, row_generators
from tokendiff.schedules import LogLinearSchedule


def test_shapes_and_mask_input():
    m = Transformer(vocab_size=9, n_layer=2, n_head=2, n_embd=32, block_size=16)
    x = torch.full((3, 16), 9)  # the mask id V is a valid input, never an output class
    assert m(x).shape == (3, 16, 9)


def test_causal_model_ignores_the_future_and_bidirectional_does_not():
    torch.manual_seed(0)
    x = torch.randint(0, 9, (2, 12))
    y = x.clone()
    y[:, 8:] = (y[:, 8:] + 1) % 9  # change only positions >= 8
    causal = Transformer(9, 2, 2, 32, 16, causal=True).eval()
    bidir = Transformer(9, 2, 2, 32, 16, causal=False).eval()
    torch.testing.assert_close(causal(x)[:, :8], causal(y)[:, :8])  # no position < 8 sees the change
    assert not torch.allclose(bidir(x)[:, :8], bidir(y)[:, :8])


def test_time_conditioned_model_needs_t():
    m = Transformer(9, 1, 2, 32, 16, time_conditioning=True)
    assert m(torch.zeros(2, 16, dtype=torch.long), torch.rand(2)).shape == (2, 16, 9)
    with pytest.raises(TokenDiffError, match="time-conditioned"):
        m(torch.zeros(2, 16, dtype=torch.long))


def test_too_long_input_and_bad_sizes_are_clear_errors():
    m = Transformer(9, 1, 2, 32, 16)
    with pytest.raises(TokenDiffError, match="exceeds model.block_size=16"):
        m(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(TokenDiffError, match="model.n_embd=30"):
        Transformer(9, 1, 4, 30, 16)


def test_tiny_model_overfits_two_strings():
    # A 2-layer, 32-wide denoiser trained on two 12-token strings learns them: its NELBO per token falls
    # from log V = 1.79 (uniform) towards its minimum log(2) / 12 = 0.058 (the only uncertainty is which
    # of the two strings), and greedy sampling (temperature 0) writes one of the two strings.
    torch.manual_seed(0)
    V, L = 6, 12
    # RoPE carries relative positions only, so the strings are chosen such that one visible token
    # determines everything; then the only uncertainty left is which string, log(2) per sequence.
    data = torch.tensor([[1] * 12, [4] * 12])
    model = Transformer(V, n_layer=2, n_head=2, n_embd=32, block_size=L)
    objective = CleanObjective(AbsorbingKernel(V, LogLinearSchedule()))
    nelbo = fit(model, objective, data, steps=250)
    assert nelbo < 0.1
    out = DiffusionSampler(model, objective.kernel, steps=L, temperature=0.0).sample(
        torch.full((4, L), V), row_generators(0, 4)
    )
    for row in out.tolist():
        assert row in data.tolist()
