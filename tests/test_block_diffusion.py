"""Block diffusion (BD3-LM): the NELBO by enumeration, the block-causal model, exact KV-cached sampling."""

import itertools
import json
import math

import pytest
import torch
from conftest import ExactConditionals, random_joint

from test_absorbing import quadrature
from test_cli import run
from test_training import TINY
from tokendiff.checkpoint import load_checkpoint
from tokendiff.cli.main import main
from tokendiff.errors import TokenDiffError
from tokendiff.models import Transformer
from tokendiff.objectives import BlockDiffusionObjective, likelihood_objective
from tokendiff.processes import AbsorbingKernel
from tokendiff.samplers import DiffusionSampler, row_generators
from tokendiff.schedules import LogLinearSchedule, make_schedule

V, L, B = 2, 4, 2  # vocabulary, sequence, block


class ExactBlockConditionals(torch.nn.Module):
    """``forward_block_diffusion``: the true ``log p(x_i | visible tokens of x_t's block, clean earlier blocks)``
    of a known joint (later blocks are marginalised), as BD3-LM's model estimates them."""

    def __init__(self, joint):
        super().__init__()
        self.exact = ExactConditionals(joint, V, L)

    def forward_block_diffusion(self, xt, x0, t=None):
        out = torch.zeros(*xt.shape, V, dtype=torch.float64)
        for a in range(0, L, B):
            seen = torch.cat([x0[:, :a], xt[:, a : a + B], torch.full_like(xt[:, a + B :], V)], dim=1)
            out[:, a : a + B] = torch.log_softmax(self.exact(seen)[:, a : a + B], dim=-1)  # normalised
        return out


def block_expectation(kernel, model, x0: tuple, t_lo: float) -> float:
    """(1 / (1 - t_lo)) sum_b int_{t_lo}^1 E_{masks of block b}[w(t) sum of its masked -log p] dt, by
    enumerating every mask pattern of each block and Gauss-Legendre quadrature over its time."""
    x = torch.tensor([x0])
    total = 0.0
    for a in range(0, L, B):

        def integrand(t, a=a):
            alpha = float(kernel.schedule.alpha(torch.tensor(t, dtype=torch.float64)))
            weight = float(kernel.schedule.weight(torch.tensor(t, dtype=torch.float64)))
            value = 0.0
            for pattern in itertools.product([0, 1], repeat=B):
                xt = x.clone()
                xt[0, a : a + B] = torch.tensor([V if m else v for m, v in zip(pattern, x0[a : a + B])])
                log_p = model.forward_block_diffusion(xt, x)[0]  # (L, V)
                nll = sum(-float(log_p[a + j, x0[a + j]]) for j, m in enumerate(pattern) if m)
                value += (1 - alpha) ** sum(pattern) * alpha ** (B - sum(pattern)) * weight * nll
            return value

        total += quadrature(integrand, t_lo, 1.0)
    return total / (1.0 - t_lo)


def test_block_nelbo_of_exact_conditionals_is_minus_log_likelihood():
    # p(x) = prod_b p(x_b | x_<b) and each factor's masked NELBO is exact for exact conditionals (alpha(1) = 0):
    # the sum of the blocks' NELBOs is -log p(x) for every x
    joint = random_joint(V, L, seed=7)
    model, kernel = ExactBlockConditionals(joint), AbsorbingKernel(V, LogLinearSchedule(eps=0.0))
    for x0, p in joint.items():
        assert block_expectation(kernel, model, x0, 0.0) == pytest.approx(-math.log(p), rel=1e-6)


@pytest.mark.parametrize("antithetic", [True, False])
def test_block_objective_is_an_unbiased_estimate_of_its_enumerated_expectation(antithetic):
    # the objective's own draws (a time per block, masks within blocks, one call for all blocks) average to
    # the enumerated expectation over [t_min, 1] (a wrong model, so that the terms are not -log p)
    kernel = AbsorbingKernel(V, LogLinearSchedule(eps=0.0))
    model = ExactBlockConditionals(random_joint(V, L, seed=3))
    x0 = (1, 0, 1, 1)
    exact = block_expectation(kernel, model, x0, 0.05)
    objective = BlockDiffusionObjective(kernel, B, t_min=0.05, antithetic=antithetic)
    g = torch.Generator().manual_seed(0)
    n = 20000
    per_seq = objective.loss_terms(model, torch.tensor([x0]).repeat(n, 1), g).sum(1).double()  # (n,)
    stderr = per_seq.std().item() / math.sqrt(n)
    assert abs(per_seq.mean().item() - exact) < 4 * stderr
    assert likelihood_objective(objective).block_size == B  # evaluation scores the same NELBO


