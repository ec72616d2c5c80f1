"""The step rules of diffusers' schedulers, token for token against diffusers 0.42 itself (a test-only extra).

Each test feeds tokendiff's rule and the diffusers scheduler the same logits, the same sample and the same
settings. Greedy settings need no shared noise, so whole trajectories are compared through the rule's own
``step``; where diffusers draws (its one generator: ``multinomial``, then ``randint``), the test replays its
generator to hand tokendiff's step function the same draws, and compares the committed tokens and the next
sample. A wrong route probability, entropy order, quota or leave-one-out shift changes the draws or the
decisions, and the comparison fails.
"""

import pytest
import torch
from diffusers import BlockRefinementScheduler, DiscreteDDIMScheduler, EntropyBoundScheduler

from tokendiff.processes import AbsorbingKernel, UniformKernel
from tokendiff.samplers.block_refinement import BlockRefinementStep, refine_masks
from tokendiff.samplers.ddim import posterior_routes, take_routes
from tokendiff.samplers.diffusion import step_temperature
from tokendiff.samplers.entropy_bound import entropy_bound_renoise
from tokendiff.samplers.loo_corrector import LeaveOneOutCorrector, loo_conditional, select_positions, selection_scores
from tokendiff.samplers.noise import process_log_probs, row_generators
from tokendiff.samplers.settings import SamplingSettings
from tokendiff.samplers.step import StepInput
from tokendiff.schedules import LinearSchedule

V, L, B = 13, 12, 3


def toy_logits(x: torch.Tensor, seed: int = 0, scale: float = 4.0) -> torch.Tensor:
    """A fixed bidirectional "model" (B, L) -> (B, L, V): each position sees its own token and the row's mean,
    so committing or editing one token moves the others' logits (as a denoiser's do)."""
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(V + 1, 8, generator=g)
    pos = torch.randn(x.shape[1], 8, generator=g)
    out = torch.randn(8, V, generator=g)
    h = emb[x] + pos + emb[x].mean(1, keepdim=True)  # (B, L, 8)
    return scale * torch.tanh(h) @ out  # (B, L, V)


def state_for(x, x_start, free, index, steps, logits, generators=None, last=False, masked0=None, temperature=0.0):
    alpha = torch.tensor(1.0 if last else (index + 1) / steps, dtype=torch.float64)
    masked0 = masked0 if masked0 is not None else ((x_start == V) & free).sum(-1)
    return StepInput(
        x, x_start, free, 1.0 - index / steps, 1.0 - (index + 1) / steps, torch.tensor(index / steps), alpha,
        torch.tensor(0.0), masked0, generators or row_generators(0, x.shape[0]), index, steps, logits, temperature,
    )  # fmt: skip


# ----------------------------------------------------------------------------------------- block refinement
@pytest.mark.parametrize("editing", [None, 0.6])
@pytest.mark.parametrize("threshold", [0.95, 0.5])
def test_block_refinement_masks_greedy_trajectory_equals_diffusers(editing, threshold):
    steps = 5
    prompt = torch.zeros(L, dtype=torch.bool)
    prompt[:2] = True  # two held tokens at the start of the block: never committed, never edited
    x0 = torch.full((B, L), V)
    x0[:, :2] = torch.tensor([3, 7])
    free = ~prompt.expand(B, L)
    settings = SamplingSettings(
        strategy="block_refinement", temperature=0.0, threshold=threshold, editing_threshold=editing, steps=steps
    )
    rule = BlockRefinementStep(AbsorbingKernel(V, LinearSchedule()), settings)
    ref = BlockRefinementScheduler(block_length=L - 2, num_inference_steps=steps, threshold=threshold)
    ref.set_timesteps(steps, block_length=L - 2)
    ours, theirs = x0.clone(), x0.clone()
    edits = 0
    for i in range(steps):
        logits = toy_logits(theirs)
        out = ref.step(
            logits, i, theirs, mask_token_id=V, temperature=0.0, editing_threshold=editing, prompt_mask=prompt
        )
        theirs = out.prev_sample
        edits += int(out.editing_transfer_index.sum())
        state = state_for(ours, x0, free, i, steps, toy_logits(ours), last=i == steps - 1)
        ours = rule.step(process_log_probs(state.logits, 0.0, 1.0), state)
        assert torch.equal(ours, theirs), f"step {i}"
    assert (ours != V).all()  # every mask committed by the last step
    if editing is not None and threshold == 0.5:
        assert edits > 0  # the case edits something, so editing is compared, not only committing


