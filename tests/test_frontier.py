"""bench/frontier.py: the gen-PPL-against-entropy frontier of a checkpoint's sampler settings, with MAUVE."""

import json
import sys
from pathlib import Path

from test_training import TINY

from tokendiff.cli.main import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import frontier  # noqa: E402


def test_the_frontier_keeps_the_points_no_other_beats_on_both_axes():
    points = {"a": (10.0, 4.0), "b": (20.0, 4.5), "c": (25.0, 4.2), "d": (10.0, 3.0), "e": (30.0, 4.5)}
    # c is beaten by b (lower gen-PPL, higher entropy); d by a; e by b (same entropy, higher gen-PPL)
    assert sorted(frontier.pareto(points)) == ["a", "b"]


def test_the_frontier_command_writes_its_json_and_png(tmp_path):
    steps = ["training.max_iters=3", "training.checkpoint_interval=3"]
    assert main(["train", *TINY, *steps, f"output_dir={tmp_path / 'masked'}"]) == 0
    assert main(["train", *TINY, *steps, "model.causal=true", f"output_dir={tmp_path / 'ar'}"]) == 0
    out = tmp_path / "frontier.json"
    args = ["--checkpoint", str(tmp_path / "masked"), "--reference", str(tmp_path / "ar"), "--length", "16"]
    args += ["--steps", "2", "4", "--temperatures", "1.0", "--strategies", "ancestral", "confidence"]
    args += ["--num-samples", "20", "--mauve", "--out", str(out)]
    assert frontier.main(args) == 0
    result = json.loads(out.read_text())
    assert len(result["rows"]) == 4 and not result["skipped"]
    assert set(result["frontier"]) <= set(result["rows"]) and result["frontier"]
    assert all(0.0 <= r["mauve"] <= 1.0 and r["generative_perplexity"] > 1 for r in result["rows"].values())
    assert result["real_text"]["generative_perplexity"] > 1
    assert out.with_suffix(".png").stat().st_size > 10_000
