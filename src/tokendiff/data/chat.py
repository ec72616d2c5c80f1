"""Instruction data for supervised fine-tuning (``data.format=chat``): prompt/response pairs of a fixed length.

A chat file holds one example per JSON line, either ``{"messages": [{"role": ..., "content": ...}, ...]}`` (the
last message is the assistant's response; every earlier one, earlier assistant turns included, is the prompt)
or ``{"prompt": ..., "response": ...}`` (one user turn and its answer). Each example is rendered with a chat
template and cut into the **prompt** (template and turns up to the assistant's header) and the **response**
(the answer and its end marker):

- a tokenizer with its own chat template (``transformers``' ``apply_chat_template``) uses it, as LLaDA's
  and Dream's SFT do;
- every other tokenizer (tokendiff's characters and BPE, GPT-2) uses the plain template :data:`PLAIN`::

      User:
      {prompt}

      Assistant:
      {response}

  that is ``"{Role}:\\n{content}\\n\\n"`` per message, the response ending with the blank line (and the
  tokenizer's EOS when it has one). It uses only letters, ``:`` and newlines, so a character model trained on
  the play knows every one of its characters; a blank line inside a message is written as one newline, so
  the first blank line after the header is where an answer ends (:func:`response_end`).

Every example becomes ``L = model.block_size`` tokens: prompt, response, then padding (an example that does
not fit is left out and counted). Each position has a role (:data:`PROMPT`, :data:`RESPONSE`, :data:`PAD`):
the prompt is never noised and never scored; the response is noised and scored. What follows the response
is set by ``data.chat_padding``:

- ``mask`` (the default): positions held masked at every time and never scored (:data:`PAD`), so the model is
  only ever taught the one end marker, never a run of easy padding tokens; what it writes past its end
  marker is cut;
- ``eos`` (LLaDA's recipe): EOS tokens (a newline for a tokenizer without EOS) to the end, scored as part of
  the response, so the model learns the length of its answers from the masks it must fill.
  LLaDA#108 traces the repetition of long generations to EOS padding learned as text. On the example
  (``docs/sft.md``) EOS padding made every answer empty under confidence decoding, at 256 and 512 tokens
  (the padding, the easiest prediction, is revealed first and then fills the answer too); held masks gave
  answers in the asked format every time.

The prepared directory holds ``{split}.bin`` (the examples' tokens, row after row) and ``{split}_roles.bin``
(their roles, ``uint8``), ``meta.json`` (``"format": "chat"``, the length, the padding, examples kept and
left out) and the tokenizer.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tokendiff.atomic import staged_directory
from tokendiff.errors import TokenDiffError

__all__ = [
    "PROMPT",
    "RESPONSE",
    "PAD",
    "PLAIN",
    "CHAT_PADDINGS",
    "read_chat_file",
    "ChatTemplate",
    "chat_template",
    "pack_example",
    "prepare_chat",
    "PreparedChat",
    "ChatSplit",
    "response_end",
    "plain_text",
    "PLAIN_TEMPLATE",
]

PROMPT, RESPONSE, PAD = 0, 1, 2  # the role of a position: kept clean | noised and scored | held masked, unscored
PLAIN = "plain"  # the template of tokenizers without their own
CHAT_PADDINGS = ("eos", "mask")
ROLES = {"user": "User", "assistant": "Assistant", "system": "System"}


# ---------------------------------------------------------------- reading
def read_chat_file(path) -> list[list[dict]]:
    """The examples of a chat file (.jsonl), each a list of messages ``{"role", "content"}`` ending with the
    assistant's response. One line per example: ``messages``, or ``prompt`` and ``response``."""
    path = Path(path)
    if path.suffix != ".jsonl":
        raise TokenDiffError(f"data.input={path} is not a .jsonl file; data.format=chat reads JSON lines")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise TokenDiffError(f"data.input={path} cannot be read ({exc.strerror})") from None
    examples = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            row = json.loads(line)
        except ValueError:
            raise TokenDiffError(f"{where} is not JSON; data.format=chat reads one JSON object per line") from None
        examples.append(_messages(row, where))
    if not examples:
        raise TokenDiffError(f"data.input={path} holds no examples")
    return examples


def _messages(row, where: str) -> list[dict]:
    fix = 'give {"messages": [{"role": "user", "content": ...}, {"role": "assistant", "content": ...}]} or {"prompt": ..., "response": ...}'  # noqa: E501
    if isinstance(row, dict) and "messages" in row:
        messages = row["messages"]
        ok = isinstance(messages, list) and len(messages) >= 2 and all(
            isinstance(m, dict) and isinstance(m.get("content"), str) and m.get("role") in ROLES for m in messages
        )  # fmt: skip
        if not ok:
            raise TokenDiffError(f"{where}: messages must be a list of at least 2 {{role, content}} (roles: "
                                 f"{', '.join(ROLES)}); {fix}")  # fmt: skip
        if messages[-1]["role"] != "assistant":
            raise TokenDiffError(f"{where}: the last message is the response and must be the assistant's; {fix}")
        return [{"role": m["role"], "content": m["content"]} for m in messages]
    if isinstance(row, dict) and isinstance(row.get("prompt"), str) and isinstance(row.get("response"), str):
        return [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row["response"]}]
    keys = sorted(row) if isinstance(row, dict) else type(row).__name__
    raise TokenDiffError(f"{where} has no messages nor prompt and response fields (it has {keys}); {fix}")


