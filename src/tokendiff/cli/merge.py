"""``tokendiff merge``: a LoRA checkpoint's adapter folded into its base, written as a full-weights checkpoint."""

from __future__ import annotations

import copy
from pathlib import Path

from tokendiff.cli.arguments import load_config
from tokendiff.cli.output import strict_json
from tokendiff.errors import TokenDiffError

__all__ = ["cmd_merge"]


def cmd_merge(args):
    """Load ``checkpoint=`` (a LoRA checkpoint: its base, checked, and its adapter), merge the adapter into the
    base's weights (``W + (alpha / r) B A``) and write an ordinary checkpoint at ``output_dir=``: weights, config
    (``training.lora`` off), kernel and tokenizer, and ``model/`` for a transformers backbone. It samples and
    evaluates as any checkpoint and serves as ``training.init_from``; it holds no training state (no resume)."""
    from tokendiff.checkpoint import CONFIG, checkpoint_record, load_checkpoint, read_json, save_checkpoint
    from tokendiff.configs.sections.training import LoraSettings
    from tokendiff.configs import to_dict
    from tokendiff.training.lora import merge

    cfg, overrides = load_config(args)
    if not any(o.startswith("output_dir=") for o in overrides):
        raise TokenDiffError("tokendiff merge writes a new checkpoint: give output_dir=<a new directory>")
    ckpt = load_checkpoint(cfg.checkpoint, device="cpu")
    record = read_json(ckpt.path / CONFIG)
    if record.get("lora") is None:
        raise TokenDiffError(
            f"checkpoint={cfg.checkpoint} holds full weights, not a LoRA adapter: there is nothing to merge; sample "
            "or evaluate it as it is"
        )
    target = Path(cfg.output_dir).expanduser()
    if target.resolve() == ckpt.path.resolve() or ckpt.path.resolve().is_relative_to(target.resolve()):
        raise TokenDiffError(f"output_dir={cfg.output_dir} holds the checkpoint being merged; choose another directory")
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        if not cfg.overwrite:
            raise TokenDiffError(
                f"output_dir={cfg.output_dir} is not empty; choose a new directory, or add overwrite=true to replace "
                "the checkpoint there"
            )
        if not (target / CONFIG).exists():
            raise TokenDiffError(
                f"overwrite=true replaces a checkpoint, but output_dir={cfg.output_dir} holds none; choose an "
                "empty or new directory"
            )
    model = merge(ckpt.model)
    config = copy.deepcopy(record["config"])
    lora_settings = config["training"].get("lora")
    config["training"]["lora"] = to_dict(LoraSettings())  # r=0: the merged weights are all the model
    out = checkpoint_record(
        config, step=ckpt.step, tokenizer=ckpt.tokenizer, num_parameters=sum(p.numel() for p in model.parameters())
    )
    out["merged_from"] = {"checkpoint": str(ckpt.path.resolve()), "lora": lora_settings, **record["lora"]}
    export = (lambda d: model.export(d, ckpt.tokenizer)) if model.exports_pretrained else None
    path = save_checkpoint(
        target, config=out, weights=model.state_dict(), kernel=ckpt.kernel, tokenizer=ckpt.tokenizer, export=export
    )
    print(
        strict_json(
            {
                "merged": str(path),
                "from": str(ckpt.path),
                "base": record["lora"].get("base_checkpoint") or record["lora"].get("base_model"),
                "num_parameters": out["num_parameters"],
            },
            indent=2,
        )
    )
