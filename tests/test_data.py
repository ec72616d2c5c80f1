import io
import json
import os

import numpy as np
import pytest

from tokendiff.data import paths
from tokendiff.data.corpora import resolve_dataset
from tokendiff.data.text import prepare_text, read_corpus
from tokendiff.data.tokenizers import BPETokenizer, CharTokenizer, load_tokenizer
from tokendiff.errors import TokenDiffError

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n" * 40


def test_char_tokenizer_round_trip_and_unknown_characters(tmp_path):
    tok = CharTokenizer.train(TEXT)
    assert tok.decode(tok.encode("hear me")) == "hear me"
    with pytest.raises(TokenDiffError, match="'Z'"):
        tok.encode("Zounds")
    tok.save(tmp_path)
    assert load_tokenizer(tmp_path).encode("hear") == tok.encode("hear")


def test_bpe_tokenizer_trains_merges_and_round_trips(tmp_path):
    tok = BPETokenizer.train(TEXT, vocab_size=300)
    ids = tok.encode("Before we proceed")
    assert tok.decode(ids) == "Before we proceed"
    assert len(ids) < len("Before we proceed")  # merges were learned: fewer tokens than bytes
    assert tok.decode(tok.encode("ünïcode ok")) == "ünïcode ok"  # byte-level: nothing is unknown
    tok.save(tmp_path)
    assert (tmp_path / "tokenizer.json").exists()
    assert load_tokenizer(tmp_path).encode("hear me speak") == tok.encode("hear me speak")


def test_prepare_writes_nanogpt_style_memmaps(tmp_path):
    prepared = prepare_text(TEXT, tmp_path / "corpus", "char", val_fraction=0.1)
    meta = prepared.meta
    assert meta["dtype"] == "uint16" and meta["vocab_size"] == len(set(TEXT))
    train = np.fromfile(tmp_path / "corpus" / "train.bin", dtype=np.uint16)
    tok = prepared.tokenizer()
    # The split is the text's first 90% / last 10%, byte for byte.
    assert tok.decode(train.tolist()) == TEXT[: int(len(TEXT) * 0.9)]
    assert meta["splits"]["val"]["chars"] == len(TEXT) - int(len(TEXT) * 0.9)


def test_read_corpus_accepts_a_folder_of_txt_files(tmp_path):
    (tmp_path / "b.txt").write_text("second")
    (tmp_path / "a.txt").write_text("first")
    (tmp_path / "skip.md").write_text("not text")
    assert read_corpus([tmp_path]) == "first\nsecond"


def test_empty_and_too_short_corpora_are_clear_errors(tmp_path):
    (tmp_path / "empty.txt").write_text("   \n")
    with pytest.raises(TokenDiffError, match="empty"):
        resolve_dataset("x", [str(tmp_path / "empty.txt")], "char", 0, None, min_tokens=10)
    (tmp_path / "short.txt").write_text("To be or not to be")
    with pytest.raises(TokenDiffError, match="too short"):
        resolve_dataset("x", [str(tmp_path / "short.txt")], "char", 0, None, min_tokens=257)
    # nothing half-written is left behind in the cache
    assert not any(p.name.startswith("x-") for p in paths.prepared_dir().glob("*"))


def test_tiny_shakespeare_is_read_from_the_data_dir_with_its_checksum():
    target = paths.data_dir() / paths.KNOWN_FILES["tinyshakespeare"].relpath
    assert target.exists(), f"CI points TOKENDIFF_DATA at ../shared/data; {target} must exist"
    assert paths.sha256_of(target) == paths.KNOWN_FILES["tinyshakespeare"].sha256
    prepared = resolve_dataset("shakespeare_char", None, "char", 0, None, min_tokens=257)
    assert prepared.meta["vocab_size"] == 65 and prepared.meta["splits"]["train"]["tokens"] == 1003854


def test_download_checks_the_sha256_and_leaves_nothing_on_mismatch(tmp_path, monkeypatch):
    remote = paths.RemoteFile("demo/file.txt", "https://example.invalid/file.txt", "0" * 64)
    monkeypatch.setattr(paths.urllib.request, "urlopen", lambda url, timeout: io.BytesIO(b"tampered"))
    with pytest.raises(TokenDiffError, match="sha256"):
        paths.fetch(remote, tmp_path)
    assert os.listdir(tmp_path / "demo") == []
    good = paths.RemoteFile("demo/file.txt", remote.url, __import__("hashlib").sha256(b"tampered").hexdigest())
    assert paths.fetch(good, tmp_path).read_bytes() == b"tampered"


def test_present_files_are_never_downloaded(tmp_path, monkeypatch):
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "file.txt").write_text("here")

    def no_network(*a, **k):
        raise AssertionError("must not download a file that is present")

    monkeypatch.setattr(paths.urllib.request, "urlopen", no_network)
    assert paths.fetch(paths.RemoteFile("demo/file.txt", "https://x", "0" * 64), tmp_path).read_text() == "here"
    json.dumps({})