@pytest.mark.parametrize("editing", [None, 0.5])
def test_block_refinement_masks_sampled_step_equals_diffusers_given_its_draws(editing):
    torch.manual_seed(1)
    x = torch.randint(0, V, (B, L))
    x[:, ::2] = V  # half the block still masked, the other half committed (editable)
    logits = 3 * torch.randn(B, L, V)
    ref = BlockRefinementScheduler(block_length=L, num_inference_steps=4, threshold=0.3)
    ref.set_timesteps(4, block_length=L)
    out = ref.step(
        logits, 1, x, mask_token_id=V, temperature=0.7, top_k=6, editing_threshold=editing,
        generator=torch.Generator().manual_seed(5),
    )  # fmt: skip
    log_p = process_log_probs(logits, 0.7, 1.0, top_k=6)
    confidence = log_p.gather(-1, out.sampled_tokens.unsqueeze(-1)).squeeze(-1).exp()
    assert torch.allclose(confidence, out.sampled_probs.double(), atol=1e-6)  # the same distribution
    masked = x == V
    quota = torch.full((B,), int(ref._transfer_schedule[1]))
    x_s, commit, edit = refine_masks(x, out.sampled_tokens, confidence, masked, ~masked, quota, 0.3, editing)
    assert torch.equal(x_s, out.prev_sample)
    assert torch.equal(commit, out.transfer_index) and torch.equal(edit, out.editing_transfer_index)


@pytest.mark.parametrize("editing", [None, 0.0, 0.5])
def test_block_refinement_uniform_mode_equals_diffusers_given_its_noise(editing):
    steps = 4
    kernel = UniformKernel(V, LinearSchedule())
    settings = SamplingSettings(
        strategy="block_refinement", temperature=0.0, threshold=0.9, editing_threshold=editing, steps=steps
    )
    rule = BlockRefinementStep(kernel, settings)
    ref = BlockRefinementScheduler(block_length=L, num_inference_steps=steps, threshold=0.9)
    ref.set_timesteps(steps, block_length=L)
    g, replay = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
    x = torch.randint(0, V, (B, L), generator=torch.Generator().manual_seed(9))
    free = torch.ones(B, L, dtype=torch.bool)
    ours = theirs = x
    for i in range(steps):
        logits = toy_logits(theirs, seed=3)
        out = ref.step(logits, i, theirs, mask_token_id=None, temperature=0.0, editing_threshold=editing, generator=g)
        theirs = out.prev_sample
        noise = torch.randint(0, V, (B, L), generator=replay)  # greedy: diffusers' only draw is this randint
        state = state_for(ours, x, free, i, steps, toy_logits(ours, seed=3))
        candidates = state.logits.argmax(-1)
        confidence = state.scoring_log_probs(None).gather(-1, candidates.unsqueeze(-1)).squeeze(-1).exp()
        ours = rule.update_uniform(state, candidates, confidence, noise)
        assert torch.equal(ours, theirs), f"step {i}"
        assert torch.equal(rule.committed, ref._committed)
    assert rule.committed.all()  # the quota reaches the whole block on the last step


