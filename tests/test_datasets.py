"""Corpora from local JSON lines / Parquet / text files and Hugging Face datasets, pretrained tokenizers,
prepared corpora reused by name, and zero-shot evaluation (issue 9). Everything offline: the data is
written by each test, the GPT-2 tokenizer comes from the shared data directory."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from test_cli import run
from tokendiff.data import paths
from tokendiff.data.sources import Documents, LocalFiles, split_documents, val_start
from tokendiff.data.corpora import resolve_dataset
from tokendiff.data.text import PreparedText, write_tokens
from tokendiff.errors import TokenDiffError

import datasets  # noqa: E402  (the [hf] extra: CI installs it, so these tests always run there)
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import transformers  # noqa: E402, F401

from tokendiff.data.hf_tokenizer import HFTokenizer  # noqa: E402

GPT2_EOS = 50256  # "<|endoftext|>", GPT-2's last id; its vocabulary has no mask, tokendiff's is 50257
TINY_MODEL = [
    "model.n_layer=1",
    "model.n_embd=32",
    "model.n_head=2",
    "model.block_size=16",
    "training.batch_size=2",
    "training.eval_iters=1",
    "training.eval_interval=0",
    "training.sample_interval=0",
    "sampling.steps=2",
    "system.device=cpu",
]


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    """No test may reach the network, and datasets' own cache goes to the test's folder."""
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


@pytest.fixture(scope="module")
def gpt2():
    return HFTokenizer.from_name("gpt2", paths.data_dir())


def write_jsonl(path, texts, column="text"):
    path.write_text("".join(json.dumps({column: t, "id": i}) + "\n" for i, t in enumerate(texts)))
    return path


def tokens(prepared: PreparedText, split: str) -> list[int]:
    return np.fromfile(prepared.root / f"{split}.bin", dtype=prepared.meta["dtype"]).tolist()


DOCS = ["Hello world.", "A second document, a little longer than the first.", "Third!", "The last one, for validation."]


def test_a_pretrained_tokenizer_puts_eos_between_documents(tmp_path, gpt2, capsys):
    source = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    code, out, err = run(
        capsys, "prepare", f"data.input={source}", "data.tokenizer=hf", "data.tokenizer_name=gpt2", "model.block_size=2"
    )
    assert code == 0, err
    prepared = PreparedText(Path(json.loads(out)["prepared_dir"]))
    # the last document is 29 of 99 characters; one document (29) is closer to 10% than two (35)
    e = gpt2.encode
    assert tokens(prepared, "train") == e(DOCS[0]) + [GPT2_EOS] + e(DOCS[1]) + [GPT2_EOS] + e(DOCS[2])
    assert tokens(prepared, "val") == e(DOCS[3])
    meta = prepared.meta
    assert meta["tokenizer"] == "hf" and meta["vocab_size"] == 50257 and meta["dtype"] == "uint16"
    # chars: the documents' characters only; the two EOS separators are tokens, not characters
    assert meta["splits"]["train"]["chars"] == len(DOCS[0]) + len(DOCS[1]) + len(DOCS[2])
    assert meta["splits"]["val"] == {"tokens": len(e(DOCS[3])), "chars": len(DOCS[3])}
    assert prepared.tokenizer().fingerprint() == gpt2.fingerprint()  # saved with the corpus, loads back the same


def test_a_tokenizer_with_its_mask_inside_the_vocabulary_is_renumbered(tmp_path):
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "a", "mat", "dog", "."]
    transformers.BertTokenizer(vocab={w: i for i, w in enumerate(words)}).save_pretrained(str(tmp_path / "bert"))
    tok = HFTokenizer.from_name(str(tmp_path / "bert"))
    # tokendiff ids: below the mask (4) unchanged, above it one lower; the mask itself is V = 12
    assert tok.vocab_size == len(words) - 1 and tok.eos_id == 3  # [SEP] separates documents
    assert tok.encode("the cat sat on a mat") == [4, 5, 6, 7, 8, 9]
    assert tok.decode(tok.encode("the cat sat on a mat")) == "the cat sat on a mat"
    source = write_jsonl(tmp_path / "pets.jsonl", ["the cat sat", "on a mat", "the dog sat", "a cat ."])
    prepared = resolve_dataset(
        "pets", [str(source)], "hf", 0, None, min_tokens=1, tokenizer_name=str(tmp_path / "bert")
    )
    assert tokens(prepared, "train") == [4, 5, 6, 3, 7, 8, 9, 3, 4, 10, 6]
    assert tokens(prepared, "val") == [8, 5, 11]
    assert tok.decode(tokens(prepared, "train")) == "the cat sat [SEP] on a mat [SEP] the dog sat"
    assert prepared.meta["vocab_size"] == 12  # every stored id is a real token, never the mask (12)


def test_the_validation_split_is_whole_documents_from_the_end():
    counts = np.array([50, 30, 10, 10])  # 100 characters
    assert val_start(counts, 0.1) == 3  # the last document: exactly 10
    assert val_start(counts, 0.25) == 2  # 20 is closer to 25 than 10 or 50
    assert val_start(counts, 0.9) == 1  # at most all but one document
    assert val_start(np.array([1, 1000]), 0.1) == 1  # at least one document, however long
    # one document: its last 10% of characters (nanoGPT's rule, as before)
    train, val = split_documents({"all": Documents(["abcdefghij" * 3])}, 0.1)
    assert train.joined() == "abcdefghij" * 2 + "abcdefg" and val.joined() == "hij"
    # a source's own validation split wins over the rule
    own = {"train": Documents(["a", "b"]), "val": Documents(["c"])}
    assert [d.joined() for d in split_documents(own, 0.5)] == ["a\nb", "c"]


def test_a_folder_mixes_text_jsonl_and_parquet_files_in_path_order(tmp_path):
    folder = tmp_path / "mixed"
    (folder / "sub").mkdir(parents=True)
    (folder / "c.txt").write_text("third, a text file")
    write_jsonl(folder / "a.jsonl", ["first row", "   ", "second row"], column="body")  # a blank row is no document
    # Parquet text as large_string (what polars writes) joins the JSON lines' string column
    fourth = pa.array(["fourth", None], type=pa.large_string())
    pq.write_table(pa.table({"body": fourth, "n": [1, 2]}), folder / "sub" / "d.parquet")
    (folder / "notes.md").write_text("not a corpus file")
    docs = LocalFiles([folder], text_column="body").load(tmp_path / "work")["all"]
    assert [t for batch in docs.batches() for t in batch] == ["first row", "second row", "third, a text file", "fourth"]
    with pytest.raises(TokenDiffError, match="no column 'text'; its columns are body, id"):
        LocalFiles([folder]).load(tmp_path / "work")


def test_a_second_prepare_reuses_the_cache_and_tokenizers_never_share_one(tmp_path, monkeypatch):
    import tokendiff.data.text as text

    source = write_jsonl(tmp_path / "tale.jsonl", ["It was the best of times. " * 8, "It was the worst of times. " * 3])
    first = resolve_dataset("tale", [str(source)], "char", 0, None, min_tokens=4)
    mtime = (first.root / "train.bin").stat().st_mtime_ns

    def no_tokenizing(*args, **kwargs):
        raise AssertionError("a cached corpus was tokenized again")

    monkeypatch.setattr(text, "write_tokens", no_tokenizing)
    again = resolve_dataset("tale", [str(source)], "char", 0, None, min_tokens=4)
    assert again.root == first.root and (again.root / "train.bin").stat().st_mtime_ns == mtime
    monkeypatch.undo()
    pretrained = resolve_dataset("tale", [str(source)], "hf", 0, None, min_tokens=4, tokenizer_name="gpt2")
    assert pretrained.root != first.root and pretrained.meta["tokenizer"] == "hf"
    assert pretrained.tokenizer().fingerprint()[:12] in pretrained.root.name  # the key holds the fingerprint


def test_shakespeare_in_gpt2_tokens(gpt2):
    prepared = resolve_dataset("shakespeare", None, "hf", 2048, None, min_tokens=2, tokenizer_name="gpt2")
    assert prepared.root.name.startswith(f"shakespeare-hf-{gpt2.fingerprint()[:12]}-")
    assert prepared.meta["tokenizer"] == "hf" and prepared.meta["vocab_size"] == 50257
    text = (paths.data_dir() / paths.KNOWN_FILES["tinyshakespeare"].relpath).read_text()
    assert tokens(prepared, "train")[:1000] == gpt2.encode(text[:20_000])[:1000]
    assert prepared.meta["splits"]["val"]["chars"] == len(text) - int(len(text) * 0.9)  # one document: as before


def test_several_processes_write_the_same_tokens_as_one(tmp_path, gpt2):
    docs = Documents([f"document {i} " * (i % 4 + 1) for i in range(40)])
    for procs in (1, 2):
        n = write_tokens(docs, gpt2, tmp_path / f"p{procs}.bin", np.uint16, procs, tmp_path / "work")
        assert n == os.path.getsize(tmp_path / f"p{procs}.bin") // 2  # no separator after the last document
    one, two = (np.fromfile(tmp_path / f"p{p}.bin", dtype=np.uint16) for p in (1, 2))
    assert one.tolist() == two.tolist() and (one == GPT2_EOS).sum() == 39
    assert gpt2.decode(one).split("<|endoftext|>")[:2] == ["document 0 ", "document 1 document 1 "]


def test_hub_datasets_from_a_saved_dataset_and_a_folder_of_parquet_files(tmp_path):
    saved = tmp_path / "saved"
    train, val = ["one two three " * 10, "four five six " * 10], ["seven eight nine"]
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict({"text": train}), "validation": datasets.Dataset.from_dict({"text": val})}
    ).save_to_disk(str(saved))
    prepared = resolve_dataset("hf", None, "char", 0, None, min_tokens=4, hf_path=str(saved))
    tok = prepared.tokenizer()
    assert tok.decode(tokens(prepared, "val")) == val[0]  # its own validation split
    assert tok.decode(tokens(prepared, "train")) == "\n".join(train)
    # a folder of parquet files with train and test splits (datasets infers them from the names)
    (tmp_path / "pq").mkdir()
    pq.write_table(pa.table({"content": train}), tmp_path / "pq" / "train-00000.parquet")
    pq.write_table(pa.table({"content": ["ten eleven"]}), tmp_path / "pq" / "test-00000.parquet")
    prepared = resolve_dataset("hf", None, "char", 0, None, 4, hf_path=str(tmp_path / "pq"), text_column="content")
    assert prepared.tokenizer().decode(tokens(prepared, "val")) == "ten eleven"  # test stands in for validation
    assert prepared.root.name.startswith("hf-pq-char-")


def test_a_corpus_prepared_by_name_trains_by_name_and_a_jsonl_file_evaluates_zero_shot(tmp_path, capsys):
    lines = [f"the cat sat on the mat number {i}." for i in range(40)]
    source = write_jsonl(tmp_path / "cats.jsonl", lines)
    code, out, err = run(capsys, "prepare", f"data.input={source}", "data.dataset=cats", "model.block_size=16")
    assert code == 0, err
    index = json.loads((paths.prepared_dir() / "names" / "cats.json").read_text())
    assert index["prepared"] == os.path.basename(json.loads(out)["prepared_dir"])
    assert index["data"]["input"] == [str(source.resolve())] and index["data"]["tokenizer"] == "char"
    run_dir = tmp_path / "run"
    code, out, err = run(
        capsys, "train", "data.dataset=cats", *TINY_MODEL, "training.max_iters=2", f"output_dir={run_dir}"
    )
    assert code == 0, err
    assert json.loads((run_dir / "final" / "config.json").read_text())["config"]["data"]["dataset"] == "cats"

    evaluate = ("eval", f"checkpoint={run_dir}", "eval.num_draws=2", "seed=3")
    code, out, err = run(capsys, *evaluate)
    own = json.loads(out)
    assert code == 0 and own["data"] == "cats", err
    # by name, the corpus (in the checkpoint's tokenizer already) is the same one: the same numbers
    assert json.loads(run(capsys, *evaluate, "eval.data=cats")[1]) == own
    other = write_jsonl(tmp_path / "mats.jsonl", [f"a mat on the cat {i}." for i in range(30)])
    code, out, err = run(capsys, *evaluate, f"eval.data={other}")
    assert code == 0, err
    zero_shot = json.loads(out)
    assert zero_shot["data"] == str(other) and zero_shot["bits_per_char"] > 0 and zero_shot["sequences"] >= 1
    assert zero_shot["nelbo_nats_per_token"] != own["nelbo_nats_per_token"]
    # another corpus's characters that the checkpoint never saw: a one-line error, not a crash
    unseen = write_jsonl(tmp_path / "dogs.jsonl", ["Zebras!"] * 5)
    code, _, err = run(capsys, *evaluate, f"eval.data={unseen}")
    assert code == 2 and "not in this model's vocabulary" in err and "Traceback" not in err
    # a name is its corpus as prepared: another tokenizer asked for with it is refused, not silently ignored
    code, _, err = run(
        capsys, "train", "data.dataset=cats", "data.tokenizer=bpe", *TINY_MODEL, f"output_dir={tmp_path}/x"
    )
    assert code == 2 and "'cats' was prepared with data.tokenizer=char" in err
    # an unknown name lists the names there are
    code, _, err = run(capsys, "train", "data.dataset=dogs", *TINY_MODEL, f"output_dir={tmp_path}/x")
    assert code == 2 and "'dogs' is unknown" in err and "cats" in err


def test_a_name_whose_prepared_files_were_cleared_is_prepared_again_from_its_source(tmp_path):
    source = write_jsonl(tmp_path / "fables.jsonl", [f"The fox and the crow, fable {i}." for i in range(20)])
    first = resolve_dataset("fables", [str(source)], "char", 0, None, min_tokens=4)
    train = tokens(first, "train")
    shutil.rmtree(first.root)  # the cache was cleared
    again = resolve_dataset("fables", None, "char", 0, None, min_tokens=4)
    assert again.root == first.root and tokens(again, "train") == train
    shutil.rmtree(first.root)
    source.unlink()  # and the source is gone too: a one-line error that says so
    with pytest.raises(TokenDiffError, match="are gone and so is .*fables.jsonl"):
        resolve_dataset("fables", None, "char", 0, None, min_tokens=4)
