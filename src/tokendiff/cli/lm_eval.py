"""``tokendiff lm-eval``: a checkpoint scored by lm-evaluation-harness, in the key=value style of every command.

    tokendiff lm-eval checkpoint=out tasks=[td_choice,td_ppl] include_path=tasks/ output_path=results mc_num=8

Harness keys: ``tasks`` (required; ``[a,b]`` or ``a,b``), ``include_path``, ``output_path``, ``limit``,
``num_fewshot``, ``log_samples``, ``seed``. Every other key is a model argument of the ``tokendiff`` backend
(:class:`tokendiff.harness.settings.HarnessSettings`: ``mc_num``, ``batch_size``, ``greedy``, ``device``,
``dtype``, the sampler's ``steps``, ``strategy``, ``block_size``, ... also written ``sampling.steps``).
"""

from __future__ import annotations

from tokendiff.errors import TokenDiffError
from tokendiff.extras import require

__all__ = ["cmd_lm_eval", "HARNESS_KEYS"]

HARNESS_KEYS = ("tasks", "include_path", "output_path", "limit", "num_fewshot", "log_samples")


def _value(text: str):
    """A value as lm-eval's ``--model_args`` reads it: true/false, none, integers, floats, else the string."""
    from lm_eval.utils import handle_arg_string

    return handle_arg_string(text)


def parse_lm_eval_args(args: list[str]) -> tuple[dict, dict]:
    """``key=value`` arguments -> (harness options, model arguments)."""
    harness, model = {}, {}
    for arg in args:
        key, eq, text = arg.partition("=")
        if not eq or not key:
            raise TokenDiffError(f"argument {arg!r} is not key=value, e.g. tasks=[td_choice] or mc_num=32")
        key = key.removeprefix("sampling.").removeprefix("system.")
        if key == "tasks":
            names = [t.strip() for t in text.strip().removeprefix("[").removesuffix("]").split(",") if t.strip()]
            harness["tasks"] = names
        elif key in ("include_path", "output_path"):
            harness[key] = text
        elif key in HARNESS_KEYS:
            harness[key] = _value(text)
        else:
            model[key] = _value(text) if key != "checkpoint" else text
    if not harness.get("tasks"):
        raise TokenDiffError("no tasks given; pass tasks=[name,...] (lm-eval task names, or those in include_path=)")
    limit = harness.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, float)) or limit <= 0):
        raise TokenDiffError(f"limit={limit!r} must be a number > 0 (documents per task, or a share below 1)")
    return harness, model


def cmd_lm_eval(args):
    require("lm_eval", "tokendiff lm-eval")
    harness, model_args = parse_lm_eval_args(args)
    from tokendiff.harness.backend import TokendiffLM
    from tokendiff.harness.run import run_harness

    lm = TokendiffLM(**model_args)
    seed = lm.s.seed
    run_harness(
        lm, harness.pop("tasks"), **harness, seed=seed,
        model_args={"pretrained": lm.s.checkpoint, **{k: v for k, v in model_args.items() if k != "checkpoint"}},
    )  # fmt: skip