# ---------------------------------------------------------------------------------------------- entropy bound
@pytest.mark.parametrize("bound", [0.05, 0.5, 3.0])
def test_entropy_bound_uniform_step_with_annealing_equals_diffusers(bound):
    steps = 6
    settings = SamplingSettings(strategy="entropy_bound", temperature_start=0.8, temperature_end=0.4, steps=steps)
    ref = EntropyBoundScheduler(entropy_bound=bound, t_max=0.8, t_min=0.4, num_inference_steps=steps)
    ref.set_timesteps(steps)
    accepted_counts = []
    for i in range(steps):
        torch.manual_seed(10 + i)
        logits = 3 * torch.randn(B, L, V)
        x = torch.randint(0, V, (B, L))
        out = ref.step(logits, i, x, generator=torch.Generator().manual_seed(i))
        temperature = step_temperature(settings, i, steps)
        replay = torch.Generator().manual_seed(i)  # diffusers draws multinomial, then randint
        torch.multinomial(torch.softmax((logits / temperature).reshape(-1, V).float(), -1), 1, generator=replay)
        noise = torch.randint(0, V, (B, L), generator=replay)
        log_p = process_log_probs(logits, temperature, 1.0)
        x_s, accepted = entropy_bound_renoise(log_p, out.sampled_tokens, noise, bound)
        assert torch.equal(accepted, out.accepted_index) and torch.equal(x_s, out.prev_sample), f"step {i}"
        accepted_counts.append(int(accepted.sum()))
    assert min(accepted_counts) >= B  # the most certain position of each row is always accepted
    assert max(accepted_counts) < B * L  # and not everything: the bound decides


# ---------------------------------------------------------------------------------------- DDIM and corrector
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_ddim_step_equals_diffusers_given_its_draws(temperature):
    steps = 5
    ref = DiscreteDDIMScheduler(num_inference_steps=steps)
    ref.set_timesteps(steps)
    for i in range(steps):
        torch.manual_seed(20 + i)
        logits = 2 * torch.randn(B, L, V)
        x = torch.randint(0, V, (B, L))
        x[:, :3] = logits[:, :3].argmax(-1)  # some positions already hold the predicted token (the a*b route)
        out = ref.step(logits, i, x, temperature=temperature, generator=torch.Generator().manual_seed(i))
        x0 = out.sampled_tokens
        replay = torch.Generator().manual_seed(i)
        if temperature > 0:
            torch.multinomial(torch.softmax(logits.reshape(-1, V).float() / temperature, -1), 1, generator=replay)
        probs = posterior_routes(x, x0, i / steps, (i + 1) / steps, V)  # (B, L, 3)
        routes = torch.multinomial(probs.float().view(-1, 3), 1, generator=replay).view(B, L)
        noise = torch.randint(0, V, (B, L), generator=replay)
        assert torch.equal(take_routes(x, x0, routes, noise), out.prev_sample), f"step {i}"
    assert torch.equal(out.prev_sample, x0)  # the last step (alpha_s = 1) commits the predicted tokens


@pytest.mark.parametrize("selection", ["lowest_log_margin", "lowest_maxprob", "lowest_current_prob", "random"])
def test_loo_corrector_sweep_equals_diffusers_given_its_draws(selection):
    steps, k, tau = 6, 3, 0.7
    ref = DiscreteDDIMScheduler(
        num_inference_steps=steps, corrector_steps=1, corrector_k=k, corrector_selection=selection,
        corrector_selection_tau=tau,
    )  # fmt: skip
    ref.set_timesteps(steps)
    for i in range(steps - 1):
        torch.manual_seed(30 + i)
        logits = 2 * torch.randn(B, L, V)
        x = torch.randint(0, V, (B, L))
        out = ref.step_correct(logits, i, x, generator=torch.Generator().manual_seed(i))
        cond = loo_conditional(torch.log_softmax(logits.double(), -1), x, (i + 1) / steps, V)
        replay = torch.Generator().manual_seed(i)
        u = torch.rand(B, L, generator=replay)
        if selection != "random":
            u = u.clamp(1e-12, 1 - 1e-12)
        positions = select_positions(selection_scores(cond, x, selection), k, tau, u.double())
        chosen = cond.gather(1, positions.unsqueeze(-1).expand(-1, -1, V)).exp()
        values = torch.multinomial(chosen.reshape(-1, V), 1, generator=replay).view(B, k)
        free = torch.ones(B, L, dtype=torch.bool)
        assert torch.equal(LeaveOneOutCorrector.apply(x, positions, values, free), out.prev_sample), f"step {i}"
        assert torch.equal(values, out.sampled_tokens)
