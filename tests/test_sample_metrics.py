"""Sample-quality metrics (``tokendiff score``): exact values on sequences and models whose answer is known."""

import json
import math

import pytest
import torch

from tokendiff.cli.main import main
from tokendiff.errors import TokenDiffError
from tokendiff.evaluation.samples import generative_perplexity, text_statistics
from tokendiff.models.base import Backbone


def test_text_statistics_of_an_alternating_sequence():
    stats = text_statistics([[0, 1, 0, 1, 0, 1]])
    assert stats["unigram_entropy_bits"] == pytest.approx(1.0) and stats["tokens"] == 6
    assert stats["distinct_2"] == pytest.approx(2 / 5)  # (0,1) (1,0) (0,1) (1,0) (0,1)
    assert stats["distinct_3"] == pytest.approx(2 / 4)
    assert stats["repetition_4"] == pytest.approx(1 / 3)  # the third 4-gram repeats the first
    fresh = text_statistics([[0, 1, 2, 3, 4, 5, 6]])
    assert fresh["distinct_2"] == 1.0 and fresh["repetition_4"] == 0.0
    assert fresh["unigram_entropy_bits"] == pytest.approx(math.log2(7))


class Bigram(Backbone):
    """A causal "model" whose next-token distribution is ``table[previous token]``."""

    causal = True
    block_size = 4

    def __init__(self, table):
        super().__init__()
        self.table = table  # (V, V) probabilities

    def forward(self, x, t=None):
        assert x.shape[1] <= self.block_size
        return torch.log(self.table[x])  # (B, L, V)


def test_generative_perplexity_is_exact_and_scores_long_samples_in_windows():
    table = torch.tensor([[0.5, 0.5, 0.0], [0.25, 0.25, 0.5], [1.0 / 3, 1.0 / 3, 1.0 / 3]]).clamp_min(1e-30)
    sample = [0, 1, 2, 0, 0, 1, 1, 2, 2, 0]  # 10 tokens: 9 scored, in windows of 4 predictions
    expected = -sum(math.log(table[a, b].item()) for a, b in zip(sample, sample[1:])) / 9
    out = generative_perplexity(Bigram(table), [sample, [2]], batch_size=2)
    assert out["scored_tokens"] == 9 and out["generative_perplexity"] == pytest.approx(math.exp(expected))
    with pytest.raises(TokenDiffError, match="autoregressive"):
        generative_perplexity(torch.nn.Identity(), [sample])


def test_score_command_prints_sample_and_real_text_metrics(tmp_path, capsys):
    from test_training import TINY

    ar, mdlm = tmp_path / "ar", tmp_path / "mdlm"
    assert main(["train", *TINY, "model.causal=true", "training.max_iters=2", f"output_dir={ar}"]) == 0
    assert main(["train", *TINY, "training.max_iters=2", f"output_dir={mdlm}"]) == 0
    samples = tmp_path / "s.jsonl"
    sample = ["sample", f"checkpoint={mdlm}", "num_samples=3", "sampling.steps=4", f"sampling.output={samples}"]
    assert main(sample) == 0
    capsys.readouterr()
    assert main(["score", f"samples={samples}", f"reference={ar}"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["num_samples"] == 3 and result["generative_perplexity"] > 1
    real = result["real_text"]
    assert real["generative_perplexity"] > 1 and 0 < real["unigram_entropy_bits"] < math.log2(70)
    assert main(["score", f"samples={samples}", f"reference={mdlm}"]) == 2  # a diffusion model is no reference
    (tmp_path / "bad.jsonl").write_text('{"txt": 1}\n')
    assert main(["score", f"samples={tmp_path / 'bad.jsonl'}", f"reference={ar}"]) == 2
    assert "line 1" in capsys.readouterr().err
