"""Which prepared corpus a data config means, prepared once and then found again.

A corpus is a known text (``shakespeare_char``, ``shakespeare``), a Hugging Face dataset
(``data.dataset=hf``), ``data.input`` files, or a name that an earlier preparation recorded
(:mod:`tokendiff.data.names`); ``eval.data`` names one to evaluate a checkpoint on. Each is tokenized
once (:func:`tokendiff.data.text.prepare_corpus`) into a directory of the prepared-data cache whose name
(:func:`cache_name`) holds everything that changes its tokens, so a second run finds it ready.
"""

from __future__ import annotations

from pathlib import Path

from tokendiff.data.names import NamedCorpus, check_name, find_name, prepared_names, record_name, safe_name
from tokendiff.data.paths import KNOWN_FILES, data_dir, fetch, prepared_dir
from tokendiff.data.sources import HubDataset, LocalFiles, PlainText
from tokendiff.data.text import PreparedText, prepare_corpus
from tokendiff.errors import TokenDiffError

__all__ = ["DATASETS", "resolve_dataset", "resolve_eval_corpus", "resolve_chat", "cache_name"]

DATASETS = {"shakespeare_char": ("tinyshakespeare", "char"), "shakespeare": ("tinyshakespeare", "bpe")}
RESERVED = {*DATASETS, "hf"}  # data.dataset values that never name a prepared corpus
CHAT_EXAMPLE = "shakespeare_chat"  # data.format=chat without data.input: "Who speaks next?" (data/play_chat.py)


def cache_name(name: str, tokenizer, vocab_size: int, val_fraction: float, digest: str) -> str:
    """The prepared directory's name: ``{name}-{tokenizer}[-val{fraction}]-{digest}``.

    ``tokenizer``: ``char``, ``bpe-{vocab_size}`` (trained on the corpus, so the corpus digest fixes them),
    or ``{kind}-{fingerprint}`` for a given tokenizer object (pretrained, or a checkpoint's), so that two
    tokenizers never share a prepared corpus. ``digest``: the source's content (sources.py).
    """
    if isinstance(tokenizer, str):
        tok = f"{tokenizer}-{vocab_size}" if tokenizer == "bpe" else tokenizer
    else:
        tok = f"{tokenizer.kind}-{tokenizer.fingerprint()[:12]}"
    split = "" if val_fraction == 0.1 else f"-val{val_fraction:g}"  # the default keeps existing cache names
    return f"{name}-{tok}{split}-{digest}"


def _known_text(dataset: str, configured_data_dir: str | None) -> PlainText:
    path = fetch(KNOWN_FILES[DATASETS[dataset][0]], data_dir(configured_data_dir))
    return PlainText(path.read_text(encoding="utf-8"))


def _unknown(dataset: str) -> TokenDiffError:
    prepared = ", ".join(prepared_names()) or "none yet"
    return TokenDiffError(
        f"data.dataset={dataset!r} is unknown; use one of {sorted(DATASETS)}, a corpus prepared by name ({prepared}; "
        "tokendiff prepare data.input=<file or folder> data.dataset=<name>), or give data.input=<file or folder>"
    )


def _cached(root: Path, prepare) -> PreparedText:
    return PreparedText(root) if (root / "meta.json").exists() else prepare()


