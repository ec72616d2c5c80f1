"""The optimizers: Muon takes the hidden matrices and AdamW the rest, and the pair saves and loads as one."""

import copy
from types import SimpleNamespace

import pytest
import torch

from tokendiff.models.transformer import Transformer
from tokendiff.training.muon import Muon, MuonAdamW, newton_schulz
from tokendiff.training.optimizer import build_optimizer, clear_moments, muon_matrices

SETTINGS = SimpleNamespace(optimizer="muon", learning_rate=1e-2, weight_decay=0.1, beta1=0.9, beta2=0.99)


def _model():
    torch.manual_seed(0)
    return Transformer(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16)


def _step(model, optimizer, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 11, (3, 8), generator=g)
    loss = torch.nn.functional.cross_entropy(model(x, torch.rand(3, generator=g)).transpose(1, 2), x)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def test_muon_takes_the_hidden_matrices_and_adamw_everything_else():
    model = _model()
    opt = build_optimizer(model, SETTINGS, fused=False)
    muon, adamw = opt.parts
    in_muon = {id(p) for g in muon.param_groups for p in g["params"]}
    in_adamw = {id(p) for g in adamw.param_groups for p in g["params"]}
    assert not in_muon & in_adamw
    assert in_muon | in_adamw == {id(p) for p in model.parameters()}  # each parameter in exactly one
    assert id(model.head.weight) in in_adamw and id(model.embed.weight) in in_adamw
    assert all(p.dim() == 2 for p in muon_matrices(model))
    assert in_muon == {id(p) for p in muon_matrices(model)} and len(in_muon) >= 2 * 4  # q/k/v/o ... per layer


def test_the_muon_step_is_orthogonalized():
    # Muon's first step on a matrix (zero momentum, no decay) is lr * scale * NS(grad): the update's singular
    # values all lie near one another (Newton-Schulz sends them to about [0.5, 1.5]), whatever the gradient's.
    w = torch.nn.Parameter(torch.zeros(16, 32))
    opt = torch.optim.Muon([w], lr=1.0, weight_decay=0.0, nesterov=False)
    w.grad = torch.randn(16, 32) @ torch.diag(torch.logspace(0, 3, 32))  # singular values over 3 decades
    opt.step()
    s = torch.linalg.svdvals(w.detach())
    assert s.min() > 0.3 * s.max()


def test_the_pair_saves_and_restores_both_states_as_one_optimizer():
    model = _model()
    opt = build_optimizer(model, SETTINGS, fused=False)
    _step(model, opt, 1)
    saved, state = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    n_params = sum(1 for _ in model.parameters())
    assert sorted(state["state"]) == list(range(n_params))  # one numbering over both rules
    _step(model, opt, 2)
    expected = copy.deepcopy(model.state_dict())
    # a fresh model and optimizer, given the saved weights and state, take the same second step
    other = _model()
    other.load_state_dict(saved)
    fresh = build_optimizer(other, SETTINGS, fused=False)
    fresh.load_state_dict(state)
    _step(other, fresh, 2)
    for k, v in expected.items():
        assert torch.equal(v, other.state_dict()[k]), k
    # ...and not without the state: the momentum matters
    other.load_state_dict(saved)
    clear_moments(fresh)
    assert not fresh.state
    _step(other, fresh, 2)
    assert any(not torch.equal(v, other.state_dict()[k]) for k, v in expected.items())


def test_adamw_is_the_default():
    opt = build_optimizer(_model(), SimpleNamespace(**{**vars(SETTINGS), "optimizer": "adamw"}), fused=False)
    assert isinstance(opt, torch.optim.AdamW) and not isinstance(opt, MuonAdamW)


@pytest.mark.parametrize("nesterov", [True, False])
@pytest.mark.parametrize("rule", ["match_rms_adamw", "original"])
def test_muon_in_bfloat16_is_torchs_muon_step_for_step(nesterov, rule):
    # tokendiff's Muon only chooses the Newton-Schulz dtype; in bfloat16 it must be torch.optim.Muon exactly
    torch.manual_seed(0)
    ours, theirs = (torch.nn.Parameter(torch.randn(24, 10)) for _ in range(2))
    theirs.data.copy_(ours.data)
    kwargs = dict(lr=0.05, weight_decay=0.1, nesterov=nesterov, adjust_lr_fn=rule)
    a = Muon([ours], ns_dtype=torch.bfloat16, **kwargs)
    b = torch.optim.Muon([theirs], **kwargs)
    for step in range(3):
        grad = torch.randn(24, 10, generator=torch.Generator().manual_seed(step))
        ours.grad, theirs.grad = grad.clone(), grad.clone()
        a.step()
        b.step()
        assert torch.equal(ours, theirs), step
    assert torch.equal(a.state[ours]["momentum_buffer"], b.state[theirs]["momentum_buffer"])


def test_newton_schulz_in_float32_is_close_to_bfloat16_and_orthogonalizes():
    g = torch.randn(40, 12) @ torch.diag(torch.logspace(0, 2, 12))
    low, high = newton_schulz(g, torch.bfloat16), newton_schulz(g, torch.float32)
    assert high.dtype == torch.float32 and high.shape == g.shape
    assert (low.float() - high).abs().max() < 0.05
    s = torch.linalg.svdvals(high)
    assert 0.5 < s.min() and s.max() < 1.5  # the quintic's band around one
