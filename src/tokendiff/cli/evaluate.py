"""``tokendiff eval`` (the likelihood bound on held-out data) and ``tokendiff score`` (sample quality)."""

from __future__ import annotations

from tokendiff.cli.arguments import load_config
from tokendiff.cli.output import strict_json
from tokendiff.errors import TokenDiffError

__all__ = ["cmd_eval", "cmd_score"]


def eval_weights_file(checkpoint, eval_cfg) -> str:
    """The weights ``eval.weights`` names, relative to the checkpoint directory."""
    from tokendiff.checkpoint import TRAINING_STATE, WEIGHTS, resolve_checkpoint

    if eval_cfg.weights == "ema":
        return WEIGHTS
    raw, ckpt = f"{TRAINING_STATE}/{WEIGHTS}", resolve_checkpoint(checkpoint)
    if not (ckpt / raw).exists():
        raise TokenDiffError(
            f"eval.weights=raw: {ckpt} has no {raw} (a checkpoint saved for sampling only); use eval.weights=ema"
        )
    return raw


def cmd_eval(args):
    from tokendiff.build import build_dataset, default_device, sequence_length
    from tokendiff.checkpoint import load_checkpoint
    from tokendiff.evaluation import evaluate_likelihood
    from tokendiff.pretrained import is_pretrained, model_overrides

    cfg, overrides = load_config(args)
    device = default_device(cfg.system.device)
    if not cfg.eval.data and is_pretrained(cfg.checkpoint):  # checked before loading a large model
        raise TokenDiffError(
            f"checkpoint={cfg.checkpoint} is a pretrained model, trained on no corpus tokendiff knows; give "
            "eval.data=<a prepared corpus, a known dataset such as shakespeare, or a text file>"
        )
    weights = eval_weights_file(cfg.checkpoint, cfg.eval)
    ckpt = load_checkpoint(
        cfg.checkpoint, device=device, weights_file=weights, model_options=model_overrides(cfg, overrides)
    )
    if cfg.eval.data and ckpt.tokenizer.kind == "binary_image":
        raise TokenDiffError("eval.data is for text models; an image model is evaluated on its own test set")
    if cfg.eval.data:  # zero-shot: another corpus, in the checkpoint's tokenizer (the data.* keys say how to read it)
        from tokendiff.data.corpora import resolve_eval_corpus

        d = cfg.data
        data = resolve_eval_corpus(cfg.eval.data, ckpt.tokenizer, d.data_dir, d.text_column, d.val_fraction, d.num_proc)
    else:
        data = build_dataset(ckpt.config)  # the corpus the model was trained on (prepared again if missing)
    if ckpt.tokenizer.kind == "binary_image":
        from tokendiff.evaluation.images import evaluate_images

        trained = ckpt.config  # the corruption the model was trained for (data.observed_fraction: 0.1 by default)
        out = evaluate_images(
            ckpt, data, cfg.eval, cfg.seed, device,
            training_objective=trained.diffusion.objective, observed_fraction=trained.data.observed_fraction,
        )  # fmt: skip
        print(strict_json(out, indent=2))
        return
    if data.tokenizer().fingerprint() != ckpt.tokenizer.fingerprint():
        raise TokenDiffError(
            f"the corpus prepared in {data.root} uses another tokenizer than {ckpt.path}; "
            "was the checkpoint's tokenizer replaced? use the files saved with the checkpoint"
        )
    split_name = cfg.eval.split or "val"
    split = data.split(split_name)
    seq_len = sequence_length(ckpt.config, ckpt.objective)
    windows = split.windows(seq_len, cfg.eval.max_windows)
    if len(windows[0] if isinstance(windows, tuple) else windows) == 0:  # chat examples: (ids, roles)
        raise TokenDiffError(f"the {split_name} split has fewer than {seq_len} tokens; nothing to evaluate")
    result = evaluate_likelihood(
        ckpt.model,
        ckpt.objective,
        windows,
        num_draws=cfg.eval.num_draws,
        batch_size=cfg.eval.batch_size,
        seed=cfg.seed,
        chars_per_token=split.chars_per_token,
        device=device,
        t_min=cfg.eval.t_min,
    )
    trained_on = ckpt.config.data
    out = {
        "checkpoint": str(ckpt.path),
        "step": ckpt.step,
        "data": cfg.eval.data or trained_on.input or trained_on.hf_path or trained_on.dataset,
        "split": split_name,
        "weights": cfg.eval.weights,
        **result.to_dict(),
    }
    print(strict_json(out, indent=2))


def cmd_score(args):
    from tokendiff.build import build_dataset, default_device
    from tokendiff.checkpoint import load_checkpoint
    from tokendiff.evaluation.samples import real_text_windows, text_quality
    from tokendiff.samples_file import read_samples

    cfg, _ = load_config(args)
    if not cfg.samples:
        raise TokenDiffError(
            "no samples given; pass samples=<file.jsonl written by tokendiff sample sampling.output=...>"
        )
    texts = read_samples(cfg.samples)
    device = default_device(cfg.system.device)
    ref = load_checkpoint(cfg.reference, device=device, what="reference")
    if ref.kernel is not None:
        raise TokenDiffError(f"reference={cfg.reference!r} is a diffusion model; give an autoregressive run")
    ids = [ref.tokenizer.encode(t) for t in texts]
    batch = cfg.eval.batch_size
    result = {"samples": cfg.samples, "reference": str(ref.path), "num_samples": len(texts)}
    result |= text_quality(ref.model, ids, device, batch)
    real = real_text_windows(build_dataset(ref.config).split("val"), ids)  # the yardstick
    result["real_text"] = text_quality(ref.model, real, device, batch)
    print(strict_json(result, indent=2))
