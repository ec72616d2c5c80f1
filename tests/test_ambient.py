"""Ambient training from corrupted data: the easy loss is unbiased, the consistency loss vanishes for
true conditionals (shared/notes/ambient.md)."""

import itertools
import math

import pytest
import torch

from conftest import ExactConditionals, random_joint
from test_absorbing import quadrature
from tokendiff.errors import TokenDiffError
from tokendiff.objectives.ambient import AmbientObjective
from tokendiff.objectives.naive import NaiveObjective
from tokendiff.processes import AbsorbingKernel
from tokendiff.schedules import LogLinearSchedule

V, L, Q = 2, 3, 0.4


def make(q=Q, eps=0.0, **kwargs):
    return AmbientObjective(AbsorbingKernel(V, LogLinearSchedule(eps=eps)), q, t_min=0.0, **kwargs)


def test_corruption_level_solves_alpha_equals_q():
    # For alpha(t) = 1 - (1 - eps) t the level is t_n = (1 - q) / (1 - eps): 0.9 / 0.999 for q = 0.1.
    p = AmbientObjective(AbsorbingKernel(2, LogLinearSchedule(eps=1e-3)), 0.1)
    assert p.t_n == pytest.approx(0.9 / 0.999, abs=1e-12)
    with pytest.raises(TokenDiffError, match="observed_fraction=0.0"):
        AmbientObjective(AbsorbingKernel(2, LogLinearSchedule()), 0.0)


def expected_easy(process, model, x, t):
    """E over y (observed w.p. q) and z (observed re-masked w.p. 1 - alpha/q) of the easy terms, by
    enumerating each token's three fates: visible in z (prob alpha), observed-then-masked (q - alpha),
    never observed (1 - q)."""
    a = float(process.kernel.alpha(torch.tensor(t, dtype=torch.float64)))
    M = V
    total = 0.0
    for fates in itertools.product(range(3), repeat=L):
        prob = math.prod([a, Q - a, 1 - Q][f] for f in fates)
        y = torch.tensor([[xi if f < 2 else M for xi, f in zip(x, fates)]])
        z = torch.tensor([[xi if f == 0 else M for xi, f in zip(x, fates)]])
        tt = torch.tensor([t], dtype=torch.float64)
        total += prob * float(process.easy_terms_given(model(z), y, z, tt).sum())
    return total


def expected_clean(process, model, x, t):
    base = process.kernel
    a = float(base.schedule.alpha(torch.tensor(t, dtype=torch.float64)))
    total = 0.0
    for pattern in itertools.product([0, 1], repeat=L):
        prob = math.prod((1 - a) if m else a for m in pattern)
        xt = torch.tensor([[V if m else xi for m, xi in zip(pattern, x)]])
        total += prob * float(base.nelbo_terms(model(xt), torch.tensor([x]), xt, torch.tensor([t])).sum())
    return total


def test_easy_loss_is_an_unbiased_estimate_of_the_clean_nelbo_above_the_corruption_level():
    # For a model that is NOT the truth (so the loss is not trivially small), at every t >= t_n and for
    # every x the expectation over the corruption and the re-masking equals the clean NELBO integrand;
    # hence, integrated over [t_n, 1] and averaged over x ~ p, the restricted clean NELBO.
    joint, other = random_joint(V, L, seed=11), random_joint(V, L, seed=12)
    model = ExactConditionals(other, V, L)
    process = make()
    for x in joint:
        for t in (process.t_n + 0.01, 0.8, 0.97):
            assert expected_easy(process, model, x, t) == pytest.approx(expected_clean(process, model, x, t), rel=1e-5)

    def restricted(expected, x):  # over [t_n, 1]: a polynomial of degree <= L in t, so 6 nodes are exact
        return quadrature(lambda t: expected(process, model, x, t), process.t_n, 1.0, n=6)

    easy = sum(p * restricted(expected_easy, x) for x, p in joint.items())
    clean = sum(p * restricted(expected_clean, x) for x, p in joint.items())
    assert easy == pytest.approx(clean, rel=1e-5)


