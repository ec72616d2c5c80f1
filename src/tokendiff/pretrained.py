"""Pretrained diffusion LMs from the Hugging Face world, loaded as tokendiff checkpoints.

``checkpoint=`` (``tokendiff sample``, ``eval``, ``demo``, ``lm-eval``) may name a folder written by
transformers' ``save_pretrained`` (a ``config.json`` with ``model_type`` / ``architectures``, the weights
and the tokenizer files) or a hub id (``owner/name``, downloaded by transformers when online). This module
reads such a source and returns a :class:`~tokendiff.checkpoint.LoadedCheckpoint`, so every command works
on it unchanged. The kinds it drives, told apart by ``config.json``:

1. a masked LM (any ``AutoModelForMaskedLM`` architecture: BERT, RoBERTa, ModernBERT, ...), its mask the
   tokenizer's;
2. a diffusion LM that ships its own modelling code (LLaDA, LLaDA2, Dream: ``auto_map`` in ``config.json``),
   run only with ``model.trust_remote_code=true``; its mask is the config's ``mask_token_id`` or the
   tokenizer's mask token, and its output's ``.logits`` (or a tuple's first element) are the logits;
3. DiffusionGemma (``model_type`` ``diffusion_gemma``), handed to
   ``tokendiff.models.diffusion_gemma.load_diffusion_gemma`` and sampled by its own canvas loop
   (:mod:`tokendiff.samplers.canvas`); ``tokendiff eval`` and the lm-eval backend refuse it (no bound of it
   is computed yet);
4. a causal LM whose weights were adapted to diffusion (DiffuGPT-style), with ``model.adapt=a2d``.

``model.logit_shift=true`` reads position ``i``'s token from position ``i - 1``'s logits (Dream's
convention; :class:`~tokendiff.models.hf.HFMaskedLM` shifts). ``model.block_size`` bounds the context
(default: the model's position table, at most :data:`MAX_BLOCK`).

The model becomes :class:`~tokendiff.models.hf.HFMaskedLM` (tokendiff's ids, mask last), under a
synthesized config: ``model.arch=hf`` with ``hf_name`` the source, ``data.tokenizer=hf`` with
``tokenizer_name`` the source, and masked diffusion (``diffusion.process=absorbing``, a linear schedule),
which is the kernel these models were trained with. The step is ``-1``: no tokendiff training.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from pathlib import Path

import torch

from tokendiff.errors import TokenDiffError, first_line

__all__ = ["MAX_BLOCK", "MODEL_KEYS", "is_pretrained", "load_pretrained", "model_overrides"]

MAX_BLOCK = 1024  # the default model.block_size: the model's position table, capped here (LLaDA's is 4096)
# the model.* keys a command line may set for a pretrained source (a tokendiff checkpoint has its own)
MODEL_KEYS = ("trust_remote_code", "logit_shift", "block_size", "adapt")
KINDS = (
    "a masked LM (AutoModelForMaskedLM: BERT, ModernBERT, ...), a diffusion LM with its own code (LLaDA, LLaDA2, "
    "Dream: model.trust_remote_code=true) or DiffusionGemma"
)
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # owner/name, as the hub spells model ids
_POSITION_KEYS = ("max_position_embeddings", "max_sequence_length", "n_positions", "seq_length")


def model_overrides(cfg, overrides: list[str]) -> dict:
    """The ``model.*`` settings of :data:`MODEL_KEYS` given on the command line (``overrides``), with the values
    the composed config ``cfg`` holds: what a pretrained source is loaded with (defaults are not given)."""
    given = {o.split("=", 1)[0].lstrip("+") for o in overrides}
    return {key: getattr(cfg.model, key) for key in MODEL_KEYS if f"model.{key}" in given}


def is_pretrained(path) -> bool:
    """Whether ``checkpoint=path`` names a transformers model rather than a tokendiff checkpoint or run: a folder
    whose ``config.json`` has ``model_type``, ``architectures`` or ``auto_map`` (and not tokendiff's record), or a
    hub id (``owner/name``) that is no local path. Reads one small file; imports nothing heavy."""
    if path is None:
        return False
    text = str(path)
    folder = Path(text).expanduser()
    if folder.is_dir():
        try:
            config = json.loads((folder / "config.json").read_text())
        except (OSError, ValueError):  # missing or damaged: a tokendiff checkpoint's loader says which
            return False
        return isinstance(config, dict) and "config" not in config and _names_a_model(config)
    if folder.exists() or text.startswith((".", "~")) or _HUB_ID.fullmatch(text) is None:
        return False
    return not Path(text.split("/")[0]).exists()  # runs/typo is a local path that is missing, not a hub id


def _names_a_model(config: dict) -> bool:
    return any(key in config for key in ("model_type", "architectures", "auto_map"))


def load_pretrained(source, device="cpu", options: dict | None = None, what: str = "checkpoint"):
    """A pretrained diffusion LM (a ``save_pretrained`` folder or a hub id) as a
    :class:`~tokendiff.checkpoint.LoadedCheckpoint` on ``device``.

    ``options``: ``model.*`` settings of :data:`MODEL_KEYS` (``trust_remote_code``, ``logit_shift``,
    ``block_size``, ``adapt``), e.g. from :func:`model_overrides`. ``what``: the argument's name in messages.
    """
    from tokendiff.build import build_kernel, build_model, build_objective
    from tokendiff.checkpoint import LoadedCheckpoint
    from tokendiff.configs import config_from_dict
    from tokendiff.extras import require

    transformers = require("transformers", "a pretrained model in checkpoint=")
    options = _checked_options(options or {})
    source = str(Path(str(source)).expanduser()) if Path(str(source)).expanduser().exists() else str(source)
    config = _read_config(transformers, source, what)
    model_type = str(config.get("model_type", ""))
    if model_type.startswith("diffusion_gemma"):
        return _load_diffusion_gemma(source, device, options, what)
    trust = options.get("trust_remote_code", False)
    kind = _kind(config, source, options, what)
    tokenizer = _tokenizer(transformers, source, config, trust)
    V = tokenizer.vocab_size  # the real tokens; tokendiff's mask is V
    settings = {
        "model": {
            "arch": "hf",
            "hf_name": source,
            "block_size": options.get("block_size") or _default_block(config),
            "logit_shift": options.get("logit_shift", False),
            "adapt": "a2d" if kind == "adapted" else "none",
            "trust_remote_code": trust,
            "time_conditioning": False,
        },
        "diffusion": {"process": "absorbing", "schedule": "linear"},  # masked diffusion, as these models are trained
        "data": {"tokenizer": "hf", "tokenizer_name": source},
        "checkpoint": source,
    }
    cfg = config_from_dict(settings, source=f"{what}={source}")
    if kind == "remote":
        model = _remote_model(transformers, source, cfg.model, tokenizer, what)
    else:  # the transformers classes load_hf_backbone knows: built as model.arch=hf builds them
        model = build_model(cfg, V, tokenizer)
    model.to(device).eval()
    kernel = build_kernel(cfg, V)
    objective = build_objective(cfg, kernel, V)
    return LoadedCheckpoint(Path(source), cfg, model, kernel, objective, tokenizer, -1)


def _checked_options(options: dict) -> dict:
    """The ``model.*`` settings for a pretrained source, each checked (lm-eval's model arguments arrive
    unchecked)."""
    unknown = sorted(set(options) - set(MODEL_KEYS))
    if unknown:
        raise TokenDiffError(
            f"model.{unknown[0]}={options[unknown[0]]!r} does not apply to a pretrained model; it takes "
            + ", ".join(f"model.{k}" for k in MODEL_KEYS)
        )
    for key in ("trust_remote_code", "logit_shift"):
        if key in options and not isinstance(options[key], bool):
            raise TokenDiffError(f"model.{key}={options[key]!r} must be true or false")
    block = options.get("block_size")
    if block is not None and (isinstance(block, bool) or not isinstance(block, int) or block < 1):
        raise TokenDiffError(f"model.block_size={block!r} must be an integer >= 1")
    if options.get("adapt", "none") not in ("none", "a2d"):
        raise TokenDiffError(f"model.adapt={options['adapt']!r} is unknown; use none or a2d")
    return options


@contextlib.contextmanager
def _quiet_hub():
    """huggingface_hub logs each retry of an unreachable server on its own line; a failure is said in one."""
    hub = logging.getLogger("huggingface_hub")
    level = hub.level
    hub.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hub.setLevel(level)


def _read_config(transformers, source: str, what: str) -> dict:
    """The raw ``config.json`` of a folder or hub id (the cached copy first: no network when it is there)."""
    if Path(source).is_dir():
        try:
            config = json.loads((Path(source) / "config.json").read_text())
        except (OSError, ValueError) as exc:
            raise TokenDiffError(f"{what}={source!r}: its config.json cannot be read ({exc})") from None
        return config
    import huggingface_hub

    read = transformers.PretrainedConfig.get_config_dict
    try:
        try:
            return read(source, local_files_only=True)[0]
        except OSError:
            if huggingface_hub.is_offline_mode():
                raise
        with _quiet_hub():
            return read(source)[0]
    except (OSError, ValueError) as exc:
        first = first_line(exc)
        raise TokenDiffError(
            f"{what}={source!r} is no local folder, and the Hugging Face hub does not give it now (offline, or no "
            f"such model: {first}); download it where the network is (hf download {source} --local-dir <folder>) "
            "and give the folder"
        ) from None


def _kind(config: dict, source: str, options: dict, what: str) -> str:
    """``masked``, ``remote`` or ``adapted``: how to drive the model ``config`` describes, or a one-line refusal."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    if not _names_a_model(config):
        raise TokenDiffError(
            f"{what}={source!r}: its config.json names no model (no model_type or architectures); give a tokendiff "
            "checkpoint or a folder written by transformers' save_pretrained"
        )
    if "auto_map" in config:
        if not options.get("trust_remote_code", False):
            raise TokenDiffError(
                f"{what}={source!r} runs its own modelling code (auto_map in its config.json); read it, then add "
                "model.trust_remote_code=true to run it"
            )
        return "remote"
    model_type, archs = config.get("model_type"), config.get("architectures") or []
    masked, causal = _class_names(MODEL_FOR_MASKED_LM_MAPPING_NAMES), _class_names(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)
    is_causal = any(a in causal or a.endswith("ForCausalLM") for a in archs) or (
        not archs and model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    )
    if options.get("adapt") == "a2d":
        if not is_causal:
            raise TokenDiffError(
                f"model.adapt=a2d runs a causal LM bidirectionally, but {what}={source!r} is "
                f"{', '.join(archs) or model_type}; drop model.adapt=a2d"
            )
        return "adapted"
    if any(a in masked for a in archs) or (not archs and model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES):
        return "masked"
    named = ", ".join(archs) or f"model_type {model_type!r}"
    if is_causal:
        raise TokenDiffError(
            f"{what}={source!r} is a causal LM ({named}), not a diffusion LM; tokendiff drives {KINDS}; for a causal "
            f"LM whose weights were adapted to diffusion add model.arch=hf model.hf_name={source} model.adapt=a2d"
        )
    raise TokenDiffError(
        f"{what}={source!r} is {named}, which has no masked LM head that tokendiff can drive; tokendiff drives {KINDS}"
    )


def _class_names(mapping) -> set[str]:
    names = set()
    for value in mapping.values():
        names.update([value] if isinstance(value, str) else value)
    return names


def _default_block(config: dict) -> int:
    """The context tokendiff uses: the model's position table, at most :data:`MAX_BLOCK` tokens."""
    limit = next((config[k] for k in _POSITION_KEYS if isinstance(config.get(k), int) and config[k] > 0), MAX_BLOCK)
    if "roberta" in str(config.get("model_type", "")) and isinstance(config.get("pad_token_id"), int):
        limit -= config["pad_token_id"] + 1  # RoBERTa's positions start after the padding id
    return min(limit, MAX_BLOCK)


def _tokenizer(transformers, source: str, config: dict, trust: bool):
    """The model's tokenizer in tokendiff's ids, its mask the config's ``mask_token_id`` (the id the model was
    trained with) or else the tokenizer's mask token; neither is a one-line refusal (no mask is appended: an
    untrained embedding row would be no mask the model knows)."""
    from tokendiff.data.hf_tokenizer import HFTokenizer

    try:
        tok = transformers.AutoTokenizer.from_pretrained(source, trust_remote_code=trust)
    except Exception as exc:  # a missing or damaged file surfaces as many kinds of error
        first = first_line(exc)
        raise TokenDiffError(
            f"the tokenizer of {source} could not be loaded ({first}); save it beside the model "
            "(tokenizer.save_pretrained(folder))"
        ) from None
    mask_id = config.get("mask_token_id")
    if isinstance(mask_id, int) and mask_id != tok.mask_token_id:  # the model's mask: make it the tokenizer's
        token = tok.convert_ids_to_tokens(mask_id) if 0 <= mask_id < len(tok) else None
        if token is None:
            raise TokenDiffError(
                f"{source}: the config's mask_token_id={mask_id} is no token of its tokenizer ({len(tok)} tokens); "
                "save the tokenizer the model was trained with beside it"
            )
        tok.add_special_tokens({"mask_token": token})
    if tok.mask_token_id is None:
        raise TokenDiffError(
            f"{source} has no mask token (none in its tokenizer, no mask_token_id in its config.json), so it is no "
            "masked diffusion LM; add the mask it was trained with to config.json as mask_token_id"
        )
    return HFTokenizer(tok, name=source)


class RemoteCodeLM(torch.nn.Module):
    """A model that ships its own code (LLaDA, Dream), seen as a transformers LM whose output has ``.logits``:
    its output's ``.logits``, or the first element of a tuple it returns, (B, L, V_hf)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    @property
    def config(self):
        return self.model.config

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    def save_pretrained(self, directory, **kwargs) -> None:
        self.model.save_pretrained(directory, **kwargs)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        from transformers.modeling_outputs import MaskedLMOutput

        if attention_mask is None:  # LLaDA-style models attend both ways by themselves
            out = self.model(input_ids=input_ids)
        else:
            out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        logits = out[0] if isinstance(out, tuple) else out.logits  # (B, L, V_hf)
        return MaskedLMOutput(logits=logits)


def _remote_model(transformers, source: str, m, tokenizer, what: str):
    """The model of a folder with ``auto_map`` (run with its own code), wrapped as :class:`HFMaskedLM`: the auto
    class is the first of masked LM, causal LM and plain model that its ``auto_map`` names."""
    from tokendiff.models.hf import HFMaskedLM

    config = transformers.AutoConfig.from_pretrained(source, trust_remote_code=True)
    auto_map = getattr(config, "auto_map", None) or {}
    names = ("AutoModelForMaskedLM", "AutoModelForCausalLM", "AutoModel")
    name = next((n for n in names if n in auto_map), None)
    if name is None:
        raise TokenDiffError(
            f"{what}={source!r}: the auto_map of its config.json names none of {', '.join(names)}; tokendiff "
            f"drives {KINDS}"
        )
    try:
        # float32 weights whatever the checkpoint's dtype, as load_hf_backbone does for model.arch=hf
        backbone = RemoteCodeLM(getattr(transformers, name).from_pretrained(source, trust_remote_code=True).float())
        V = tokenizer.vocab_size
        with torch.no_grad():
            logits = backbone.eval()(input_ids=torch.zeros(1, 2, dtype=torch.long)).logits
    except TokenDiffError:
        raise
    except Exception as exc:  # its own code may raise anything
        first = first_line(exc)
        raise TokenDiffError(
            f"{what}={source!r} could not be loaded or run with its own code ({type(exc).__name__}: {first}); "
            f"tokendiff drives {KINDS}"
        ) from None
    if not isinstance(logits, torch.Tensor) or logits.dim() != 3 or logits.shape[-1] < V + 1:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise TokenDiffError(
            f"{what}={source!r}: its {name} gives {shape} where tokendiff needs logits (B, L, >= {V + 1}) over its "
            f"tokens and mask; tokendiff drives {KINDS}"
        )
    return HFMaskedLM(backbone, V, tokenizer.hf_mask_id, m.block_size, logit_shift=m.logit_shift)


def _load_diffusion_gemma(source: str, device, options: dict, what: str = "checkpoint"):
    """DiffusionGemma (:func:`tokendiff.models.diffusion_gemma.load_diffusion_gemma`) as a ``LoadedCheckpoint``:
    a uniform-noise block model, sampled by its own canvas loop (:mod:`tokendiff.samplers.canvas`) and scored by
    the uniform block-diffusion NELBO over its canvases (``kernel``: uniform noise over the tokenizer's tokens,
    tokendiff's default schedule ``alpha(t) = 1 - (1 - 1e-3) t``; ``objective``: block diffusion with blocks of
    ``canvas_length``).

    Which schedule: the model takes no time input (it reads the noise level off the canvas), and the
    continuous-time NELBO of a time-agnostic denoiser depends on the schedule only through its end points
    ``alpha(0) = 1`` and ``alpha(1)`` (the rest is a change of the time variable), so any such schedule gives the
    same bound; it bounds ``-log p`` of the reverse process built from the model's two-pass self-conditioned
    denoiser (its prior term, ``alpha(1) = 1e-3``, is printed apart)."""
    from tokendiff.checkpoint import LoadedCheckpoint
    from tokendiff.configs import config_from_dict
    from tokendiff.models.diffusion_gemma import load_diffusion_gemma
    from tokendiff.objectives import BlockDiffusionObjective
    from tokendiff.processes import UniformKernel
    from tokendiff.schedules import make_schedule

    if not Path(source).is_dir():
        raise TokenDiffError(
            f"{what}={source!r}: DiffusionGemma loads from a folder; download it first "
            f"(huggingface-cli download {source} --local-dir <folder>) and pass the folder"
        )
    extra = sorted(k for k, v in options.items() if v and k != "block_size")
    if extra:
        raise TokenDiffError(
            f"{what}={source!r} is a DiffusionGemma model, which takes none of "
            f"{', '.join('model.' + k for k in extra)}; drop them"
        )
    model = load_diffusion_gemma(Path(source), device)
    if model.tokenizer is None:
        raise TokenDiffError(
            f"{what}={source!r} holds no tokenizer (tokenizer_config.json); save the model's tokenizer into the folder"
        )
    C = model.canvas_length
    # whole canvases after BOS (what tokendiff eval scores); sampling lengths are free
    block = options.get("block_size") or max(C, (min(model.block_size, MAX_BLOCK) - 1) // C * C)
    if block % C:
        raise TokenDiffError(
            f"model.block_size={block} is not a whole number of this DiffusionGemma's canvases of {C} tokens; use "
            f"{max(C, block // C * C)} (sampling.length sets the length of samples)"
        )
    settings = {
        "model": {"arch": "hf", "hf_name": source, "block_size": block, "time_conditioning": False},
        "data": {"tokenizer": "hf", "tokenizer_name": source},
        "checkpoint": source,
    }
    cfg = config_from_dict(settings, source=f"{what}={source}")
    # the config gives the commands their defaults (the length); its diffusion section (the default one) is not
    # the model's: a Hugging Face backbone config cannot name uniform noise, which needs a time input that
    # DiffusionGemma does without. The kernel is built here.
    kernel = UniformKernel(model.vocab_size, make_schedule("log_linear"))
    objective = BlockDiffusionObjective(kernel, C)
    return LoadedCheckpoint(Path(source), cfg, model, kernel, objective, model.tokenizer, -1)
