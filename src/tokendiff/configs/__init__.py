"""Hydra configuration: typed schema, presets (``+experiment=NAME``) and :func:`compose_config`."""

from __future__ import annotations

from hydra import compose, initialize_config_module
from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from tokendiff.configs.schema import Config
from tokendiff.errors import TokenDiffError

__all__ = [
    "Config",
    "compose_config",
    "compose_resume_config",
    "resume_target",
    "prefer_given_steps",
    "inherit_sampling",
    "config_from_dict",
    "record_kernel",
    "to_dict",
    "describe_keys",
    "presets",
]

ConfigStore.instance().store(name="tokendiff_schema", node=Config)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _valid_keys_hint(cause) -> str:
    """For a misspelt key, list the keys its section does have."""
    full_key = getattr(cause, "full_key", None)
    if not full_key or "not in" not in str(cause):
        return ""
    section = OmegaConf.structured(Config)
    for part in full_key.split(".")[:-1]:
        section = section.get(part) if part in section else None
        if section is None or not OmegaConf.is_dict(section):
            return ""
    return f" (valid keys here: {', '.join(section.keys())})"


def presets() -> list[str]:
    """The names ``+experiment=`` accepts: the YAML files in ``configs/experiment/``."""
    from importlib.resources import files

    return sorted(
        p.name[: -len(".yaml")]
        for p in files("tokendiff.configs").joinpath("experiment").iterdir()
        if p.name.endswith(".yaml")
    )


def compose_config(overrides: list[str]) -> Config:
    """Compose ``config.yaml`` with Hydra overrides (``model.n_layer=6``, ``+experiment=medium``)."""
    try:
        with initialize_config_module(config_module="tokendiff.configs", version_base="1.3"):
            try:
                cfg = compose(config_name="config", overrides=list(overrides))
            except ValueError as exc:  # Hydra's check of an override without a key (`=3`) raises a bare ValueError
                raise TokenDiffError(
                    f"bad configuration: {_first_line(exc)}; write key=value, e.g. model.n_layer=6"
                ) from None
        return OmegaConf.to_object(cfg)
    except (HydraException, OmegaConfBaseException) as exc:
        message = _first_line(exc)
        if exc.__cause__ is not None:
            message += f": {_first_line(exc.__cause__)}"
        message += _valid_keys_hint(exc.__cause__)
        if "experiment" in message and ("Could not find" in message or "not found" in message):
            message += f" (presets: +experiment={'|'.join(presets())})"
        raise TokenDiffError(f"bad configuration: {message}") from None


def resume_target(overrides: list[str]) -> str | None:
    """The run or checkpoint that ``resume=`` names (None: a new run).

    A resumed run continues in its own run directory with its own model, so ``output_dir=``, ``model.*=`` and
    ``training.lora.*=`` beside ``resume=`` are refused rather than ignored.
    """
    resume = next((o.split("=", 1)[1] for o in overrides if o.startswith("resume=")), None)
    if resume:
        if any(o.startswith("output_dir=") for o in overrides):
            raise TokenDiffError("a resumed run continues in its own run directory; drop output_dir=")
        changed = [o.split("=", 1)[0] for o in overrides if o.startswith("model.")]
        if changed:
            raise TokenDiffError(f"a resumed run keeps its model; drop {changed[0]}= (or start a new run)")
        changed = [o.split("=", 1)[0] for o in overrides if o.lstrip("+~").startswith("training.lora.")]
        if changed:
            raise TokenDiffError(f"a resumed run keeps its LoRA adapters; drop {changed[0]}= (or start a new run)")
    return resume


def compose_resume_config(saved: Config, overrides: list[str], checkpoint=None) -> Config:
    """A resumed run's config: the saved one with the command line's ``key=value`` overrides on top
    (``resume=`` aside); ``resume`` records ``checkpoint``, the checkpoint directory resumed from.

    A preset (``+experiment=...``) cannot be re-applied to a run that already has one.
    """
    overrides = [o for o in overrides if not o.startswith("resume=")]
    if any(o.startswith("+") for o in overrides):
        raise TokenDiffError("a resumed run keeps its preset; drop +experiment=... when passing resume=")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(saved), OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as exc:
        raise TokenDiffError(f"bad override with resume=: {_first_line(exc)}") from None
    cfg = config_from_dict(OmegaConf.to_container(merged))
    if checkpoint is not None:
        cfg.resume = str(checkpoint)
    return cfg