def resolve_dataset(
    dataset: str,
    inputs: list[str] | None,
    tokenizer: str,
    vocab_size: int,
    configured_data_dir: str | None,
    min_tokens: int,
    val_fraction: float = 0.1,
    *,
    text_column: str = "text",
    hf_path: str | None = None,
    hf_name: str | None = None,
    tokenizer_name: str | None = None,
    num_proc: int | None = None,
) -> PreparedText:
    """Find (or build, once) the prepared corpus for a config.

    ``dataset``: a known name (``shakespeare_char``, ``shakespeare``: their text and tokenizer, unless
    ``tokenizer="hf"`` overrides the tokenizer), ``hf`` (``hf_path``: a Hugging Face dataset), a name an
    earlier preparation recorded, or any name together with ``inputs`` (then recorded under it).
    ``tokenizer``: ``char`` | ``bpe`` (trained on the corpus) | ``hf`` (pretrained: ``tokenizer_name``).
    The cache key (:func:`cache_name`) holds the name, the tokenizer (kind and vocabulary size, or a
    pretrained tokenizer's fingerprint), the validation share and the source's content digest.
    """
    if inputs:
        source, name = LocalFiles(inputs, text_column), dataset
    elif dataset == "hf":
        source = HubDataset(hf_path, hf_name, text_column)
        name = "hf-" + safe_name(Path(hf_path).name + (f"-{hf_name}" if hf_name else ""))
    elif dataset in DATASETS:
        source, name = _known_text(dataset, configured_data_dir), dataset
        tokenizer = tokenizer if tokenizer == "hf" else DATASETS[dataset][1]  # a known dataset fixes its own
    else:
        named = find_name(dataset)
        if named is None:
            raise _unknown(dataset)
        prepared = _named_corpus(named, tokenizer, tokenizer_name, vocab_size, configured_data_dir, min_tokens)
        for split in ("train", "val"):
            prepared.split(split).check_length(min_tokens)
        return prepared
    record = bool(inputs) and dataset not in RESERVED
    if record:
        check_name(dataset)  # before the work of preparing
    tok = tokenizer
    if tokenizer == "hf":
        from tokendiff.data.hf_tokenizer import HFTokenizer

        tok = HFTokenizer.from_name(tokenizer_name, data_dir(configured_data_dir))
    root = prepared_dir() / cache_name(name, tok, vocab_size, val_fraction, source.digest())
    prepared = _cached(root, lambda: prepare_corpus(source, root, tok, vocab_size, val_fraction, min_tokens, num_proc))
    for split in ("train", "val"):
        prepared.split(split).check_length(min_tokens)
    if record:
        settings = {
            "input": [str(Path(i).expanduser().resolve()) for i in inputs],
            "text_column": text_column,
            "tokenizer": tokenizer,
            "tokenizer_name": _absolute_if_path(tokenizer_name),
            "vocab_size": vocab_size,
            "val_fraction": val_fraction,
        }
        record_name(dataset, root, settings)
    return prepared


def _absolute_if_path(name: str | None) -> str | None:
    """A tokenizer name as recorded: a file or folder by its absolute path, a hub id (or gpt2) as given."""
    return str(Path(name).expanduser().resolve()) if name and Path(name).expanduser().exists() else name


def _named_corpus(
    named: NamedCorpus, tokenizer: str, tokenizer_name, vocab_size: int, configured_data_dir, min_tokens: int
) -> PreparedText:
    """The corpus recorded under a name; prepared again from its recorded settings if the cache lost it."""
    s = named.settings
    asked = (tokenizer, _absolute_if_path(tokenizer_name), vocab_size if tokenizer == "bpe" else None)
    recorded = (s["tokenizer"], s["tokenizer_name"], s["vocab_size"] if s["tokenizer"] == "bpe" else None)
    if tokenizer != "char" and asked != recorded:  # char is the default: only bpe and hf are asked for on purpose
        raise TokenDiffError(
            f"data.dataset={named.name!r} was prepared with data.tokenizer={s['tokenizer']}"
            + (f" data.tokenizer_name={s['tokenizer_name']}" if s["tokenizer_name"] else "")
            + (f" data.vocab_size={s['vocab_size']}" if s["tokenizer"] == "bpe" else "")
            + f"; drop the data.tokenizer settings, or prepare it again with them (tokendiff prepare "
            f"data.input=<file or folder> data.dataset={named.name} data.tokenizer=...)"
        )
    if named.exists:
        return PreparedText(named.root)
    missing = [i for i in s["input"] if not Path(i).exists()]
    if missing:
        raise TokenDiffError(
            f"data.dataset={named.name!r}: its prepared files ({named.root}) are gone and so is {missing[0]}, "
            "which it was prepared from; prepare it again (tokendiff prepare data.input=<file or folder> "
            f"data.dataset={named.name})"
        )
    return resolve_dataset(
        named.name,
        s["input"],
        s["tokenizer"],
        s["vocab_size"],
        configured_data_dir,
        min_tokens,
        s["val_fraction"],
        text_column=s["text_column"],
        tokenizer_name=s["tokenizer_name"],
    )