@pytest.mark.parametrize("schedule", ["log_linear", "cosine"])
def test_block_bound_terms_estimate_the_whole_bound(schedule):
    # evaluation's draws (importance times on (0, 1] per block, the t = 0 term when alpha(0) < 1) with exact
    # conditionals: -log p(x) for alpha(0) = 1 and alpha(1) = 0 (within 4 standard errors), and at least
    # -log p(x) for the cosine schedule, which starts at alpha(0) = 1 - eps and is paid for by the t = 0 term
    joint = random_joint(V, L, seed=7)
    sched = LogLinearSchedule(eps=0.0) if schedule == "log_linear" else make_schedule("cosine")
    kernel, model = AbsorbingKernel(V, sched), ExactBlockConditionals(joint)
    x0 = (1, 0, 1, 1)
    objective = likelihood_objective(BlockDiffusionObjective(kernel, B))
    g = torch.Generator().manual_seed(0)
    n = 20000
    bound = objective.bound_terms(model, torch.tensor([x0]).repeat(n, 1), g)
    per_seq = bound.total().sum(1)  # (n,)
    stderr = per_seq.std().item() / math.sqrt(n)
    if schedule == "log_linear":
        assert abs(per_seq.mean().item() + math.log(joint[x0])) < 4 * stderr
        assert float(bound.reconstruction.abs().sum()) == 0.0
    else:
        assert per_seq.mean().item() > -math.log(joint[x0]) - 4 * stderr
        assert float(bound.reconstruction.sum()) > 0.0


def tiny_block_model(seed=0, context=8, block=2, vocab=5):
    torch.manual_seed(seed)
    return Transformer(vocab, n_layer=2, n_head=2, n_embd=16, block_size=context, block_diffusion=block).eval()


def test_training_call_gives_each_block_its_clean_prefix_and_nothing_later():
    # forward_block_diffusion's logits of noisy block b == the model run on [clean blocks < b, noisy block b]
    model = tiny_block_model()
    g = torch.Generator().manual_seed(1)
    x0 = torch.randint(0, 5, (3, 8), generator=g)
    xt = torch.where(torch.rand(3, 8, generator=g) < 0.5, 5, x0)
    with torch.no_grad():
        joint = model.forward_block_diffusion(xt, x0)  # (3, 8, V)
        for a in range(0, 8, 2):
            alone = model(torch.cat([x0[:, :a], xt[:, a : a + 2]], dim=1))[:, a:]
            torch.testing.assert_close(joint[:, a : a + 2], alone, rtol=1e-5, atol=1e-5)
        # and a later block, clean or noisy, changes nothing before it
        changed = model.forward_block_diffusion(torch.cat([xt[:, :4], x0[:, 4:]], 1), torch.flip(x0, [1]) * 0 + x0)
        torch.testing.assert_close(changed[:, :4], joint[:, :4])


def test_cached_keys_and_values_give_the_full_forward():
    # block by block with the cache of the earlier blocks == one block-causal call over the whole sequence
    model = tiny_block_model()
    x = torch.randint(0, 6, (2, 8), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(x)
        cache, parts = None, []
        for a in range(0, 8, 2):
            logits, cache = model.forward_cached(x[:, a : a + 2], None, a, cache)
            parts.append(logits)
        assert cache.length == 8
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=1e-5, atol=1e-5)


def sample(model, x_init, **options):
    kernel = AbsorbingKernel(model.vocab_size, LogLinearSchedule())
    sampler = DiffusionSampler(model, kernel, **options)
    out = sampler.sample(x_init, row_generators(5, x_init.shape[0]))
    return out, sampler.model_calls


@pytest.mark.parametrize("strategy", ["ancestral", "confidence", "threshold"])
@pytest.mark.parametrize("length,prompt", [(8, 0), (8, 3), (13, 1)])
def test_kv_cached_sampling_equals_uncached_token_for_token(strategy, length, prompt):
    # length 13 > context 8: the window slides over finished blocks (cache rebuilt); prompt 3 starts mid-block
    model = tiny_block_model(seed=4)
    x_init = torch.full((3, length), 5)
    x_init[:, :prompt] = torch.tensor([1, 2, 3])[:prompt]
    options = dict(steps=2 * math.ceil(length / 2), strategy=strategy, threshold=0.3)
    cached, cached_calls = sample(model, x_init, kv_cache="auto", **options)
    uncached, uncached_calls = sample(model, x_init, kv_cache="none", **options)
    assert torch.equal(cached, uncached)
    assert (cached != 5).all() and torch.equal(cached[:, :prompt], x_init[:, :prompt])
    assert cached_calls >= uncached_calls  # the cache costs a call per finished block, and each call is a block


