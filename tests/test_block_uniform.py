"""Block diffusion with uniform noise (DiffusionGemma's shape on BD3-LM's block-causal transformer): the NELBO by
enumeration on V = 3 tokens, L = 4 positions, blocks of 2; the per-position time; exact KV-cached sampling; the CLI.
"""

import itertools
import json
import math

import numpy as np
import pytest
import torch

from test_cli import run
from test_training import TINY
from tokendiff.checkpoint import load_checkpoint
from tokendiff.cli.main import main
from tokendiff.configs import compose_config
from tokendiff.errors import TokenDiffError
from tokendiff.evaluation.likelihood import evaluate_likelihood
from tokendiff.models import Transformer
from tokendiff.objectives import BlockDiffusionObjective, likelihood_objective
from tokendiff.processes import AbsorbingKernel, HybridKernel, UniformKernel
from tokendiff.samplers import DiffusionSampler, row_generators
from tokendiff.schedules import LogLinearSchedule, make_schedule
from toy import Toy, random_joint_tensor, tanh_sinh

V, L, B = 3, 4, 2  # vocabulary, sequence, block
BLOCKS = range(0, L, B)  # first positions of the blocks


class ExactUniformBlocks(torch.nn.Module):
    """``forward_block_diffusion(xt, x0, t)``: for each block ``b`` the exact denoiser of the block's own uniform
    diffusion, the leave-one-out law ``p(x0_i | x_t^{-i} in block b, clean x0_<b)`` of a known joint (later
    blocks marginalised; tests/toy.py), at the block's time ``t`` (B, L). The clean half must be clean: a block
    model is only ever shown clean earlier blocks."""

    def __init__(self, kernel, joint: torch.Tensor):
        super().__init__()
        self.kernel, self.joint = kernel, joint
        self.toys = {}  # (a, clean prefix) -> the Toy of p(x_b | x_<b)
        self.calls = 0

    def toy(self, a: int, prefix: tuple) -> Toy:
        if (a, prefix) not in self.toys:
            block = self.joint[prefix]  # (V,)*(L - a): p(x_<b, x_b, later blocks)
            if L - a > B:  # marginalise the later blocks (sum over no dims would sum over all)
                block = block.sum(dim=tuple(range(B, L - a)))  # (V,)*B
            self.toys[a, prefix] = Toy(self.kernel, block / block.sum())
        return self.toys[a, prefix]

    def forward_block_diffusion(self, xt, x0, t):
        self.calls += 1
        assert t.shape == xt.shape  # one time per position, the same within a block
        out = torch.zeros(*xt.shape, V, dtype=torch.float64)
        for a in BLOCKS:
            assert torch.equal(t[:, a : a + B], t[:, a : a + 1].expand(-1, B))
            prefixes = x0[:, :a]
            for prefix in {tuple(p) for p in prefixes.tolist()}:  # rows with the same clean earlier blocks
                rows = (prefixes == torch.tensor(prefix, dtype=x0.dtype)).all(1)
                toy = self.toy(a, prefix)
                out[rows, a : a + B] = toy.loo_log_probs(xt[rows, a : a + B], t[rows, a].double())
        return out


