"""Self-conditioning (``model.self_conditioning=true``, CDCD and DiffusionGemma): the transformer also reads its
previous estimate of the clean tokens. What it computes in training, in evaluation and in the sampler."""

import pytest
import torch

from tokendiff.cli.main import main
from tokendiff.errors import TokenDiffError
from tokendiff.models import Backbone, Transformer
from tokendiff.processes import AbsorbingKernel
from tokendiff.samplers import DiffusionSampler, row_generators
from tokendiff.schedules import LogLinearSchedule

V, L = 11, 16


def model(self_conditioning=True, seed=0):
    torch.manual_seed(seed)
    return Transformer(V, n_layer=2, n_head=2, n_embd=32, block_size=L, self_conditioning=self_conditioning)


def test_an_untrained_estimate_embedding_is_the_plain_model():
    # the estimate's embedding starts at zero: the same weights otherwise give the same logits
    plain, sc = model(False).eval(), model(True).eval()
    missing = sc.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing == ["previous_embed.weight"]
    x = torch.randint(0, V + 1, (3, L))
    assert torch.allclose(plain(x), sc(x), atol=1e-6)


def test_evaluation_conditions_on_the_models_own_first_pass():
    m = model().eval()
    torch.nn.init.normal_(m.previous_embed.weight, std=0.5)  # a trained-looking estimate embedding
    x = torch.randint(0, V + 1, (3, L))
    zeros = torch.zeros(3, L, V)
    first = torch.softmax(m(x, previous=zeros), -1)
    assert torch.allclose(m(x), m(x, previous=first), atol=1e-6)  # forward(x) = two passes
    assert not torch.allclose(m(x, previous=zeros), m(x, previous=first), atol=1e-3)  # the estimate matters


def test_training_conditions_half_the_calls_on_a_first_pass_without_gradient():
    m = model().train()
    torch.nn.init.normal_(m.previous_embed.weight, std=0.5)
    x = torch.randint(0, V + 1, (2, L))
    with torch.no_grad():
        on_zeros = m(x, previous=torch.zeros(2, L, V))
        on_first = m(x, previous=torch.softmax(on_zeros, -1))
    torch.manual_seed(1)
    kinds = []
    for _ in range(40):
        out = m(x)
        kinds.append("zeros" if torch.allclose(out, on_zeros, atol=1e-6) else "first")
        assert kinds[-1] == "zeros" or torch.allclose(out, on_first, atol=1e-6)
    assert 8 <= kinds.count("zeros") <= 32  # a fair coin: P(outside) < 1e-4
    m.zero_grad()
    torch.manual_seed(1)
    m(x).sum().backward()  # one call: the gradient reaches the estimate's embedding, never through a first pass
    assert m.previous_embed.weight.grad is not None


def test_a_model_without_it_refuses_an_estimate_and_the_config_names_where_it_applies():
    with pytest.raises(TokenDiffError, match="no previous estimate"):
        model(False)(torch.zeros(1, L, dtype=torch.long), previous=torch.zeros(1, L, V))
    with pytest.raises(TokenDiffError, match="bidirectional denoiser"):
        Transformer(V, n_layer=1, n_head=2, n_embd=16, block_size=L, causal=True, self_conditioning=True)
    assert main(["train", "model.self_conditioning=true", "model.block_diffusion=true", "diffusion.block_size=4"]) == 2


class Recording(Backbone):
    """A self-conditioned "model" that records the estimate each call gets."""

    self_conditioning = True

    def __init__(self):
        super().__init__()
        self.vocab_size, self.block_size = V, L
        self.table = torch.randn(V + 1, V, generator=torch.Generator().manual_seed(0))
        self.seen, self.returned = [], []

    def forward(self, x, t=None, previous=None):
        self.seen.append(previous)
        out = 3 * self.table[x] + (0 if previous is None else previous)
        self.returned.append(out)
        return out


def test_the_sampler_feeds_each_step_the_previous_steps_estimate():
    m = Recording()
    sampler = DiffusionSampler(m, AbsorbingKernel(V, LogLinearSchedule()), steps=6, strategy="confidence")
    sampler.sample(torch.full((2, L), V), row_generators(0, 2))
    assert m.seen[0] is None and len(m.seen) == 6  # no logits cache: every step calls the model
    for i in range(1, 6):
        assert torch.allclose(m.seen[i], torch.softmax(m.returned[i - 1].float(), -1))


def test_a_self_conditioned_run_trains_samples_and_evaluates(tmp_path, capsys):
    tiny = [
        "model.n_layer=1", "model.n_head=2", "model.n_embd=16", "model.block_size=16", "training.batch_size=4",
        "training.eval_iters=1", "training.eval_interval=0", "training.sample_interval=0", "system.device=cpu",
    ]  # fmt: skip
    run = tmp_path / "sc"
    assert main(["train", *tiny, "model.self_conditioning=true", "training.max_iters=3", f"output_dir={run}"]) == 0
    assert main(["sample", f"checkpoint={run}", "num_samples=2", "sampling.steps=4"]) == 0
    assert main(["eval", f"checkpoint={run}", "eval.max_windows=2", "eval.num_draws=1"]) == 0
    assert "nelbo" in capsys.readouterr().out.lower()