def test_block_model_refuses_other_block_sizes_and_unknown_caches():
    model = tiny_block_model()
    kernel = AbsorbingKernel(5, LogLinearSchedule())
    with pytest.raises(TokenDiffError, match="its own blocks"):
        DiffusionSampler(model, kernel, block_size=4)
    with pytest.raises(TokenDiffError, match="kv_cache='full'"):
        DiffusionSampler(model, kernel, kv_cache="full")


def test_approximate_caches_of_a_bidirectional_model():
    torch.manual_seed(0)
    model = Transformer(5, n_layer=2, n_head=2, n_embd=16, block_size=12).eval()
    x_init = torch.full((2, 12), 5)
    x_init[:, :2] = 1
    plain, _ = sample(model, x_init, steps=12, block_size=4, kv_cache="none")
    for mode in ("prefix", "dual"):
        out, _ = sample(model, x_init, steps=12, block_size=4, kv_cache=mode)  # stale keys: other draws
        assert (out != 5).all() and (out[:, :2] == 1).all() and not torch.equal(out, plain)
    # one block over the whole window caches nothing that could go stale: the same tokens as without a cache
    all_masks = torch.full((2, 12), 5)
    whole, _ = sample(model, all_masks, steps=12, block_size=12, kv_cache="none")
    for mode in ("prefix", "dual"):
        assert torch.equal(sample(model, all_masks, steps=12, block_size=12, kv_cache=mode)[0], whole)
    with pytest.raises(TokenDiffError, match="needs sampling.block_size"):
        DiffusionSampler(model, AbsorbingKernel(5, LogLinearSchedule()), kv_cache="dual")


BLOCK = ["model.block_diffusion=true", "diffusion.block_size=8"]


def test_block_diffusion_trains_samples_and_evaluates_from_the_cli(tmp_path, capsys):
    out = tmp_path / "bd3"
    assert main(["train", *TINY, *BLOCK, "training.max_iters=3", f"output_dir={out}"]) == 0
    capsys.readouterr()
    ckpt = load_checkpoint(out)
    assert ckpt.model.block_diffusion == 8
    code, stdout, err = run(capsys, "sample", f"checkpoint={out}", "prompt=ROMEO:", "num_samples=2", "sampling.steps=8")
    assert code == 0, err
    samples = [s.split("-----\n", 1)[1] for s in stdout.split("----- sample ")[1:]]
    assert len(samples) == 2 and all(s.startswith("ROMEO:") for s in samples)
    code, stdout, err = run(capsys, "eval", f"checkpoint={out}", "eval.max_windows=8", "eval.num_draws=2")
    assert code == 0, err
    assert json.loads(stdout)["bits_per_char"] > 0
    bad = ["model.block_diffusion=true", "diffusion.block_size=5", f"output_dir={tmp_path / 'x'}"]
    code, _, err = run(capsys, "train", *TINY, *bad)
    assert code == 2 and err.count("\n") == 1 and "diffusion.block_size" in err


def test_init_from_fine_tunes_a_masked_model_into_block_diffusion(tmp_path, capsys):
    # BD3-LM's recipe: a masked diffusion model's weights start the block diffusion run (same sizes and tokenizer)
    masked = tmp_path / "masked"
    assert main(["train", *TINY, "training.max_iters=2", f"output_dir={masked}"]) == 0
    tuned = tmp_path / "tuned"
    args = [*TINY, *BLOCK, "training.max_iters=1", "training.learning_rate=1e-9", "training.min_lr=0"]
    assert main(["train", *args, f"training.init_from={masked}", f"output_dir={tuned}"]) == 0
    start, after = load_checkpoint(masked).model.state_dict(), load_checkpoint(tuned).model.state_dict()
    assert set(start) == set(after)
    for name in start:
        torch.testing.assert_close(after[name], start[name], atol=1e-6, rtol=0)
    capsys.readouterr()
    bad = [*TINY, "model.n_embd=16", f"training.init_from={masked}", f"output_dir={tmp_path / 'b'}"]
    code, _, err = run(capsys, "train", *bad)
    assert code == 2 and err.count("\n") == 1 and "training.init_from" in err and "do not fit" in err
