"""Binary images: the patch transformer, MNIST data sets, image metrics, and the CLI on MNIST."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from tokendiff.cli.main import main
from tokendiff.data.images import MnistData
from tokendiff.data.tokenizers import BinaryImageTokenizer
from tokendiff.errors import TokenDiffError
from tokendiff.evaluation.classifier import frechet_distance, kernel_distance
from tokendiff.evaluation.images import inpaint, nearest_hamming
from tokendiff.models.image import ImagePatchTransformer
from tokendiff.processes import AbsorbingKernel
from tokendiff.schedules import LogLinearSchedule
from tokendiff.viz.images import save_grid, save_trajectory


def test_patch_transformer_maps_each_pixel_to_its_own_output():
    # patchify / unpatchify are inverse permutations: a one-hot of the input passed through them
    # comes back in place, so pixel (r, c) of the input is pixel (r, c) of the output.
    m = ImagePatchTransformer(n_layer=1, n_head=2, n_embd=32, patch=4)
    x = torch.randint(0, 3, (2, 784))
    back = m._unpatchify(torch.nn.functional.one_hot(m._patchify(x), 3))
    assert torch.equal(back.argmax(-1), x)
    assert m(x).shape == (2, 784, 2)
    with pytest.raises(TokenDiffError, match="model.patch=5"):
        ImagePatchTransformer(patch=5)


def test_conv_net_maps_images_to_per_pixel_logits_and_sees_its_neighbourhood():
    from tokendiff.models.image import ImageConvNet

    m = ImageConvNet(n_layer=4, n_embd=16).eval()
    x = torch.full((1, 784), 2)
    y = x.clone()
    y[0, 14 * 28 + 14] = 1  # reveal the centre pixel
    delta = (m(x) - m(y)).abs().sum(-1).view(28, 28)
    # the revealed pixel moves its neighbours' predictions most (convolutions are local; GroupNorm's
    # per-image statistics pass a little of it everywhere)
    assert delta[14, 15] > 0 and delta[13:16, 13:16].mean() > delta[:5, :5].mean()
    assert m(x).shape == (1, 784, 2)


def test_image_tokenizer_draws_ascii_and_refuses_text():
    tok = BinaryImageTokenizer(2, 3)
    assert tok.decode([0, 1, 2, 1, 1, 0]) == ".#?\n##."
    with pytest.raises(TokenDiffError, match="inpaint"):
        tok.encode("ROMEO:")


def test_mnist_data_corrupts_only_the_training_split():
    clean = MnistData("static", 1.0)
    corrupted = MnistData("static", 0.1, corruption_seed=0)
    train = corrupted.split("train").tokens
    assert train.shape == (50_000, 784)
    observed = train != 2
    # each pixel observed with probability 0.1: within 5 standard errors over 39.2M pixels
    assert abs(observed.mean() - 0.1) < 5 * np.sqrt(0.09 / observed.size)
    assert np.array_equal(train[observed], clean.split("train").tokens[observed])
    assert np.array_equal(corrupted.split("test").tokens, clean.split("test").tokens)
    assert (corrupted.split("test").tokens < 2).all()


def test_clean_fraction_keeps_a_fixed_share_of_the_training_images_clean():
    # the control of issue 11: 5% of 400 corrupted images stay clean (the same ones every time), the
    # others keep their 10%-observed masks unchanged
    clean = MnistData("static", 1.0, limit=400).split("train").tokens
    plain = MnistData("static", 0.1, limit=400).split("train").tokens
    mixed = MnistData("static", 0.1, limit=400, clean_fraction=0.05).split("train").tokens
    again = MnistData("static", 0.1, limit=400, clean_fraction=0.05).split("train").tokens
    whole = (mixed != 2).all(1)
    assert whole.sum() == 20 and np.array_equal(mixed[whole], clean[whole]) and np.array_equal(mixed, again)
    assert np.array_equal(mixed[~whole], plain[~whole]) and not (plain != 2).all(1).any()


def test_frechet_distance_closed_forms():
    # Same covariance, means shifted by c: FD = |c|^2. Centered x against 2x: C_b = 4 C_a, so
    # FD = tr(C_a) + tr(4 C_a) - 2 tr((4 C_a^2)^1/2) = tr(C_a).
    g = torch.Generator().manual_seed(0)
    a = torch.randn(500, 6, generator=g, dtype=torch.float64) @ torch.randn(6, 6, generator=g, dtype=torch.float64)
    c = torch.arange(6, dtype=torch.float64)
    assert frechet_distance(a, a + c) == pytest.approx(float(c.square().sum()), rel=1e-6)
    centered = a - a.mean(0)
    assert frechet_distance(centered, 2 * centered) == pytest.approx(float(torch.cov(centered.T).trace()), rel=1e-6)
    assert abs(frechet_distance(a, a)) < 1e-6


def test_kernel_distance_is_the_unbiased_mmd_of_a_cubic_kernel():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(7, 3, generator=g, dtype=torch.float64)
    b = torch.randn(6, 3, generator=g, dtype=torch.float64) + 0.5
    # brute force with one subset of all rows (a permutation changes nothing)
    k = lambda u, v: (float(u @ v) / 3 + 1) ** 3  # noqa: E731
    m = 6  # min(7, 6): the subset of a has 6 of its 7 rows, so compare on equal sizes
    a6 = a[:m]
    xx = sum(k(a6[i], a6[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(b[i], b[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(a6[i], b[j]) for i in range(m) for j in range(m)) / m**2
    mean, std = kernel_distance(a6, b, subsets=1)
    assert mean == pytest.approx(xx + yy - 2 * xy, rel=1e-9) and std == 0.0
    # unbiased: two draws of one law average to ~0; a shifted law is clearly positive
    same = [
        kernel_distance(torch.randn(200, 4, generator=g), torch.randn(200, 4, generator=g), subsets=1)[0]
        for _ in range(40)
    ]
    shifted = kernel_distance(torch.randn(200, 4, generator=g), torch.randn(200, 4, generator=g) + 0.5, subsets=5)[0]
    s = torch.tensor(same)
    assert abs(float(s.mean())) < 4 * float(s.std()) / len(same) ** 0.5
    assert shifted > 10 * float(s.std())


def test_nearest_hamming_matches_brute_force():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 2, (7, 50)), rng.integers(0, 2, (30, 50))
    brute = np.array([min(int((x != y).sum()) for y in b) for x in a])
    assert np.array_equal(nearest_hamming(a, b, chunk=3), brute)


def test_inpainting_keeps_observed_pixels():
    torch.manual_seed(0)
    model = ImagePatchTransformer(n_layer=1, n_head=2, n_embd=32).eval()
    process = AbsorbingKernel(2, LogLinearSchedule())
    clean = np.random.default_rng(0).integers(0, 2, (5, 784)).astype(np.uint8)
    accuracy, corrupted, completed = inpaint(model, process, clean, 0.3, steps=8)
    observed = corrupted != 2
    assert np.array_equal(completed[observed], clean[observed])  # SUBS carries observed pixels over
    assert (completed < 2).all() and 0.0 <= accuracy <= 1.0


def test_grids_have_the_expected_size(tmp_path):
    x = np.random.default_rng(0).integers(0, 3, (6, 784))
    path = save_grid(x, tmp_path / "g.png", nrow=3, scale=1, pad=2)
    assert Image.open(path).size == (3 * 30 + 2, 2 * 30 + 2)
    save_trajectory([x, np.full_like(x, 2)], tmp_path / "t.gif")  # identical frames would be merged
    assert Image.open(tmp_path / "t.gif").n_frames >= 2


TINY_MNIST = [
    "+experiment=mnist_ambient",
    "model.n_layer=1",
    "model.n_embd=32",
    "model.n_head=2",
    "data.limit=200",
    "training.batch_size=20",
    "training.n_epochs=2",
    "training.epochs_per_checkpoint=1",
    "training.eval_interval=0",
    "training.eval_iters=1",
    "sampling.steps=4",
    "system.device=cpu",
]


def test_mnist_ambient_end_to_end_with_epochs(tmp_path, capsys):
    # The seed's options: epochs, a checkpoint every k epochs, then sample a PNG grid and evaluate.
    assert main(["train", *TINY_MNIST, f"output_dir={tmp_path}/run"]) == 0
    assert (tmp_path / "run/checkpoints/step_000010/model.safetensors").exists()  # 200 / 20 = 10 steps
    assert json.loads((tmp_path / "run/final/config.json").read_text())["step"] == 20
    capsys.readouterr()
    assert (
        main(
            [
                "sample",
                f"checkpoint={tmp_path}/run",
                "num_samples=6",
                "sampling.steps=5",
                f"sampling.output={tmp_path}/s.png",
                f"sampling.trajectory={tmp_path}/t.png",
            ]
        )
        == 0
    )
    assert Image.open(tmp_path / "s.png").size[0] > 28 and (tmp_path / "t.png").exists()
    assert (
        main(
            [
                "eval",
                f"checkpoint={tmp_path}/run",
                "eval.max_windows=200",
                "eval.num_draws=2",
                "eval.sample_metrics=false",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result["split"] == "test" and result["images"] == 200
    # per image = per pixel * 784; an untrained-ish model is near 784 ln 2 = 543 nats, far from 0
    assert result["nelbo_nats_per_image"] == pytest.approx(784 * result["nelbo_nats_per_token"])
    assert 50 < result["nelbo_nats_per_image"] < 2000 and result["nelbo_nats_per_image_stderr"] > 0


def test_image_model_rejects_a_prompt(tmp_path, capsys):
    assert main(["train", *TINY_MNIST, "training.n_epochs=1", f"output_dir={tmp_path}/run"]) == 0
    capsys.readouterr()
    assert main(["sample", f"checkpoint={tmp_path}/run", "prompt=ROMEO:"]) == 2
    assert "no prompt" in capsys.readouterr().err
