"""The MNIST data layer: IDX files, static binarized MNIST, binarization, fixed observation masks, batches.

Reference numbers come from /work/shared/data/SOURCES.md (sizes, sha256/md5 values, counts of ones);
statistical bounds are 5 standard errors of the quantity they bound, computed in the test.
"""

import gzip
import hashlib
import io
import math
import os

import numpy as np
import pytest
import torch

from tokendiff.data import corruption, mnist, paths
from tokendiff.data.images import ImageTokens
from tokendiff.errors import TokenDiffError

D = 784


def write_idx(path, array, gz):
    """An IDX file of uint8 ``array``: 0x00 0x00 0x08 ndim, big-endian uint32 dims, the bytes."""
    header = bytes([0, 0, 8, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)
    return data


@pytest.fixture(scope="module")
def mnist_test():
    return mnist.load_mnist("test")


@pytest.fixture(scope="module")
def mnist_train():
    return mnist.load_mnist("train")


@pytest.fixture(scope="module")
def binarized():
    return {split: mnist.load_binarized_mnist(split) for split in ("train", "valid", "test")}


def bernoulli_count_moments(images):
    """Mean sum(p) and standard deviation sqrt(sum p(1-p)) of the number of ones when each pixel is
    Bernoulli(p = intensity/255) independently; from the histogram of intensities, in exact integers."""
    counts = np.bincount(images.reshape(-1), minlength=256).astype(np.int64)
    v = np.arange(256, dtype=np.int64)
    return int(counts @ v) / 255, math.sqrt(int(counts @ (v * (255 - v)))) / 255


def no_network(*args, **kwargs):
    raise AssertionError("must not download a file that is present")


# ----------------------------------------------------------------------------------------- IDX files


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip_for_images_and_labels(tmp_path, gz):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=(5,), dtype=np.uint8)
    write_idx(tmp_path / "img", images, gz)
    write_idx(tmp_path / "lab", labels, gz)
    got_images, got_labels = mnist.read_idx(tmp_path / "img"), mnist.read_idx(tmp_path / "lab")
    assert got_images.dtype == np.uint8 and got_images.shape == (5, 28, 28)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