def test_remask_has_the_law_of_x_t():
    # y keeps a token w.p. q, remask keeps an observed one w.p. alpha/q: z keeps it w.p. alpha.
    process = make(q=0.5, eps=1e-3)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, V, (200, 400), generator=g)
    y = torch.where(torch.rand(x.shape, generator=g) < 0.5, x, torch.full_like(x, V))
    t = torch.full((200,), 0.7)
    z = process.remask(y, t, g)
    kept = (z != V).double().mean().item()
    alpha = float(process.kernel.alpha(torch.tensor(0.7)))
    assert abs(kept - alpha) < 5 * math.sqrt(alpha * (1 - alpha) / x.numel())
    assert torch.equal(z[z != V], x[z != V])


class Perturbed(torch.nn.Module):
    """Exact conditionals plus a fixed input-dependent distortion: not the conditionals of any joint."""

    time_conditioning = False

    def __init__(self, exact):
        super().__init__()
        self.exact = exact

    def forward(self, z, t=None):
        logits = self.exact(z)
        bias = torch.sin(3.0 * (z.double() + 1) * torch.arange(1, L + 1))  # depends on the visible tokens
        return logits + torch.stack([bias, -bias], dim=-1)


def all_states():
    """Every partly masked state with at least two masks, and every masked position j in it."""
    for z in itertools.product(range(V + 1), repeat=L):
        masked = [i for i, v in enumerate(z) if v == V]
        if len(masked) >= 2:
            for j in masked:
                yield torch.tensor([z]), torch.tensor([j])


@pytest.mark.parametrize("divergence", ["squared", "kl"])
def test_consistency_loss_is_zero_for_true_conditionals_and_not_for_a_perturbed_model(divergence):
    # Tower property: p(x_i | z) = sum_v p(x_j = v | z) p(x_i | z, x_j = v) for the conditionals of any
    # distribution, and with a one-token reveal we compute the expectation exactly, so the loss is zero
    # state by state (up to float32). A distorted model breaks the identity somewhere.
    exact = ExactConditionals(random_joint(V, L, seed=21), V, L)
    process = make(divergence=divergence)
    worst_exact = max(float(process.consistency_terms_given(exact, z, j).sum()) for z, j in all_states())
    worst_perturbed = max(float(process.consistency_terms_given(Perturbed(exact), z, j).sum()) for z, j in all_states())
    # float32 rounding: squared errors of ~1e-7 differences vanish; the logs of KL keep ~1e-7
    assert worst_exact < (1e-12 if divergence == "squared" else 1e-6)
    assert worst_perturbed > 1e-3


def posterior(joint, y):
    """``p(x | y)`` for a partly masked ``y``: {x: probability} over the x that agree with y."""
    agree = {x: p for x, p in joint.items() if all(v == V or v == xi for v, xi in zip(y, x))}
    total = sum(agree.values())
    return {x: p / total for x, p in agree.items()}


def test_imputation_loss_with_exact_imputations_is_an_unbiased_estimate_of_the_clean_nelbo_below_t_n():
    # Enumerate x ~ p, each token's four fates (observed or not in y, visible or not in z) and the exact
    # posterior draws of the visible-but-unobserved tokens given y: the expected imputation terms of a
    # model that is NOT the truth equal the clean NELBO integrand at t < t_n, averaged over x ~ p.
    joint, other = random_joint(V, L, seed=31), random_joint(V, L, seed=32)
    model = ExactConditionals(other, V, L)
    process = make()
    for t in (0.05, 0.3, process.t_n - 0.01):
        a = float(process.kernel.alpha(torch.tensor(t, dtype=torch.float64)))
        tt = torch.tensor([t], dtype=torch.float64)
        imputed_loss = 0.0
        for x, px in joint.items():
            for fates in itertools.product(range(4), repeat=L):  # bit 0: observed, bit 1: visible in z
                prob = math.prod((Q if f & 1 else 1 - Q) * (a if f & 2 else 1 - a) for f in fates)
                y = [xi if f & 1 else V for xi, f in zip(x, fates)]
                for filled, pf in posterior(joint, y).items():
                    z = torch.tensor([[fi if f & 2 else V for fi, f in zip(filled, fates)]])
                    terms = process.imputation_terms_given(model(z), torch.tensor([y]), z, tt)
                    imputed_loss += px * prob * pf * float(terms.sum())
        clean = sum(px * expected_clean(process, model, x, t) for x, px in joint.items())
        assert imputed_loss == pytest.approx(clean, rel=1e-5)