def tanh_sinh_nodes(h: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """The nodes and weights of toy.py's ``tanh_sinh`` (the same sum, all nodes at once), (N,) float64 each."""
    x = torch.from_numpy(np.arange(-3.0, 3.0 + 1e-9, h))
    s = 0.5 * math.pi * torch.sinh(x)
    return 0.5 * (1.0 + torch.tanh(s)), h * 0.25 * math.pi * torch.cosh(x) / torch.cosh(s) ** 2


def block_integrals(kernel, model, x0: tuple) -> list[float]:
    """``int_0^1 E_{x_t ~ q_t(.|x0_b)} [sum_{i in b} term_i] dt`` of each block ``b``, by enumeration: every state
    ``z`` of the block's ``x_t`` weighted by ``q_t(z | x0_b)``, the kernel's terms from ``model``'s logits of that
    block (the other blocks clean), tanh-sinh quadrature over t; one model call per block for all nodes and states."""
    t, w = tanh_sinh_nodes()  # (N,)
    eye = torch.eye(V + 1, dtype=torch.float64)[:V]  # (V, K)
    Q = kernel.alpha(t)[:, None, None] * eye + kernel.noise(t)[:, None, :]  # (N, V, K) q_t(z | v)
    states = torch.tensor(list(itertools.product(range(V + 1), repeat=B)))  # (S, B) every state of a block
    x = torch.tensor([x0])
    out = []
    for a in BLOCKS:
        block = torch.tensor(x0[a : a + B])  # (B,)
        probs = Q[:, block[None, :], states].prod(-1)  # (N, S): prod_i q_t(z_i | x0_i)
        node, state = probs.nonzero(as_tuple=True)  # the reachable (time, state) pairs
        xt = x.repeat(len(node), 1)  # (n, L) the other blocks clean
        xt[:, a : a + B] = states[state]
        times = t[node, None].expand(-1, L)  # (n, L)
        logits = model.forward_block_diffusion(xt, x.expand_as(xt), times)[:, a : a + B]  # (n, B, V)
        terms = kernel.nelbo_terms(logits, block.expand(len(node), B), states[state], t[node]).sum(1)  # (n,)
        out.append(float((w[node] * probs[node, state] * terms).sum()))
    return out


def exact_block_nelbo(kernel, model, x0: tuple) -> tuple[float, float]:
    """``(NELBO(x0), sum_b gap_b(x0))``: the blocks' integrals (:func:`block_integrals`) plus the prior term, and
    the gaps ``E_{z ~ q_1(.|x0_b)} log(q_1(z | x0_<b) / p_1(z))`` of each block's prior mismatch (toy.py's
    ``prior_gap`` of the block's conditional law)."""
    x = torch.tensor([x0])
    prior = float(kernel.prior_terms(x).double().sum())
    gaps = sum(model.toy(a, x0[:a]).prior_gap(x0[a : a + B]) for a in BLOCKS)
    return sum(block_integrals(kernel, model, x0)) + prior, gaps


def uniform(eps: float = 0.2):
    return UniformKernel(V, LogLinearSchedule(eps=eps))


def test_block_nelbo_of_the_exact_block_denoiser_is_minus_log_likelihood_plus_the_prior_gaps():
    # p(x) = prod_b p(x_b | x_<b), and each block's uniform NELBO with its exact denoiser is
    # -log p(x_b | x_<b) + gap_b (tests/test_bounds.py: the reverse process is the true one, started from the
    # prior instead of the data's marginal at t = 1), so the block NELBO is -log p(x) + sum_b gap_b for every x.
    # The quadrature error test_bounds.py accepts for whole sequences (< 1e-5) holds here (measured ~1e-8);
    # alpha(1) = eps > 0 makes the gaps nonzero (and of either sign per sequence), so they are really checked.
    joint = random_joint_tensor(V, L, seed=7)
    kernel = uniform()
    model = ExactUniformBlocks(kernel, joint)
    gap_sizes = []
    for x0 in itertools.product(range(V), repeat=L):
        nelbo, gaps = exact_block_nelbo(kernel, model, x0)
        assert abs(nelbo - (-math.log(float(joint[x0])) + gaps)) < 1e-5, x0
        gap_sizes.append(abs(gaps))
    assert max(gap_sizes) > 1e-5  # the gaps matter at this tolerance


def test_the_block_bound_estimates_the_enumerated_nelbo_and_training_its_integral():
    # evaluation (likelihood_objective's bound_terms: importance times per block, plus evaluate_likelihood's
    # prior term) averages to the enumerated NELBO within 4 standard errors; training's draws (uniform times per
    # block on [t_min, 1], antithetic or not) to the enumerated integral over [t_min, 1] / (1 - t_min)
    joint = random_joint_tensor(V, L, seed=7)
    kernel = uniform()
    model = ExactUniformBlocks(kernel, joint)
    x0 = (1, 2, 0, 2)
    exact, _ = exact_block_nelbo(kernel, model, x0)
    windows = torch.tensor([x0]).repeat(2048, 1)
    r = evaluate_likelihood(model, BlockDiffusionObjective(kernel, B), windows, num_draws=2, batch_size=2048)
    assert abs(r.nelbo_nats_per_token - exact / L) < 4 * r.nelbo_nats_per_token_stderr, (r, exact / L)
    assert r.reconstruction_nats_per_token == 0.0  # alpha(0) = 1: no t = 0 term
    assert r.prior_nats_per_token == pytest.approx(float(kernel.prior_terms(windows[:1]).double().mean()), abs=1e-7)

    t_min = 0.05
    prior = float(kernel.prior_terms(torch.tensor([x0])).double().sum())
    truncated = 0.0  # the enumerated integral over [t_min, 1]: substitute t = t_min + (1 - t_min) u
    for a in BLOCKS:
        toy, block = model.toy(a, x0[:a]), x0[a : a + B]
        truncated += tanh_sinh(lambda u, toy=toy, block=block: toy.expected_terms(block, t_min + (1 - t_min) * u))
    assert 0 < truncated < exact - prior  # a part of the integral
    for antithetic in (True, False):
        objective = BlockDiffusionObjective(kernel, B, t_min=t_min, antithetic=antithetic)
        terms = objective.loss_terms(model, windows, torch.Generator().manual_seed(2)).double().sum(1)
        assert abs(terms.mean().item() - truncated) < 4 * terms.std().item() / math.sqrt(len(terms))


def test_block_integrals_are_those_of_each_blocks_own_toy():
    # the enumeration scores block b through forward_block_diffusion; it must be the integral of the block's own
    # Toy (toy.py's whole-sequence enumeration of the conditional law p(x_b | x_<b)), else the theorem above would
    # test a different quantity
    joint = random_joint_tensor(V, L, seed=7)
    kernel = uniform()
    model = ExactUniformBlocks(kernel, joint)
    x0 = (2, 0, 1, 1)
    for a, integral in zip(BLOCKS, block_integrals(kernel, model, x0)):
        toy, block = model.toy(a, x0[:a]), x0[a : a + B]
        assert tanh_sinh(lambda t, toy=toy, block=block: toy.expected_terms(block, t)) == pytest.approx(
            integral, abs=1e-12
        )


def test_cosine_schedule_pays_its_reconstruction_term():
    # alpha(0) = 1 - eps: the bound's t = 0 term (every block at t = 0, given the clean earlier ones) is positive,
    # and the bound stays above -log p(x) + gaps minus its standard error
    joint = random_joint_tensor(V, L, seed=7)
    kernel = UniformKernel(V, make_schedule("cosine"))
    model = ExactUniformBlocks(kernel, joint)
    x0 = (0, 1, 2, 1)
    windows = torch.tensor([x0]).repeat(4096, 1)
    bound = likelihood_objective(BlockDiffusionObjective(kernel, B)).bound_terms(
        model, windows, torch.Generator().manual_seed(3)
    )
    assert float(bound.reconstruction.sum()) > 0.0
    per_seq = bound.total().sum(1) + kernel.prior_terms(windows).double().sum(1)
    gaps = sum(model.toy(a, x0[:a]).prior_gap(x0[a : a + B]) for a in BLOCKS)
    target = -math.log(float(joint[x0])) + gaps
    assert per_seq.mean().item() > target - 4 * per_seq.std().item() / math.sqrt(len(per_seq))


def block_model(seed=0, context=8, block=2, vocab=5):
    torch.manual_seed(seed)
    return Transformer(
        vocab, n_layer=2, n_head=2, n_embd=16, block_size=context, block_diffusion=block, time_conditioning=True
    ).eval()


def test_per_position_times_reach_each_block_and_the_clean_half_is_at_time_zero():
    # forward_block_diffusion with per-block times == the model run on [clean blocks < b at t = 0, noisy block b
    # at t_b]: what block-wise sampling computes without a cache
    model = block_model()
    g = torch.Generator().manual_seed(1)
    x0 = torch.randint(0, 5, (3, 8), generator=g)
    xt = torch.randint(0, 5, (3, 8), generator=g)
    t = torch.rand(3, 4, generator=g).repeat_interleave(2, dim=1)  # (3, 8) one time per block
    with torch.no_grad():
        joint = model.forward_block_diffusion(xt, x0, t)  # (3, 8, V)
        for a in range(0, 8, 2):
            times = torch.cat([torch.zeros(3, a), t[:, a : a + 2]], dim=1)
            alone = model(torch.cat([x0[:, :a], xt[:, a : a + 2]], dim=1), times)[:, a:]
            torch.testing.assert_close(joint[:, a : a + 2], alone, rtol=1e-5, atol=1e-5)
        # the time matters, and (B,) is the same as (B, L) with one time everywhere
        other = model.forward_block_diffusion(xt, x0, t.flip(1))
        assert not torch.allclose(other, joint)
        same = model.forward_block_diffusion(xt, x0, t[:, 0])
        torch.testing.assert_close(same, model.forward_block_diffusion(xt, x0, t[:, :1].expand(-1, 8)))
        # (B,) times in an ordinary call are unchanged: one time broadcast over the positions
        torch.testing.assert_close(model(xt, t[:, 0]), model(xt, t[:, :1].expand(-1, 8)))


def sample(model, x_init, seed=5, **options):
    kernel = UniformKernel(model.vocab_size, LogLinearSchedule())
    sampler = DiffusionSampler(model, kernel, **options)
    return sampler.sample(x_init, row_generators(seed, x_init.shape[0])), sampler


@pytest.mark.parametrize("strategy", ["ancestral", "ddim", "block_refinement"])
@pytest.mark.parametrize("length,prompt", [(8, 0), (8, 3), (13, 1)])
def test_kv_cached_sampling_equals_uncached_and_keeps_the_prompt(strategy, length, prompt):
    # the exact cache of finished blocks (computed at t = 0) gives the same tokens as running the window every
    # step; length 13 > context 8 slides the window; a prompt of 3 starts mid-block (held by replacement)
    model = block_model(seed=4)
    x_init = torch.full((3, length), 5)
    x_init[:, :prompt] = torch.tensor([1, 2, 3])[:prompt]
    options = dict(steps=2 * math.ceil(length / 2), strategy=strategy)
    cached, _ = sample(model, x_init, kv_cache="auto", **options)
    uncached, _ = sample(model, x_init, kv_cache="none", **options)
    assert torch.equal(cached, uncached)
    assert (cached < 5).all() and torch.equal(cached[:, :prompt], x_init[:, :prompt])  # no mask id left
    # batch-invariant: the last row alone, with its own generator, draws what it drew in the batch
    sampler = DiffusionSampler(model, UniformKernel(5, LogLinearSchedule()), kv_cache="auto", **options)
    assert torch.equal(sampler.sample(x_init[2:], row_generators(5, 1, start=2)), cached[2:])


def test_each_block_starts_from_uniform_noise_and_is_denoised():
    # a callback sees the first step of every block: the block's tokens have just left the prior draw, the earlier
    # blocks are finished (never change again) and the later blocks are untouched prior draws
    model = block_model(seed=2)
    x_init = torch.full((2, 8), 5)
    seen = []
    kernel = UniformKernel(5, LogLinearSchedule())
    sampler = DiffusionSampler(model, kernel, steps=8, kv_cache="auto")
    out = sampler.sample(x_init, row_generators(0, 2), callback=lambda i, x: seen.append(x.clone()))
    assert len(seen) == 8 and (out < 5).all()
    for step, x in enumerate(seen):
        done = 2 * (step // 2)  # blocks of 2 tokens, 2 steps each
        assert torch.equal(x[:, :done], out[:, :done])
        assert (x < 5).all()  # uniform noise excludes the mask: no mask id anywhere, ever


def test_ordinary_uniform_models_still_refuse_block_wise_sampling():
    torch.manual_seed(0)
    model = Transformer(5, n_layer=1, n_head=2, n_embd=16, block_size=8, time_conditioning=True).eval()
    with pytest.raises(TokenDiffError, match="sampling.block_size=4"):
        DiffusionSampler(model, UniformKernel(5, LogLinearSchedule()), block_size=4)
    DiffusionSampler(block_model(), UniformKernel(5, LogLinearSchedule()), block_size=2)  # its own blocks: fine


def test_masked_block_objective_is_unchanged_bit_for_bit():
    # the masked path keeps BD3-LM's code: a time-agnostic model is never given t, and the same draws give the
    # same terms as the masked code computed by hand (masks by alpha(t_b), MDLM's weight)
    from tokendiff.processes.absorbing import scored_nll

    torch.manual_seed(0)
    model = Transformer(5, n_layer=1, n_head=2, n_embd=16, block_size=8, block_diffusion=2).eval()
    kernel = AbsorbingKernel(5, LogLinearSchedule())
    x0 = torch.randint(0, 5, (3, 8), generator=torch.Generator().manual_seed(0))
    objective = BlockDiffusionObjective(kernel, 2, antithetic=False)
    with torch.no_grad():
        terms = objective.loss_terms(model, x0, torch.Generator().manual_seed(4))
        g = torch.Generator().manual_seed(4)
        t = (1e-3 + (1 - 1e-3) * torch.rand(12, generator=g)).view(3, 4).repeat_interleave(2, dim=1)
        masked = torch.rand(x0.shape, generator=g) >= kernel.alpha(t)
        xt = torch.where(masked, 5, x0)
        weight = kernel.nelbo_weight(t.double()).float()
        assert torch.equal(terms, scored_nll(model.forward_block_diffusion(xt, x0), x0, masked, weight))


def test_hybrid_block_diffusion_is_refused_in_one_line(capsys, tmp_path):
    with pytest.raises(TokenDiffError, match="absorbing or uniform.*not hybrid"):
        BlockDiffusionObjective(HybridKernel(V, p_uniform=0.3), B)
    bad = ["model.block_diffusion=true", "diffusion.block_size=8", "diffusion.process=hybrid"]
    code, _, err = run(capsys, "train", *TINY, *bad, f"output_dir={tmp_path / 'h'}")
    assert code == 2 and err.count("\n") == 1 and "not hybrid" in err


UNIFORM_BLOCKS = ["model.block_diffusion=true", "diffusion.process=uniform", "diffusion.block_size=4"]


def test_uniform_block_diffusion_trains_samples_and_evaluates_from_the_cli(tmp_path, capsys):
    out = tmp_path / "bd3u"
    assert main(["train", *TINY, *UNIFORM_BLOCKS, "training.max_iters=3", f"output_dir={out}"]) == 0
    capsys.readouterr()
    ckpt = load_checkpoint(out)
    assert ckpt.model.block_diffusion == 4 and ckpt.model.time_conditioning  # auto: uniform noise needs t
    args = ["sample", f"checkpoint={out}", "prompt=ROMEO:", "num_samples=2", "sampling.steps=16", "seed=3"]
    code, stdout, err = run(capsys, *args)
    assert code == 0, err
    samples = [s.split("-----\n", 1)[1] for s in stdout.split("----- sample ")[1:]]
    assert len(samples) == 2 and all(s.startswith("ROMEO:") for s in samples)
    code, uncached, err = run(capsys, *args, "sampling.kv_cache=none")
    assert code == 0 and uncached == stdout, err  # the exact cache: the same text
    code, stdout, err = run(capsys, "eval", f"checkpoint={out}", "eval.max_windows=4", "eval.num_draws=2")
    assert code == 0, err
    result = json.loads(stdout)
    assert result["bits_per_char"] > 0 and result["prior_nats_per_token"] >= 0


def test_the_quickstart_preset_is_quickstart_mdlm_with_uniform_blocks():
    # the same size and budget as quickstart_mdlm; blocks of 16 with uniform noise, the model told the time (auto)
    ours, mdlm = compose_config(["+experiment=quickstart_bd3_uniform"]), compose_config(["+experiment=quickstart_mdlm"])
    assert ours.model.block_diffusion and ours.diffusion.block_size == 16 and ours.diffusion.process == "uniform"
    assert ours.model.time_conditioning is True and ours.diffusion.estimator == "time"  # count is for masks only
    assert (ours.model.n_layer, ours.model.n_embd, ours.model.block_size) == (
        mdlm.model.n_layer, mdlm.model.n_embd, mdlm.model.block_size
    )  # fmt: skip
    assert ours.training == mdlm.training and ours.data == mdlm.data


def test_conditional_scoring_of_a_uniform_block_model_estimates_the_enumerated_block_nelbo():
    # what lm-eval asks: -log p(continuation | context). With the context the first block and the continuation the
    # second, the bound is block 2's NELBO given clean block 1 (its enumerated integral plus its prior terms);
    # with no context it is the whole block NELBO. Each within 4 standard errors of 4096 draws.
    from tokendiff.evaluation.conditional import score_tokens

    joint = random_joint_tensor(V, L, seed=7)
    kernel = uniform()
    model = ExactUniformBlocks(kernel, joint)
    model.block_diffusion = B
    x0 = (1, 2, 0, 2)
    integrals = block_integrals(kernel, model, x0)
    prior = kernel.prior_terms(torch.tensor([x0])).double()[0]  # (L,)
    second = integrals[1] + float(prior[B:].sum())
    whole, _ = exact_block_nelbo(kernel, model, x0)
    for scored_from, exact in ((B, second), (0, whole)):
        score = score_tokens(model, kernel, list(x0), scored_from, draws=4096, seed=3, batch_size=4096)
        assert score.tokens == L - scored_from and score.draws == 4096
        assert abs(score.nats - exact) < 4 * score.stderr, (scored_from, score, exact)
    assert abs(second - whole) > 0.5  # the two targets differ: the context is really conditioned on


class Spy(torch.nn.Module):
    """Records what a block model is shown; returns flat logits."""

    block_diffusion = B

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward_block_diffusion(self, xt, x0, t):
        self.seen.append((xt.clone(), x0.clone(), t.clone()))
        return torch.zeros(*xt.shape, V)


def test_conditional_scoring_keeps_the_context_clean_inside_a_block_and_fills_the_last_one_with_noise():
    from tokendiff.evaluation.conditional import score_tokens

    spy, kernel = Spy(), uniform()
    tokens = [1, 2, 0]  # 3 tokens: the last block is filled with one drawn token
    score_tokens(spy, kernel, tokens, 1, draws=64, seed=0, batch_size=64)
    ((xt, x0, t),) = spy.seen
    assert xt.shape == (64, 4) and (xt[:, 0] == 1).all() and (x0[:, :3] == torch.tensor(tokens)).all()
    assert (xt[:, 1:3] != x0[:, 1:3]).any()  # the continuation is corrupted
    assert len(set(x0[:, 3].tolist())) == V  # the filling is drawn again in each draw
    assert torch.equal(t[:, 0], t[:, 1]) and torch.equal(t[:, 2], t[:, 3]) and not torch.equal(t[:, 1], t[:, 2])
