"""What a command is given: Hydra overrides (``model.n_layer=6``, ``+experiment=medium``), and the
verbatim ``prompt=`` and ``template=``, which take the rest of their argument as it is, so that a prompt
may hold any character (commas, brackets, quotes) without Hydra's quoting rules."""

from __future__ import annotations

__all__ = ["VERBATIM_KEYS", "split_args", "load_config"]

VERBATIM_KEYS = ("prompt=", "template=")


def split_args(args: list[str]) -> tuple[list[str], dict]:
    """Separate Hydra overrides from the verbatim ``prompt=`` / ``template=`` values."""
    overrides, verbatim = [], {}
    for arg in args:
        key = next((k for k in VERBATIM_KEYS if arg.startswith(k)), None)
        if key:
            verbatim[key[:-1]] = arg[len(key) :]
        else:
            overrides.append(arg)
    return overrides, verbatim


def load_config(args: list[str]):
    """The config the arguments compose, and the Hydra overrides among them."""
    from tokendiff.configs import compose_config

    overrides, verbatim = split_args(args)
    cfg = compose_config(overrides)
    for key, value in verbatim.items():
        setattr(cfg, key, value)
    return cfg, overrides