def prefer_given_steps(cfg: Config, overrides: list[str]) -> Config:
    """An explicit ``training.max_iters=`` wins over a preset's (or a resumed run's) ``training.n_epochs``,
    which would otherwise derive the step count from the corpus size."""
    if any(o.startswith("training.max_iters=") for o in overrides):
        cfg.training.n_epochs = None
    return cfg


def inherit_sampling(cfg: Config, overrides: list[str], saved: Config) -> None:
    """Sampling settings the user did not give on the command line come from the checkpoint's config
    (a preset's ``sampling.steps: 40`` stays 40). What to make and where to write it (``sampling.inpaint``,
    ``sampling.output``, ``sampling.trajectory``) is always this command's own."""
    from dataclasses import fields

    given = {o.split("=", 1)[0].lstrip("+") for o in overrides}
    for f in fields(saved.sampling):
        if f"sampling.{f.name}" not in given and f.name not in ("trajectory", "output", "inpaint"):
            setattr(cfg.sampling, f.name, getattr(saved.sampling, f.name))


def to_dict(cfg: Config) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)


def config_from_dict(data: dict, source: str = "config.json") -> Config:
    """Rebuild a typed config from ``config.json`` (unknown keys are an error, missing ones default)."""
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), data))
    except OmegaConfBaseException as exc:
        raise TokenDiffError(f"{source} does not match this version of tokendiff: {_first_line(exc)}") from None
    except TokenDiffError as exc:  # a value that the schema's checks refuse
        raise TokenDiffError(f"{source}: {exc}") from None


def record_kernel(cfg: Config, kernel) -> Config:
    """A copy of ``cfg`` whose ``diffusion.*`` say what ``kernel`` is (its :meth:`diffusion_settings`): the
    config a checkpoint is loaded (and a run resumed) with, where ``scheduler_config.json`` is the record of the
    kernel. The other settings are ``cfg``'s, unchecked again (the kernel was checked against them)."""
    import copy

    recorded = copy.deepcopy(cfg)
    for key, value in kernel.diffusion_settings().items():
        setattr(recorded.diffusion, key, value)
    return recorded


def describe_keys(sections: list[str], top_level: list[str]) -> str:
    """``key=default  comment`` lines for the given config sections and top-level keys, read from the
    schema's dataclasses (the comment beside each field is its documentation)."""
    import dataclasses
    import inspect
    import re

    from tokendiff.configs import schema

    def lines_of(obj, prefix: str, names=None) -> list[str]:
        comments = dict(re.findall(r"^\s+(\w+): [^=\n]+=[^#\n]*#\s*(.*)$", inspect.getsource(type(obj)), re.M))

        def default(f):  # the declared default: Config() has resolved auto values (time_conditioning) already
            value = f.default if f.default is not dataclasses.MISSING else getattr(obj, f.name)
            return "auto" if value is None and "auto" in comments.get(f.name, "") else value

        lines = []
        for f in dataclasses.fields(obj):
            if names is not None and f.name not in names:
                continue
            if dataclasses.is_dataclass(getattr(obj, f.name)):  # a nested section (training.lora.*)
                lines += lines_of(getattr(obj, f.name), f"{prefix}{f.name}.")
            else:
                lines.append(f"  {prefix + f.name + '=' + str(default(f)):<40} {comments.get(f.name, '')}".rstrip())
        return lines

    config, out = schema.Config(), []
    for section in sections:
        obj = getattr(config, section)
        doc = type(obj).__doc__ or ""
        title = "" if doc.startswith(type(obj).__name__ + "(") else doc.strip().splitlines()[0]
        out += [f"{section}.*  {title}".rstrip(), *lines_of(obj, f"{section}.")]
    if top_level:
        out += ["top level", *lines_of(config, "", set(top_level))]
    return "\n".join(out)