def test_bad_or_truncated_idx_files_are_errors_that_name_the_file(tmp_path):
    data = write_idx(tmp_path / "good", np.zeros((3, 28, 28), np.uint8), gz=False)
    cases = {
        "magic": b"\x00\x00\x0d\x03" + data[4:],  # type code 0x0D (float32) is not MNIST's unsigned bytes
        "text": b"<html>not found</html>",  # what a broken mirror may serve
        "body": data[:-1],  # one pixel short
        "header": data[:9],  # ends inside the dims
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(TokenDiffError, match=str(tmp_path / name)):
            mnist.read_idx(tmp_path / name)
    # a gzip stream cut in half
    (tmp_path / "cut.gz").write_bytes(gzip.compress(data)[:40])
    with pytest.raises(TokenDiffError, match="cut.gz"):
        mnist.read_idx(tmp_path / "cut.gz")
    with pytest.raises(TokenDiffError, match="does not exist"):
        mnist.read_idx(tmp_path / "missing")


# ------------------------------------------------------------------------------------ real MNIST files


def test_real_mnist_files_are_the_originals(mnist_train, mnist_test):
    for key in ("mnist_train_images", "mnist_train_labels", "mnist_t10k_images", "mnist_t10k_labels"):
        remote = paths.KNOWN_FILES[key]
        assert paths.sha256_of(paths.data_dir() / remote.relpath) == remote.sha256, key
    # SOURCES.md: the uncompressed image files have the known md5s of the originals; rebuilding the
    # IDX bytes from what load_mnist returned must give them back (order, shape and values exact).
    known_md5 = ((mnist_train, "6bbc9ace898e44ae57da46a324031adb"), (mnist_test, "2646ac647ad5339dbf082846283269ea"))
    for (images, _), md5 in known_md5:
        header = bytes([0, 0, 8, 3]) + np.asarray(images.shape, dtype=">u4").tobytes()
        assert hashlib.md5(header + images.tobytes()).hexdigest() == md5


def test_real_mnist_shapes_and_label_histograms(mnist_train, mnist_test):
    for (images, labels), n in ((mnist_train, 60_000), (mnist_test, 10_000)):
        assert images.shape == (n, 28, 28) and images.dtype == np.uint8
        assert labels.shape == (n,) and labels.dtype == np.uint8
        counts = np.bincount(labels, minlength=10)
        assert len(counts) == 10 and counts.sum() == n  # every label is a digit 0..9
        assert counts.min() > 0  # every class is present
        assert images.max() == 255 and images.min() == 0  # full 8-bit range, not rescaled


def test_unknown_split_names_the_value_and_the_choices():
    with pytest.raises(TokenDiffError, match="'validation'.*'train', 'test'"):
        mnist.load_mnist("validation")
    with pytest.raises(TokenDiffError, match="'val'.*'valid'"):
        mnist.load_binarized_mnist("val")


# -------------------------------------------------------------------------------- static binarized MNIST


def test_binarized_splits_match_sources_md(binarized):
    # SOURCES.md table: sizes and the number of ones of each split.
    ones = {"train": 5_118_041, "valid": 1_028_036, "test": 1_038_896}
    for split, n in (("train", 50_000), ("valid", 10_000), ("test", 10_000)):
        x = binarized[split]
        assert x.shape == (n, D) and x.dtype == np.uint8
        assert x.max() == 1  # uint8, so the values are exactly {0, 1}
        assert int(x.sum()) == ones[split]
    # "The mean pixel is 0.1306": stated to 4 decimals, so it is within half a unit of the 4th decimal.
    assert abs(binarized["train"].mean() - 0.1306) <= 0.00005


def test_binarized_mnist_is_bernoulli_sampled_mnist(binarized, mnist_train, mnist_test):
    # SOURCES.md: the static set fits Bernoulli(intensity/255) sampling of MNIST; train+valid come
    # from MNIST train (in another order), test from MNIST test. Order does not change a split's
    # count of ones, whose mean is sum(p) and standard deviation sqrt(sum p(1-p)) under that model.
    for ones, images in (
        (binarized["train"].sum() + binarized["valid"].sum(), mnist_train[0]),
        (binarized["test"].sum(), mnist_test[0]),
    ):
        mean, sd = bernoulli_count_moments(images)
        assert abs(int(ones) - mean) < 5 * sd


def test_a_tampered_binarized_file_is_rejected(tmp_path):
    (tmp_path / "binarized_mnist").mkdir()
    np.savez_compressed(tmp_path / "binarized_mnist" / "binarized_mnist.npz", test=np.zeros((10_000, 98), np.uint8))
    with pytest.raises(TokenDiffError, match="sha256"):
        mnist.load_binarized_mnist("test", root=tmp_path)
    with pytest.raises(TokenDiffError, match="no array 'valid'"):
        mnist.load_binarized_mnist("valid", root=tmp_path)


# ---------------------------------------------------------------------------------------- downloads


def test_present_files_are_never_downloaded(monkeypatch, binarized):
    monkeypatch.setattr(paths.urllib.request, "urlopen", no_network)
    assert mnist.load_mnist("test")[0].shape == (10_000, 28, 28)
    assert mnist.load_binarized_mnist("valid").shape == (10_000, D)


def test_missing_mnist_files_are_downloaded_from_the_known_urls(tmp_path, monkeypatch):
    # Serve the real t10k files as "the network"; the downloaded copies must pass fetch's sha256 check.
    t10k = [r for r in paths.KNOWN_FILES.values() if r.relpath.startswith("mnist/t10k")]
    served = {r.url: (paths.data_dir() / r.relpath).read_bytes() for r in t10k}
    asked = []

    def fake_urlopen(url, timeout):
        asked.append(url)
        return io.BytesIO(served[url])

    monkeypatch.setattr(paths.urllib.request, "urlopen", fake_urlopen)
    images, labels = mnist.load_mnist("test", root=tmp_path)
    assert sorted(asked) == sorted(served) and images.shape == (10_000, 28, 28) and labels.shape == (10_000,)
    assert sorted(os.listdir(tmp_path / "mnist")) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


def toy_amat(x):
    """The .amat text format: one image per line, values separated by spaces."""
    return "".join(" ".join(map(str, row)) + "\n" for row in x).encode()


def test_binarized_mnist_is_built_from_the_amat_files(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    splits = {s: rng.integers(0, 2, size=(n, D), dtype=np.uint8) for s, n in (("train", 5), ("valid", 3), ("test", 2))}
    served = {mnist.BINARIZED_URL.format(split=s): toy_amat(x) for s, x in splits.items()}
    monkeypatch.setattr(paths.urllib.request, "urlopen", lambda url, timeout: io.BytesIO(served[url]))
    expected = {s: (len(x), hashlib.sha256(x.tobytes()).hexdigest()) for s, x in splits.items()}
    target = mnist.download_binarized_mnist(tmp_path, expected)
    assert target == tmp_path / "binarized_mnist" / "binarized_mnist.npz"
    assert os.listdir(target.parent) == [target.name]  # the temporary file was renamed, not left behind
    for s, x in splits.items():
        np.testing.assert_array_equal(mnist.load_binarized_mnist(s, root=tmp_path, verify=False), x)
    # A split whose content differs from the expected sha256 is refused and nothing is written.
    target.unlink()
    bad = dict(expected, valid=(3, "0" * 64))
    with pytest.raises(TokenDiffError, match="'valid'.*sha256"):
        mnist.download_binarized_mnist(tmp_path, bad)
    assert os.listdir(target.parent) == []


def test_a_failed_binarized_download_names_the_url_and_the_fix(tmp_path, monkeypatch):
    def offline(url, timeout):
        raise OSError("network unreachable")

    monkeypatch.setattr(paths.urllib.request, "urlopen", offline)
    with pytest.raises(TokenDiffError, match="binarized_mnist_train.amat.*TOKENDIFF_DATA"):
        mnist.load_binarized_mnist("train", root=tmp_path)


def test_amat_parser_accepts_float_text_and_rejects_short_lines():
    x = np.array([[0, 1] * (D // 2), [1, 0] * (D // 2)], dtype=np.uint8)
    np.testing.assert_array_equal(mnist.parse_amat(toy_amat(x)), x)
    as_floats = "".join(" ".join(f"{v:.1f}" for v in row) + "\n" for row in x).encode()  # "0.0 1.0 ..."
    np.testing.assert_array_equal(mnist.parse_amat(as_floats), x)
    with pytest.raises(TokenDiffError, match="783 values"):
        mnist.parse_amat(toy_amat(x[:, :-1]))


# ------------------------------------------------------------------------------------- binarization


def test_dynamic_binarization_is_bernoulli_of_the_intensity_and_seeded(mnist_test):
    images = mnist_test[0]
    x = mnist.binarize_dynamic(images, 0)
    assert x.shape == images.shape and x.dtype == np.uint8 and np.isin(x, (0, 1)).all()
    # The count of ones has mean sum(p) and standard deviation sqrt(sum p(1-p)), p = intensity/255.
    mean, sd = bernoulli_count_moments(images)
    assert abs(int(x.sum()) - mean) < 5 * sd
    assert (x[images == 0] == 0).all() and (x[images == 255] == 1).all()  # p = 0 and p = 1 are certain
    np.testing.assert_array_equal(mnist.binarize_dynamic(images, 0), x)  # same seed, same draw
    np.testing.assert_array_equal(mnist.binarize_dynamic(images, np.random.default_rng(0)), x)
    assert (mnist.binarize_dynamic(images, 1) != x).any()  # another seed, another draw


def test_threshold_binarization_on_a_toy_array():
    images = np.array([[0, 1, 127, 128, 254, 255]], dtype=np.uint8)
    np.testing.assert_array_equal(mnist.binarize_threshold(images), [[0, 0, 0, 1, 1, 1]])  # >= 128
    np.testing.assert_array_equal(mnist.binarize_threshold(images, threshold=1), [[0, 1, 1, 1, 1, 1]])
    with pytest.raises(TokenDiffError, match="threshold=0"):
        mnist.binarize_threshold(images, threshold=0)
    with pytest.raises(TokenDiffError, match="float64"):
        mnist.binarize_threshold(images / 255.0)


# --------------------------------------------------------------------------------- observation masks


@pytest.fixture(scope="module")
def masks_50k():
    return corruption.observation_masks(50_000, observed_fraction=0.1, seed=0)


def test_masks_observe_each_pixel_with_probability_q(masks_50k):
    q, m = 0.1, masks_50k
    assert m.shape == (50_000, D) and m.dtype == bool
    se = math.sqrt(q * (1 - q) / m.size)  # standard error of the overall observed fraction
    assert abs(m.mean() - q) < 5 * se
    # Every pixel position separately (50,000 images each); all 784 within 5 SE has probability ~0.9996.
    se_col = math.sqrt(q * (1 - q) / m.shape[0])
    assert np.abs(m.mean(axis=0) - q).max() < 5 * se_col
    # Independence across pixels: neighbours are both observed with probability q**2. Overlapping pairs
    # (j, j+1) and (j+1, j+2) covary by q**3 - q**4, so the variance per pair is q²(1-q²) + 2(q³-q⁴).
    both = m[:, 1:] & m[:, :-1]
    var_pair = q * q * (1 - q * q) + 2 * (q**3 - q**4)
    assert abs(both.mean() - q * q) < 5 * math.sqrt(var_pair / both.size)


def test_mask_of_an_image_does_not_depend_on_the_batch(masks_50k):
    for i in (0, 1, 4095, 4096, 49_999):  # 4096: a chunk boundary of the implementation
        np.testing.assert_array_equal(corruption.observation_mask(i, 0.1, seed=0), masks_50k[i])
    order = np.array([49_999, 7, 7, 30_000])  # any order, repeats allowed
    np.testing.assert_array_equal(corruption.observation_masks(order, 0.1, seed=0), masks_50k[order])
    np.testing.assert_array_equal(corruption.observation_masks(10, 0.1, seed=0), masks_50k[:10])


def test_mask_construction_is_the_documented_philox_stream():
    # pixel j of image n is observed iff the j-th float64 uniform of Philox(key(seed), counter (0, n, 0, 0)) < q
    seed, n, q = 3, 123_456_789_012, 0.25
    key = np.random.SeedSequence(seed).generate_state(2, dtype=np.uint64)
    bitgen = np.random.Philox(key=key, counter=np.array([0, n, 0, 0], dtype=np.uint64))
    np.testing.assert_array_equal(corruption.observation_mask(n, q, seed), np.random.Generator(bitgen).random(D) < q)


def test_different_images_and_seeds_get_different_masks(masks_50k):
    first = masks_50k[:2000]
    assert len(np.unique(first, axis=0)) == len(first)  # two equal random 784-pixel masks: probability ~0
    assert (corruption.observation_masks(100, 0.1, seed=1) != masks_50k[:100]).any(axis=1).all()


def test_masks_are_nested_in_q_and_full_at_q_one():
    # Observed iff u < q with the same uniforms u, so a larger q only adds observed pixels.
    small, large = corruption.observation_masks(50, 0.1, seed=0), corruption.observation_masks(50, 0.5, seed=0)
    assert (large >= small).all() and large.sum() > small.sum()
    assert corruption.observation_masks(3, 1.0).all()


@pytest.mark.parametrize("q", [0, 0.0, -0.1, 1.5, float("nan"), True, "0.1"])
def test_observed_fraction_outside_zero_one_is_refused(q):
    with pytest.raises(TokenDiffError, match=r"observed_fraction=.*\(0, 1\]"):
        corruption.observation_masks(3, q)


def test_corrupt_images_keeps_observed_pixels_and_masks_the_rest(binarized, masks_50k):
    x = binarized["train"]
    y, m = corruption.corrupt_images(x, observed_fraction=0.1, seed=0)
    assert y.shape == x.shape and y.dtype == np.uint8
    np.testing.assert_array_equal(m, masks_50k)  # image n's mask is observation_mask(n)
    np.testing.assert_array_equal(y[m], x[m])
    assert (y[~m] == mnist.MASK_ID).all() and mnist.MASK_ID == mnist.VOCAB_SIZE == 2
    # explicit image numbers: rows 10..19 of the split corrupted on their own give the same tokens
    y_part, _ = corruption.corrupt_images(x[10:20], 0.1, seed=0, indices=np.arange(10, 20))
    np.testing.assert_array_equal(y_part, y[10:20])
    with pytest.raises(TokenDiffError, match="binarize first"):
        corruption.corrupt_images(np.full((2, D), 7, np.uint8), 0.1)
    with pytest.raises(TokenDiffError, match="mask_value=1"):
        corruption.corrupt_images(x[:2], 0.1, mask_value=1)


# ------------------------------------------------------------------------------------------ batches


def test_image_batches_are_reproducible_by_seed_and_windows_are_in_order():
    tokens = np.random.default_rng(0).integers(0, 3, size=(100, D), dtype=np.uint8)  # 0, 1 and mask 2
    data = ImageTokens(tokens)
    assert len(data) == 100 and data.seq_len == D
    b1 = data.batch(8, D, torch.Generator().manual_seed(5))
    b2 = data.batch(8, D, torch.Generator().manual_seed(5))  # a resumed run re-seeds the same way
    assert b1.shape == (8, D) and b1.dtype == torch.int64
    assert torch.equal(b1, b2)
    rows = data.batch_indices(8, torch.Generator().manual_seed(5))
    assert torch.equal(b1, torch.from_numpy(tokens[rows.numpy()].astype(np.int64)))  # whole images, not windows
    assert not torch.equal(b1, data.batch(8, D, torch.Generator().manual_seed(6)))
    w = data.windows(D, max_windows=10)
    assert torch.equal(w, torch.from_numpy(tokens[:10].astype(np.int64)))
    assert data.windows(D).shape == (100, D)
    with pytest.raises(TokenDiffError, match="block_size=784"):
        data.batch(8, 256, torch.Generator())
    with pytest.raises(TokenDiffError, match="hold 3"):
        ImageTokens(np.full((2, D), 3))