# ---------------------------------------------------------------- templates
@dataclass(frozen=True)
class ChatTemplate:
    """How a tokenizer's examples become ids. ``kind``: ``plain`` or ``hf`` (the tokenizer's own)."""

    tokenizer: object
    kind: str

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        """The ids of ``messages`` followed by the assistant's header: what the model answers."""
        if self.kind == PLAIN:
            return self.tokenizer.encode(plain_text(messages))
        return self._hf(messages, add_generation_prompt=True)

    def example_ids(self, messages: list[dict]) -> tuple[list[int], list[int]]:
        """``(prompt, response)`` ids of one example (its last message is the response)."""
        prompt = self.prompt_ids(messages[:-1])
        if self.kind == PLAIN:
            response = self.tokenizer.encode(_flat(messages[-1]["content"]) + "\n\n")
            eos = self.tokenizer.eos_id
            return prompt, response + ([eos] if eos is not None else [])
        whole = self._hf(messages, add_generation_prompt=False)
        if whole[: len(prompt)] != prompt:
            raise TokenDiffError(
                "this tokenizer's chat template does not write the prompt as a prefix of the whole conversation; "
                "tokendiff cannot tell the response apart (use a template without that, or data.tokenizer=bpe)"
            )
        response = whole[len(prompt) :]
        eos = self.tokenizer.eos_id
        if eos is not None and (not response or response[-1] != eos):
            response = response + [eos]
        return prompt, response

    def _hf(self, messages: list[dict], add_generation_prompt: bool) -> list[int]:
        out = self.tokenizer.tokenizer.apply_chat_template(
            messages, tokenize=True, add_generation_prompt=add_generation_prompt
        )
        ids = out["input_ids"] if hasattr(out, "keys") else out
        return self.tokenizer.from_hf_ids(list(ids))


def _flat(content: str) -> str:
    """A message's text for the plain template: no blank line inside (it ends a turn), no trailing newline."""
    while "\n\n" in content:
        content = content.replace("\n\n", "\n")
    return content.strip("\n")


def _plain_turn(message: dict) -> str:
    role = ROLES.get(message["role"], str(message["role"]).title())
    return f"{role}:\n{_flat(message['content'])}\n\n"


PLAIN_TEMPLATE = "User:\n{content}\n\nAssistant:\n{content}\n\n"  # what the plain template writes, for a reader


def plain_text(messages: list[dict], add_generation_prompt: bool = True) -> str:
    """``messages`` in the plain template (as text), followed by the assistant's header when asked."""
    return "".join(_plain_turn(m) for m in messages) + ("Assistant:\n" if add_generation_prompt else "")


def chat_template(tokenizer) -> ChatTemplate:
    """The tokenizer's own chat template when it has one (a ``transformers`` tokenizer), else the plain one."""
    own = getattr(getattr(tokenizer, "tokenizer", None), "chat_template", None)
    return ChatTemplate(tokenizer, "hf" if own else PLAIN)


def response_end(template: ChatTemplate, text: str) -> str:
    """The answer in ``text`` (what follows the prompt): cut at the plain template's blank line; a tokenizer's
    own template ends with its EOS, which sampling cuts already."""
    if template.kind == PLAIN:
        cut = text.find("\n\n")
        return text if cut < 0 else text[:cut]
    return text


# ---------------------------------------------------------------- fixed-length examples
def pack_example(prompt: list[int], response: list[int], length: int, pad_id: int, padding: str):
    """``(ids, roles)`` (length,) each, or None when prompt and response do not fit in ``length`` tokens."""
    n = len(prompt) + len(response)
    if n > length or not response:
        return None
    ids = prompt + response + [pad_id] * (length - n)
    tail = RESPONSE if padding == "eos" else PAD
    roles = [PROMPT] * len(prompt) + [RESPONSE] * len(response) + [tail] * (length - n)
    return ids, roles


def pad_token(tokenizer) -> int:
    """What pads an example: the tokenizer's EOS, or the newline's token for a tokenizer without one."""
    if tokenizer.eos_id is not None:
        return tokenizer.eos_id
    ids = tokenizer.encode("\n")
    if len(ids) != 1:
        raise TokenDiffError("this tokenizer has no EOS and no one-token newline to pad examples with")
    return ids[0]


def check_chat_padding(padding: str) -> None:
    if padding not in CHAT_PADDINGS:
        raise TokenDiffError(f"data.chat_padding={padding!r} is unknown; use eos (LLaDA: scored) or mask")


def file_digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).read_bytes())
    return h.hexdigest()[:12]