def test_fill_one_token_per_round_draws_from_the_models_posterior():
    # With as many rounds as tokens to fill, fill is the exact sequential draw from the model's
    # conditionals: for exact conditionals, the filled sequences follow p(x | y).
    joint = random_joint(V, L, seed=41)
    exact = ExactConditionals(joint, V, L)
    process = make(descent_steps=L)
    y = [V, 1, V]
    n = 4000
    g = torch.Generator().manual_seed(0)
    ys = torch.tensor([y] * n)
    out = process.fill(exact, ys, ys == V, g)
    counts = {}
    for row in out.tolist():
        counts[tuple(row)] = counts.get(tuple(row), 0) + 1
    want = posterior(joint, y)
    assert set(counts) <= set(want)
    tv = 0.5 * sum(abs(counts.get(x, 0) / n - p) for x, p in want.items())
    assert tv < 0.03  # 4 outcomes, n = 4000: the sampling TV is ~0.01


def test_descend_reveals_down_to_the_level_and_keeps_observed_tokens():
    torch.manual_seed(0)
    from tokendiff.models.image import ImagePatchTransformer

    model = ImagePatchTransformer(n_layer=1, n_head=2, n_embd=32).eval()
    process = AmbientObjective(AbsorbingKernel(2, LogLinearSchedule()), 0.1)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 2, (4, 784), generator=g)
    y = torch.where(torch.rand(x.shape, generator=g) < 0.1, x, torch.full_like(x, 2))
    t = torch.tensor([0.1, 0.3, 0.5, 0.85])
    z = process.descend(lambda a, b: model(a), y, t, g)
    target = torch.round(784 * (1 - process.kernel.alpha(t.double()))).long()
    assert torch.equal((z == 2).sum(1), torch.minimum(target, (y == 2).sum(1)))
    observed = y != 2
    assert torch.equal(z[observed], y[observed])


def test_loss_terms_train_both_parts_and_the_naive_baseline_scores_only_observed_tokens():
    torch.manual_seed(0)
    from tokendiff.models.image import ImagePatchTransformer

    model = ImagePatchTransformer(n_layer=1, n_head=2, n_embd=32)
    base = AbsorbingKernel(2, LogLinearSchedule())
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 2, (8, 784), generator=g)
    y = torch.where(torch.rand(x.shape, generator=g) < 0.1, x, torch.full_like(x, 2))
    variants = [{"hard_loss": "consistency"}, {"hard_loss": "imputation"}, {"consistency_reveal": 0.25}]
    for kwargs in variants:
        model.zero_grad()
        terms = AmbientObjective(base, 0.1, **kwargs).loss_terms(lambda a, t: model(a), y, g)
        assert terms.shape == (8, 784) and torch.isfinite(terms).all() and terms.sum() > 0
        terms.mean().backward()
        assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(TokenDiffError, match="hard_loss='gibbs'"):
        AmbientObjective(base, 0.1, hard_loss="gibbs")
    naive = NaiveObjective(base).loss_terms(lambda a, t: model(a), y, g)
    assert (naive[y == 2] == 0).all()


def test_hard_start_keeps_the_hard_loss_off_for_the_first_share_of_training(monkeypatch):
    process = AmbientObjective(AbsorbingKernel(2, LogLinearSchedule()), 0.1, hard_start=0.3)
    calls = []
    monkeypatch.setattr(process, "consistency_terms", lambda d, y, t, g: calls.append(len(y)) or torch.zeros(y.shape))
    y = torch.full((8, 16), 2)
    y[:, ::4] = 1
    model = lambda a, t: torch.zeros(*a.shape, 2)  # noqa: E731
    process.loss_terms(model, y, torch.Generator().manual_seed(0), progress=0.29)
    assert calls == []
    process.loss_terms(model, y, torch.Generator().manual_seed(0), progress=0.3)
    assert calls == [4]  # easy_fraction 0.5 of 8 rows
    with pytest.raises(TokenDiffError, match="hard_start=1.0"):
        AmbientObjective(AbsorbingKernel(2, LogLinearSchedule()), 0.1, hard_start=1.0)


