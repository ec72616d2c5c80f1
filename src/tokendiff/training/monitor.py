"""What a run reports while it trains: the validation NELBO on fixed windows, and a few samples.

Both use the inference weights (EMA when enabled) in eval mode and put the model's mode back after.
"""

from __future__ import annotations

import contextlib

import torch
from accelerate.utils import gather_object

from tokendiff.evaluation.likelihood import evaluate_likelihood
from tokendiff.samplers.text import generate, sampling_options

__all__ = ["eval_line", "eval_record", "in_eval_mode", "nelbo_of_windows", "sample_texts"]


@contextlib.contextmanager
def in_eval_mode(model: torch.nn.Module):
    """``model`` in eval mode for the block, then back in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def nelbo_of_windows(
    model,
    objective,
    tokens,
    *,
    num_windows: int,
    seq_len: int,
    batch_size: int,
    seed: int,
    t_min: float,
    device,
    autocast,
    shard: tuple[int, int],
) -> dict:
    """The NELBO of ``num_windows`` windows of ``tokens`` drawn from ``seed``: the same windows every time,
    so that curves are comparable. ``shard`` (rank, world) splits them across processes, gathered after."""
    with in_eval_mode(model):
        windows = tokens.batch(num_windows, seq_len, torch.Generator().manual_seed(seed))
        result = evaluate_likelihood(
            model,
            objective,
            windows,
            num_draws=1,
            batch_size=batch_size,
            seed=seed,
            chars_per_token=tokens.chars_per_token,
            device=device,
            autocast=autocast,
            t_min=t_min,
            shard=shard,
            gather=gather_object,
        )
    return result.to_dict()


def sample_texts(
    model, kernel, tokenizer, sampling, *, num_samples: int, length: int, seed: int, device, prompt=None
) -> list[str]:
    """``num_samples`` samples of ``length`` tokens with the ``sampling`` section's options; ``prompt``: token
    ids every sample starts with (a chat run's validation prompt), or None."""
    with in_eval_mode(model):
        texts, _ = generate(
            model,
            kernel,
            tokenizer,
            num_samples=num_samples,
            length=length,
            seed=seed,
            device=device,
            prompt=prompt,
            **sampling_options(sampling),
        )
    return texts


def eval_record(step: int, val: dict, train: dict | None) -> dict:
    """The evaluation as the log, the checkpoints and ``tokendiff train``'s output record it."""
    return {
        "step": step,
        "val_loss": val["nelbo_nats_per_token"],
        "val_ppl": val["perplexity"],
        "val_bpc": val["bits_per_char"],
        "train_loss": train["nelbo_nats_per_token"] if train else None,
        "train_ppl": train["perplexity"] if train else None,
    }


def eval_line(step: int, val: dict) -> str:
    """The evaluation as one line for the user."""
    line = f"step {step}: val loss {val['nelbo_nats_per_token']:.4f} nats/token"
    if val["bits_per_char"] is not None:
        line += f", val bpc {val['bits_per_char']:.4f}, val ppl {val['perplexity']:.3f}"
    else:  # per sequence: of its scored tokens (a chat example's response)
        line += f" ({val['nelbo_nats_per_token'] * val['tokens_per_sequence']:.2f} nats/sequence)"
    return line
