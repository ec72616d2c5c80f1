"""How fine-tuned models answer, by the padding they were fine-tuned with (``data.chat_padding=eos`` or ``mask``).

For each ``--checkpoints`` run (fine-tuned with ``data.format=chat``), the first ``--prompts`` prompts of its
validation split are answered ``--samples`` times each, with ``tokendiff.samplers.text.generate`` in the chat
template (what ``tokendiff sample sampling.chat=true`` does), at each ``--lengths`` (a length past the model's
context is written block by block, ``--block``; at every length with ``--always-block``, as LLaDA samples).
Per run and length:

- ``format``: the share of answers in the play's layout, a speaker's name on its own line then words;
- ``ended``: the share of generations in which the answer ends (the template's end marker) within the length;
- ``answer_chars``: the answers' mean length; ``tail_newlines``: the share of newlines in what the model
  writes after its answer (1.0: padding only);
- ``repetition_4``, ``distinct_2``, ``unigram_entropy_bits`` of the answers (``tokendiff.evaluation.samples``,
  what ``tokendiff score`` prints), and, with ``--reference`` (an autoregressive run), their generative
  perplexity;
- ``nelbo``: the validation responses' NELBO per response token (``tokendiff eval``'s estimator).

Usage::

    python bench/sft_padding.py --checkpoints out/sft_eos out/sft_mask --reference out/ar_ref

Writes ``bench/results/sft_padding.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import torch

from tokendiff.build import build_dataset
from tokendiff.checkpoint import load_checkpoint
from tokendiff.data.chat import chat_template, response_end
from tokendiff.evaluation.likelihood import evaluate_likelihood
from tokendiff.evaluation.samples import text_quality, text_statistics
from tokendiff.samplers.text import generate

REPO = Path(__file__).resolve().parent.parent
SPEAKER = re.compile(r"^[A-Z][A-Za-z' ]*:\n\S")  # "ROMEO:\nwords"


def answers_of(
    ckpt, prompts, samples: int, length: int, block: int | None, strategy: str, temperature: float, always_block=False
):
    """(answers, tails, ended flags, seconds) of ``samples`` generations per prompt."""
    template = chat_template(ckpt.tokenizer)
    answers, tails, ended = [], [], []
    start = time.perf_counter()
    for i, prompt in enumerate(prompts):
        texts, _ = generate(
            ckpt.model, ckpt.kernel, ckpt.tokenizer, num_samples=samples, length=length, prompt=prompt, seed=i,
            steps=length, strategy=strategy, temperature=temperature,
            block_size=block if (length > ckpt.config.model.block_size or always_block) else None,
        )  # fmt: skip
        head = ckpt.tokenizer.decode(prompt)
        for text in texts:
            written = text[len(head) :]
            answer = response_end(template, written)
            answers.append(answer)
            ended.append(len(answer) < len(written))
            tails.append(written[len(answer) :])
    return answers, tails, ended, time.perf_counter() - start


def measure(ckpt, reference, args) -> dict:
    data = build_dataset(ckpt.config)
    val = data.split("val")
    n = min(args.prompts, val.ids.shape[0])
    prompts = [val.prompt_ids(i) for i in range(n)]
    L = ckpt.config.model.block_size
    ids, roles = val.windows(L)
    nelbo = evaluate_likelihood(ckpt.model, ckpt.objective, (ids, roles), num_draws=4, batch_size=32, seed=0)
    out = {
        "checkpoint": str(ckpt.path),
        "padding": ckpt.config.data.chat_padding,
        "nelbo_nats_per_response_token": nelbo.nelbo_nats_per_token,
        "nelbo_stderr": nelbo.nelbo_nats_per_token_stderr,
        "validation_examples": int(ids.shape[0]),
        "lengths": {},
    }
    for length in args.lengths:
        answers, tails, ended, seconds = answers_of(
            ckpt, prompts, args.samples, length, args.block, args.strategy, args.temperature, args.always_block
        )
        tok = ckpt.tokenizer
        answer_ids = [tok.encode(a) for a in answers if a]
        tail_chars = "".join(tails)
        row = {
            "samples": len(answers),
            "seconds": seconds,
            "format": sum(bool(SPEAKER.match(a)) for a in answers) / len(answers),
            "ended": sum(ended) / len(ended),
            "answer_chars": sum(len(a) for a in answers) / len(answers),
            "tail_newlines": tail_chars.count("\n") / len(tail_chars) if tail_chars else None,
            "examples": answers[:3],
        }
        stats = text_quality(reference.model, answer_ids) if reference is not None else text_statistics(answer_ids)
        row |= {k: v for k, v in stats.items() if k != "tokens"}
        out["lengths"][str(length)] = row
        shown = {k: v for k, v in row.items() if k != "examples"}
        print(json.dumps({"checkpoint": str(ckpt.path), "length": length, **shown}), flush=True)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoints", nargs="+", required=True)
    p.add_argument("--reference", default=None, help="an autoregressive run: the answers' generative perplexity")
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--lengths", type=int, nargs="+", default=[256, 512])
    p.add_argument("--block", type=int, default=128, help="block-wise sampling past the model's context")
    p.add_argument("--always-block", action="store_true", help="block-wise sampling at every length (LLaDA's way)")
    p.add_argument("--strategy", default="confidence")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "sft_padding.json"))
    args = p.parse_args()
    torch.manual_seed(0)
    reference = load_checkpoint(args.reference) if args.reference else None
    runs = [measure(load_checkpoint(c), reference, args) for c in args.checkpoints]
    settings = {k: v for k, v in vars(args).items() if k not in ("checkpoints", "out")}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"settings": settings, "runs": runs}, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