def test_consistency_terms_are_scaled_by_the_masked_count_of_the_anchor(monkeypatch):
    # One reveal among m masked tokens is a 1/m step of the path: the per-state terms carry a factor m.
    process = AmbientObjective(AbsorbingKernel(2, LogLinearSchedule()), 0.1)
    monkeypatch.setattr(process, "consistency_terms_given", lambda d, z, j: torch.ones(z.shape))
    g = torch.Generator().manual_seed(0)
    y = torch.full((3, 100), 2)
    y[:, :10] = 1
    t = torch.tensor([0.2, 0.5, 0.8])
    terms = process.consistency_terms(lambda a, _t: torch.zeros(*a.shape, 2), y, t, g)
    m = torch.round(100 * (1 - process.kernel.alpha(t.double()))).long()  # masks left by the descent
    assert torch.equal(terms[:, 0].long(), m)


@pytest.mark.parametrize("imputed_weight,factor", [(1.0, 1.0), (0.0, Q)])
def test_em_m_step_with_exact_posterior_imputations_is_the_clean_nelbo(imputed_weight, factor):
    # x ~ p, y observes each token w.p. q, x_hat ~ p(x | y) exactly (what the buffer's sampler aims at), z keeps
    # each token of x_hat w.p. alpha(t): x_hat has the law of x, so the M-step with imputed_weight 1 is the
    # clean NELBO integrand in expectation (Monte Carlo EM); with weight 0 only observed tokens count, and
    # each masked token of z was observed w.p. q independently of the values: q times the integrand.
    joint, other = random_joint(V, L, seed=51), random_joint(V, L, seed=52)
    model = ExactConditionals(other, V, L)  # not the truth: the identity holds for any model
    process = make(imputed_weight=imputed_weight)
    for t in (0.05, 0.4, process.t_n - 0.01):
        a = float(process.kernel.alpha(torch.tensor(t, dtype=torch.float64)))
        tt = torch.tensor([t], dtype=torch.float64)
        em = 0.0
        for x, px in joint.items():
            for fates in itertools.product(range(4), repeat=L):  # bit 0: observed in y, bit 1: visible in z
                prob = math.prod((Q if f & 1 else 1 - Q) * (a if f & 2 else 1 - a) for f in fates)
                y = [xi if f & 1 else V for xi, f in zip(x, fates)]
                for filled, pf in posterior(joint, y).items():
                    z = torch.tensor([[fi if f & 2 else V for fi, f in zip(filled, fates)]])
                    terms = process.em_terms_given(model(z), torch.tensor([filled]), torch.tensor([y]), z, tt)
                    em += px * prob * pf * float(terms.sum())
        clean = sum(px * expected_clean(process, model, x, t) for x, px in joint.items())
        assert em == pytest.approx(factor * clean, rel=1e-5)


def test_em_buffer_imputes_once_then_improves_and_is_saved_with_the_run():
    joint = random_joint(V, L, seed=61)
    process = make(refresh=0.0, gibbs_share=1.0, impute_rounds=L)
    with pytest.raises(TokenDiffError, match="bind_imputer"):
        process.completed(torch.tensor([[V, 1, V]]), torch.Generator())
    process.bind_imputer(ExactConditionals(joint, V, L))
    g = torch.Generator().manual_seed(0)
    y = torch.tensor([[V, 1, V], [0, V, V], [1, 1, 0]])
    first = process.completed(y, g)
    assert (first != V).all() and torch.equal(first[y != V], y[y != V])  # observed tokens clamped
    assert len(process.buffer) == 3
    # later uses start from the stored copy (a Gibbs sweep here: every imputed token drawn again given the rest)
    stored = {k: v.clone() for k, v in process.buffer.items()}
    second = process.completed(y, g)
    assert torch.equal(second[y != V], y[y != V]) and torch.equal(second[2], y[2])
    assert all(torch.equal(process.buffer[k], row) for k, row in zip(stored, second))
    copy = make()
    copy.load_state_tensors(process.state_tensors())
    assert copy.buffer.keys() == process.buffer.keys()
    assert all(torch.equal(copy.buffer[k], process.buffer[k]) for k in copy.buffer)