def prepare_chat(
    paths: list[Path], out_dir: Path, tokenizer, length: int, padding: str = "mask", val_fraction: float = 0.1
) -> "PreparedChat":
    """Render, tokenize and pack the examples of ``paths`` into ``out_dir`` (built beside it, renamed in one
    step). The last ``val_fraction`` of the examples (at least one) are the validation split."""
    check_chat_padding(padding)
    template = chat_template(tokenizer)
    examples = [e for p in paths for e in read_chat_file(p)]
    pad_id = pad_token(tokenizer)
    packed, dropped = [], 0
    for messages in examples:
        row = pack_example(*template.example_ids(messages), length, pad_id, padding)
        dropped += row is None
        if row is not None:
            packed.append(row)
    if len(packed) < 2:
        raise TokenDiffError(
            f"{len(packed)} of {len(examples)} examples fit in model.block_size={length} tokens; fine-tuning needs "
            "at least 2 (one to validate): raise model.block_size or shorten the examples"
        )
    n_val = max(1, int(round(len(packed) * val_fraction)))
    splits = {"train": packed[:-n_val], "val": packed[-n_val:]}
    dtype = np.uint16 if tokenizer.vocab_size < 2**16 else np.uint32
    with staged_directory(Path(out_dir)) as tmp:
        meta_splits = {}
        for name, rows in splits.items():
            np.asarray([r[0] for r in rows], dtype=dtype).tofile(tmp / f"{name}.bin")
            np.asarray([r[1] for r in rows], dtype=np.uint8).tofile(tmp / f"{name}_roles.bin")
            scored = sum(sum(1 for role in r[1] if role == RESPONSE) for r in rows)
            meta_splits[name] = {"examples": len(rows), "tokens": len(rows) * length, "scored_tokens": scored}
        tokenizer.save(tmp)
        meta = {
            "format": "chat",
            "tokenizer": tokenizer.kind,
            "vocab_size": tokenizer.vocab_size,
            "dtype": np.dtype(dtype).name,
            "length": length,
            "padding": padding,
            "template": template.kind,
            "examples": len(examples),
            "dropped": dropped,
            "splits": meta_splits,
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    return PreparedChat(Path(out_dir))


@dataclass
class PreparedChat:
    """A prepared chat directory (the interface of :class:`~tokendiff.data.text.PreparedText`)."""

    root: Path

    @property
    def meta(self) -> dict:
        return json.loads((self.root / "meta.json").read_text())

    def split(self, name: str) -> "ChatSplit":
        meta = self.meta
        if name not in meta["splits"]:
            raise TokenDiffError(f"split {name!r} does not exist; use one of {sorted(meta['splits'])}")
        return ChatSplit(self.root, name, np.dtype(meta["dtype"]), meta["length"])

    def tokenizer(self):
        from tokendiff.data.tokenizers import load_tokenizer

        return load_tokenizer(self.root)


class ChatSplit:
    """The fixed-length examples of one split with their roles: random batches and evaluation windows, each
    ``(ids, roles)`` of shape (B, L) (int64, uint8)."""

    chars_per_token = None  # no bits per character: the scored text is the responses, not a corpus

    def __init__(self, root: Path, name: str, dtype: np.dtype, length: int):
        self.length = length
        self.path = root / f"{name}.bin"
        self.ids = np.memmap(self.path, dtype=dtype, mode="r").reshape(-1, length)
        self.roles = np.memmap(root / f"{name}_roles.bin", dtype=np.uint8, mode="r").reshape(-1, length)

    def __len__(self) -> int:
        return self.ids.size

    def _check(self, seq_len: int) -> None:
        if seq_len != self.length:
            raise TokenDiffError(
                f"these chat examples were prepared with {self.length} tokens each, but a window here is {seq_len}; "
                f"use model.block_size={self.length} (or prepare them again)"
            )

    def epoch_size(self, seq_len: int) -> int:
        self._check(seq_len)
        return self.ids.shape[0]

    def check_length(self, seq_len: int) -> None:
        self._check(seq_len)

    def batch(self, batch_size: int, seq_len: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``batch_size`` examples drawn uniformly (with replacement): ``(ids, roles)``, (B, L) each."""
        self._check(seq_len)
        rows = torch.randint(0, self.ids.shape[0], (batch_size,), generator=generator).numpy()
        return self._rows(rows)

    def windows(self, seq_len: int, max_windows: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The first examples (all, or ``max_windows``): ``(ids, roles)``, (N, L) each."""
        self._check(seq_len)
        n = self.ids.shape[0] if not max_windows else min(self.ids.shape[0], max_windows)
        return self._rows(np.arange(n))

    def prompt_ids(self, i: int) -> list[int]:
        """The prompt of example ``i`` (its ids up to the response)."""
        roles = np.asarray(self.roles[i])
        return [int(t) for t in np.asarray(self.ids[i])[roles == PROMPT]]

    def _rows(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.from_numpy(np.asarray(self.ids[rows], dtype=np.int64))
        roles = torch.from_numpy(np.asarray(self.roles[rows], dtype=np.uint8))
        return ids, roles
