"""Tokenizers, text corpora and data locations."""

from tokendiff.data.corpora import resolve_dataset
from tokendiff.data.paths import data_dir, prepared_dir
from tokendiff.data.text import PreparedText, prepare_text, read_corpus
from tokendiff.data.tokenizers import BPETokenizer, CharTokenizer, load_tokenizer

__all__ = [
    "data_dir",
    "prepared_dir",
    "PreparedText",
    "prepare_text",
    "read_corpus",
    "resolve_dataset",
    "BPETokenizer",
    "CharTokenizer",
    "load_tokenizer",
]