def test_hard_batch_keeps_the_easy_loss_on_every_row(monkeypatch):
    process = AmbientObjective(AbsorbingKernel(2, LogLinearSchedule()), 0.1, hard_batch=0.25)
    easy_rows, hard_rows = [], []
    monkeypatch.setattr(process, "easy_terms", lambda d, y, t, g: easy_rows.append(len(y)) or torch.ones(y.shape))
    monkeypatch.setattr(process, "_hard", lambda d, y, u, g: hard_rows.append(len(y)) or torch.ones(y.shape))
    y = torch.full((8, 16), 2)
    terms = process.loss_terms(lambda a, t: torch.zeros(*a.shape, 2), y, torch.Generator().manual_seed(0))
    assert easy_rows == [8] and hard_rows == [2]
    assert int((terms == 2).all(1).sum()) == 2 and int((terms == 1).all(1).sum()) == 6


def test_em_run_resumed_from_a_checkpoint_equals_an_uninterrupted_one(tmp_path):
    # the imputation buffer is training state: a run resumed at step 3 ends with the same weights and buffer
    import shutil

    from safetensors.torch import load_file

    from tokendiff.cli.main import main

    args = [
        "+experiment=mnist_ambient", "ambient.hard_loss=em", "ambient.hard_start=0", "ambient.hard_batch=0.5",
        "ambient.impute_rounds=2", "model.n_layer=1", "model.n_embd=16", "data.limit=16", "training.batch_size=8",
        "training.n_epochs=null", "training.max_iters=6", "training.checkpoint_interval=3", "training.eval_iters=1",
        "training.eval_interval=0", "training.sample_interval=0", "sampling.steps=2", "system.device=cpu",
    ]  # fmt: skip
    assert main(["train", *args, f"output_dir={tmp_path}/a"]) == 0
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "b" / "final")
    assert main(["train", f"resume={tmp_path}/b/checkpoints/step_000003"]) == 0
    for name in ("model.safetensors", "objective.safetensors"):
        a = load_file(str(tmp_path / "a/final/training_state" / name))
        b = load_file(str(tmp_path / "b/final/training_state" / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    buffer = load_file(str(tmp_path / "a/final/training_state/objective.safetensors"))
    n, width = buffer["em_completed"].shape  # 6 steps x 4 hard rows drawn from the 16 training images
    assert 4 < n <= 16 and width == 784 and (buffer["em_completed"] < 2).all()


def test_multi_token_consistency_is_zero_in_expectation_for_true_conditionals_only():
    # Reveal k of the m masked tokens twice, independently, with exact sequential draws (one token per round):
    # E[(f' - g) . (f'' - g)] = ||E[f] - g||^2, which is 0 for the conditionals of a joint (tower property)
    # and > 0 for a distorted model. Monte Carlo over many copies of one anchor, within 4 standard errors.
    exact = ExactConditionals(random_joint(V, L, seed=21), V, L)
    process = make(consistency_reveal=0.5, descent_steps=L)
    z = torch.tensor([[V, V, V]]).repeat(20000, 1)  # m = 3: k = round(1.5) = 2 revealed, 1 scored
    for model, positive in ((exact, False), (Perturbed(exact), True)):
        per_row = process.residual_terms(model, z, torch.Generator().manual_seed(0)).sum(1).double()
        mean, se = per_row.mean().item(), per_row.std().item() / math.sqrt(len(per_row))
        assert (mean > 5 * se) if positive else (abs(mean) < 4 * se), (mean, se)


def test_corrupted_nelbo_of_the_true_conditionals_is_the_entropy_of_the_data():
    # Model selection from corrupted data alone (tokendiff.evaluation.ambient): for the exact conditionals of
    # a joint, imputed by the exact sequential draw (one token per round), the clean NELBO is -log p(x) for
    # every x, so the estimate from corrupted draws y averages to the entropy H(p) (Gauss-Legendre is exact:
    # the integrand is a polynomial in t on each side of t_n). Monte Carlo over y: 4 standard errors. A
    # distorted model, imputing with its own draws, scores clearly worse on the same y.
    from tokendiff.evaluation.ambient import corrupted_nelbo

    joint = random_joint(V, L, seed=51)
    exact = ExactConditionals(joint, V, L)
    g = torch.Generator().manual_seed(0)
    seqs, probs = list(joint), torch.tensor(list(joint.values()))
    x = torch.tensor([seqs[i] for i in torch.multinomial(probs, 1500, replacement=True, generator=g)])
    y = torch.where(torch.rand(x.shape, generator=g) < Q, x, torch.full_like(x, V))
    kernel = AbsorbingKernel(V, LogLinearSchedule(eps=0.0))
    r = corrupted_nelbo(exact, kernel, y, Q, impute_rounds=L, seed=1, batch_size=2000)
    entropy = -sum(p * math.log(p) for p in joint.values())
    assert abs(r["total"] - entropy) < 4 * r["total_stderr"]
    assert r["total"] == pytest.approx(r["below_t_n"] + r["above_t_n"])
    assert r["total_stderr"] < 0.05 * entropy  # the check has power
    worse = corrupted_nelbo(Perturbed(exact), kernel, y, Q, impute_rounds=L, seed=1, batch_size=2000)
    assert worse["total"] > r["total"] + 4 * (r["total_stderr"] ** 2 + worse["total_stderr"] ** 2) ** 0.5


def test_consistency_max_masked_keeps_the_anchors_at_or_below_that_share_of_masks(monkeypatch):
    schedule = LogLinearSchedule()
    levels = []
    for share in (1.0, 0.5):
        process = AmbientObjective(AbsorbingKernel(2, schedule), 0.1, consistency_max_masked=share, hard_batch=1.0)
        seen = []
        record = lambda d, y, t, g, seen=seen: seen.append(t) or torch.zeros(y.shape)  # noqa: E731
        monkeypatch.setattr(process, "consistency_terms", record)
        y = torch.full((256, 16), 2)
        process.loss_terms(lambda a, t: torch.zeros(*a.shape, 2), y, torch.Generator().manual_seed(0))
        masked = 1.0 - schedule.alpha(torch.cat(seen).double())
        levels.append(masked)
    assert levels[0].max() > 0.85 and levels[0].max() <= 0.9 + 1e-9  # every level below t_n
    assert levels[1].max() <= 0.5 + 1e-9 and levels[1].max() > 0.45  # capped at half masked, spread up to it
    assert levels[1].min() < 0.05
    with pytest.raises(TokenDiffError, match="consistency_max_masked=0"):
        AmbientObjective(AbsorbingKernel(2, schedule), 0.1, consistency_max_masked=0.0)
    with pytest.raises(TokenDiffError, match="hard_loss=consistency"):
        AmbientObjective(AbsorbingKernel(2, schedule), 0.1, hard_loss="em", consistency_max_masked=0.5)


@pytest.mark.parametrize(
    "overrides,needle",
    [
        (["diffusion.objective=ambient"], "diffusion.objective=ambient learns from partly observed data, but text"),
        (["diffusion.objective=ambient", "ambient.hard_loss=em"], "diffusion.objective=ambient (ambient.hard_loss=em)"),
        (["diffusion.objective=naive", "data.dataset=hf", "data.hf_path=wikitext"], "(here data.dataset=hf;"),
        (["+experiment=mnist_ambient", "data.observed_fraction=1.0"], "data.observed_fraction=1.0 observes every"),
        (["+experiment=mnist_baseline", "data.observed_fraction=1.0"], "diffusion.objective=naive learns"),
        (
            ["+experiment=mnist_ambient", "model.arch=transformer", "model.time_conditioning=true"],
            "diffusion.objective=ambient needs a time-agnostic model",
        ),
    ],
)
def test_the_corrupted_data_objectives_are_refused_where_the_data_is_observed_whole(overrides, needle):
    # tokendiff corrupts images only (data.observed_fraction): on text, or on images observed whole, the
    # naive and ambient losses would assume a corruption level that is not in the data
    from tokendiff.configs import compose_config

    with pytest.raises(TokenDiffError) as info:
        compose_config(overrides)
    assert needle in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("preset", ["mnist_ambient", "mnist_baseline"])
def test_the_corrupted_image_presets_compose_with_a_time_agnostic_model(preset):
    from tokendiff.configs import compose_config

    cfg = compose_config([f"+experiment={preset}", "ambient.hard_loss=em"])
    assert cfg.model.time_conditioning is False and cfg.data.observed_fraction == 0.1