def resolve_eval_corpus(
    spec: str,
    tokenizer,
    configured_data_dir: str | None,
    text_column: str = "text",
    val_fraction: float = 0.1,
    num_proc: int | None = None,
) -> PreparedText:
    """``eval.data``: the corpus ``spec`` names, tokenized with ``tokenizer`` (a checkpoint's), for zero-shot
    evaluation. ``spec``: a prepared corpus's name, a known dataset, or a file or folder (read as
    ``data.input`` is, with ``text_column`` and ``val_fraction``).

    A named corpus prepared with this very tokenizer is used as it is; otherwise the documents are
    tokenized with ``tokenizer`` (never a tokenizer trained on them) into a directory cached under the
    tokenizer's fingerprint (:func:`cache_name`).
    """
    named = find_name(spec)
    if named is not None:
        if named.exists and PreparedText(named.root).tokenizer().fingerprint() == tokenizer.fingerprint():
            return PreparedText(named.root)
        s = named.settings
        source, name, val_fraction = LocalFiles(s["input"], s["text_column"]), spec, s["val_fraction"]
    elif spec in DATASETS:
        source, name = _known_text(spec, configured_data_dir), spec
    elif Path(spec).expanduser().exists():
        source, name = LocalFiles([spec], text_column), safe_name(Path(spec).expanduser().resolve().stem)
    else:
        raise TokenDiffError(
            f"eval.data={spec!r} is neither a corpus prepared by name ({', '.join(prepared_names()) or 'none yet'}), "
            f"a known dataset ({', '.join(sorted(DATASETS))}) nor a file or folder that exists"
        )
    root = prepared_dir() / cache_name(name, tokenizer, 0, val_fraction, source.digest())
    return _cached(root, lambda: prepare_corpus(source, root, tokenizer, 0, val_fraction, 1, num_proc))


def resolve_chat(data, block_size: int, init_from: str | None):
    """``data.format=chat``: the examples of ``data.input`` (:mod:`tokendiff.data.chat`), packed to ``block_size``
    tokens, prepared once into the cache. Their tokenizer is the one of the checkpoint ``init_from`` fine-tunes
    (what fine-tuning needs: the base model's ids), else ``data.tokenizer`` (characters and BPE trained on the
    examples rendered with the plain template, or a pretrained one)."""
    from tokendiff.data.chat import PreparedChat, chat_template, file_digest, plain_text, prepare_chat, read_chat_file
    from tokendiff.data.tokenizers import load_tokenizer, train_tokenizer

    if data.input is None and data.dataset == CHAT_EXAMPLE:  # the example made from the play
        from tokendiff.data.play_chat import write_who_speaks_next

        text = _known_text("shakespeare_char", data.data_dir).text
        paths = [write_who_speaks_next(text, prepared_dir() / "shakespeare_chat" / "who_speaks_next.jsonl")]
    else:
        paths = [Path(data.input).expanduser()]
    if not paths[0].is_file():
        raise TokenDiffError(f"data.input={data.input} is not a file; data.format=chat reads one .jsonl file")
    if init_from:
        from tokendiff.checkpoint import resolve_checkpoint

        tok = load_tokenizer(resolve_checkpoint(init_from, "training.init_from"))
    elif data.tokenizer == "hf":
        from tokendiff.data.hf_tokenizer import HFTokenizer

        tok = HFTokenizer.from_name(data.tokenizer_name, data_dir(data.data_dir))
    else:  # trained on the examples as the plain template writes them
        rendered = "".join(plain_text(messages) for messages in read_chat_file(paths[0]))
        tok = train_tokenizer(data.tokenizer, rendered, data.vocab_size)
    name = safe_name(paths[0].resolve().stem)
    digest = f"{file_digest(paths)}-L{block_size}-{data.chat_padding}-{chat_template(tok).kind}"
    root = prepared_dir() / cache_name(f"chat-{name}", tok, data.vocab_size, data.val_fraction, digest)
    if (root / "meta.json").exists():
        return PreparedChat(root)
    return prepare_chat(paths, root, tok, block_size, data.chat_padding, data.val_fraction)
