"""The ``data`` section: which corpus, how it is tokenized, and how images are corrupted."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from tokendiff.configs.sections.checks import check
from tokendiff.data.text import check_val_fraction
from tokendiff.data import corruption
from tokendiff.data.chat import check_chat_padding

__all__ = ["DataConfig"]


@dataclass
class DataConfig:
    """Which corpus, how it is tokenized, and where raw files live."""

    # shakespeare_char | shakespeare (BPE) | mnist | hf (datasets.load_dataset of data.hf_path) | a name given
    # to a corpus by `tokendiff prepare data.input=... data.dataset=NAME`
    dataset: str = "shakespeare_char"
    input: Optional[str] = None  # .txt | .jsonl | .json | .parquet file, or a folder of them
    text_column: str = "text"  # the text field of .jsonl / .json / .parquet rows and of hf datasets
    hf_path: Optional[str] = None  # data.dataset=hf: the datasets name, e.g. wikitext
    hf_name: Optional[str] = None  # data.dataset=hf: its configuration, e.g. wikitext-2-raw-v1
    num_proc: Optional[int] = None  # processes for tokenizing with datasets.map (default: up to 4)
    tokenizer: str = "char"  # char | bpe (trained here) | hf (pretrained: tokenizer_name); known datasets fix theirs
    tokenizer_name: Optional[str] = None  # tokenizer=hf: gpt2 (offline files), a hub id, a folder or tokenizer.json
    vocab_size: int = 2048  # BPE vocabulary size
    val_fraction: float = 0.1  # the last 10% of the text is the validation split
    data_dir: Optional[str] = None  # raw data; default $TOKENDIFF_DATA, else the user cache dir
    binarization: str = "static"  # mnist: static (Larochelle & Murray) | dynamic | threshold
    observed_fraction: float = 0.1  # naive/ambient objectives: fraction of each image's pixels observed
    corruption_seed: int = 0  # seeds the fixed observation mask of every training image
    clean_fraction: float = 0.0  # diffusion.objective=naive: this share of the training images kept clean (a control)
    limit: Optional[int] = None  # mnist: use only the first N training images (quick experiments, tests)
    # text: a corpus of documents | chat: prompt/response examples for fine-tuning (data.input=<file>.jsonl with
    # messages, or prompt and response fields; the loss scores the response only: tokendiff.data.chat)
    format: str = "text"
    chat_padding: str = "mask"  # chat: after the response, mask (held masked, unscored) | eos (scored, LLaDA)

    def __post_init__(self):
        check(
            self.binarization in ("static", "dynamic", "threshold"),
            f"data.binarization={self.binarization!r} is unknown; use static, dynamic or threshold",
        )
        check(self.limit is None or self.limit >= 1, f"data.limit={self.limit} must be >= 1")
        corruption.check_observed_fraction(self.observed_fraction)  # the corruption's rule
        check(
            0.0 <= self.clean_fraction < 1.0,
            f"data.clean_fraction={self.clean_fraction} must lie in [0, 1), e.g. 0.01",
        )
        check(
            self.tokenizer in ("char", "bpe", "hf"),
            f"data.tokenizer={self.tokenizer!r} is unknown; use char, bpe or hf (with data.tokenizer_name=...)",
        )
        check(
            (self.tokenizer == "hf") == (self.tokenizer_name is not None),
            "data.tokenizer=hf goes with data.tokenizer_name=<gpt2, hub id, folder or tokenizer.json> and only "
            f"with it (here data.tokenizer={self.tokenizer!r}, data.tokenizer_name={self.tokenizer_name!r})",
        )
        check(
            (self.dataset == "hf") == (self.hf_path is not None),
            "data.dataset=hf goes with data.hf_path=<datasets name, e.g. wikitext> and only with it "
            f"(here data.dataset={self.dataset!r}, data.hf_path={self.hf_path!r})",
        )
        check(
            self.num_proc is None or 1 <= self.num_proc <= 256,
            f"data.num_proc={self.num_proc} must lie in [1, 256] (or unset)",
        )
        check_val_fraction(self.val_fraction)  # the corpus preparation's rule
        check(self.format in ("text", "chat"), f"data.format={self.format!r} is unknown; use text or chat")
        check_chat_padding(self.chat_padding)  # the chat data's rule
        check(
            self.format != "chat" or self.input is not None or self.dataset == "shakespeare_chat",
            "data.format=chat reads prompt/response examples from data.input=<file>.jsonl (or the example made from "
            "the play: data.dataset=shakespeare_chat); give it",
        )
