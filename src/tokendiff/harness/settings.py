"""The ``tokendiff`` backend's model arguments (``--model_args checkpoint=out,mc_num=32,steps=64``), checked
once, with a one-line error naming the argument and the fix."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from tokendiff.errors import TokenDiffError
from tokendiff.samplers.settings import SamplingSettings

__all__ = ["HarnessSettings", "SAMPLER_ARGS", "harness_settings"]

# sampler settings a model argument may set (over the checkpoint's own sampling section)
SAMPLER_ARGS = tuple(f.name for f in dataclasses.fields(SamplingSettings) if not f.name.startswith("visible"))


@dataclass
class HarnessSettings:
    """What the backend does with a checkpoint; every field is a model argument of the same name."""

    checkpoint: str  # a run or checkpoint directory (``pretrained=`` is the same: lm-eval names folders by it)
    mc_num: int = 32  # Monte Carlo draws of a diffusion model's conditional NELBO per request
    batch_size: int = 32  # rows per model call (draws of one request; generations of equal-length contexts)
    seed: int = 0  # draws and generations depend on (seed, request) only
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "float32"  # float32 | bfloat16 (autocast) | auto (bfloat16 where its matmul is native)
    greedy: bool = True  # loglikelihood's is_greedy from the model's own greedy completion (false: skip, False)
    max_gen_toks: int = 256  # generate_until's length when the task gives none
    requests_file: str | None = None  # a JSON line per loglikelihood request: nats, standard error, draws
    sampling: dict = field(default_factory=dict)  # sampler settings over the checkpoint's (steps, strategy, ...)


def _integer(key: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise TokenDiffError(f"model argument {key}={value!r} must be an integer >= {low}")
    return value


def harness_settings(args: dict) -> HarnessSettings:
    """Check the model arguments ``args`` (lm-eval passes numbers and booleans already converted)."""
    args = {k: v for k, v in args.items() if v is not None}
    if "pretrained" in args:
        if "checkpoint" in args and args["checkpoint"] != args["pretrained"]:
            raise TokenDiffError("give checkpoint= or pretrained= (the same thing), not both")
        args["checkpoint"] = args.pop("pretrained")
    own = {f.name for f in dataclasses.fields(HarnessSettings)} - {"sampling"}
    unknown = sorted(set(args) - own - set(SAMPLER_ARGS))
    if unknown:
        raise TokenDiffError(
            f"unknown model argument {unknown[0]}={args[unknown[0]]!r}; the tokendiff backend takes "
            + ", ".join(sorted(own | set(SAMPLER_ARGS)))
        )
    if not args.get("checkpoint"):
        raise TokenDiffError("the tokendiff backend needs checkpoint=<a run or checkpoint directory>")
    sampling = {k: args.pop(k) for k in SAMPLER_ARGS if k in args}
    s = HarnessSettings(**args, sampling=sampling)
    s.checkpoint = str(s.checkpoint)
    _integer("mc_num", s.mc_num, 1)
    _integer("batch_size", s.batch_size, 1)
    _integer("seed", s.seed, 0)
    _integer("max_gen_toks", s.max_gen_toks, 1)
    if not isinstance(s.greedy, bool):
        raise TokenDiffError(f"model argument greedy={s.greedy!r} must be true or false")
    if s.dtype not in ("float32", "bfloat16", "auto"):
        raise TokenDiffError(f"model argument dtype={s.dtype!r} must be float32, bfloat16 or auto")
    SamplingSettings(**sampling)  # the sampler's own checks
    return s
