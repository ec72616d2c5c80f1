"""One owner per rule: a value that a library constructor takes is checked by that constructor's rule, and the
config schema raises through the same rule rather than a copy of it (issue 26).

Each case below is one rule: a bad value given on the command line (through :func:`compose_config`, as the CLI
does) and the same value given to the constructor that needs it. Both must give the same one-line message, and
both must come from one source: with the source's check replaced by one that raises :class:`FromTheSource`,
the schema and the constructor both raise that. A copy of the rule in the schema (or in the constructor)
would refuse the value first with its own ``TokenDiffError``, and the test fails.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import pytest

import tokendiff.data.corruption as corruption
import tokendiff.models.transformer as transformer
import tokendiff.objectives.ambient.settings as ambient_settings
import tokendiff.objectives.rules as objective_rules
import tokendiff.samplers.settings as sampler_settings
from tokendiff.configs import compose_config
from tokendiff.configs.schema import AmbientConfig, SamplingConfig
from tokendiff.errors import TokenDiffError
from tokendiff.objectives import AmbientObjective, BlockDiffusionObjective, CleanObjective, NaiveObjective
from tokendiff.objectives.ambient.settings import AMBIENT_KEYS, AmbientSettings
from tokendiff.processes import AbsorbingKernel, HybridKernel, UniformKernel
from tokendiff.samplers.settings import SETTING_KEYS, SamplingSettings
from tokendiff.schedules import LogLinearSchedule


class FromTheSource(Exception):
    """Raised by the patched single source of a rule."""


def _raise_from_the_source(ok: bool, message: str) -> None:
    if not ok:
        raise FromTheSource(message)


def _kernel_from_the_source(self, *args, **kwargs):
    raise FromTheSource("HybridKernel")


class Rule(NamedTuple):
    overrides: list[str]  # the bad value as the CLI gives it
    construct: Callable[[], object]  # the same value given to the constructor that needs it
    source: tuple[object, str, Callable]  # (owner, attribute, replacement): the one place the rule is checked
    rename: Callable[[str], str] = lambda message: message  # the constructor's message as the schema names the key


def absorbing(eps: float = 1e-3):
    return AbsorbingKernel(4, LogLinearSchedule(eps=eps))


OBJECTIVES = (objective_rules, "_check", _raise_from_the_source)
AMBIENT = (ambient_settings, "_check", _raise_from_the_source)
SAMPLER = (sampler_settings, "_check", _raise_from_the_source)
HYBRID = (HybridKernel, "__init__", _kernel_from_the_source)


def _function_from_the_source(*args, **kwargs):
    raise FromTheSource("a rule's function")


CORRUPTION = (corruption, "check_observed_fraction", _function_from_the_source)
HEADS = (transformer, "check_heads", _function_from_the_source)
BLOCKS = (transformer, "check_block_diffusion", _function_from_the_source)

AMBIENT_BAD = {
    "consistency_weight": -1.0,
    "descent_steps": 0,
    "easy_fraction": 0.0,
    "hard_loss": "gibbs",
    "divergence": "l1",
    "hard_start": 1.0,
    "hard_batch": 2.0,
    "imputed_weight": -0.5,
    "impute_rounds": 0,
    "refresh": 1.5,
    "gibbs_share": 0.0,
    "consistency_reveal": 1.0,
    "consistency_max_masked": 0.0,
}
SAMPLER_BAD = {
    "steps": 0,
    "temperature": -1.0,
    "strategy": "random",
    "threshold": 2.0,
    "confidence": "max",
    "block_size": 0,
    "top_p": 0.0,
    "top_k": -1,
    "remask": "all",
    "remask_eta": 2.0,
    "kv_cache": "full",
    "time_grid": "log",
}

RULES = {
    **{
        f"ambient.{key}": Rule(
            [f"ambient.{key}={value}"],
            lambda key=key, value=value: AmbientObjective(absorbing(), 0.1, **{key: value}),
            AMBIENT,
        )
        for key, value in AMBIENT_BAD.items()
    },
    **{
        f"sampling.{key}": Rule(
            [f"sampling.{key}={value}"], lambda key=key, value=value: SamplingSettings(**{key: value}), SAMPLER
        )
        for key, value in SAMPLER_BAD.items()
    },
    # eps=0: alpha(1) = 0, so that q = 0 reaches the range rule alone when the source is patched
    "data.observed_fraction": Rule(
        ["data.observed_fraction=0.0"], lambda: AmbientObjective(absorbing(eps=0.0), 0.0), CORRUPTION
    ),
    "model.n_embd (RoPE head size)": Rule(
        ["model.n_embd=36", "model.n_head=4"],
        lambda: transformer.Transformer(4, n_layer=1, n_head=4, n_embd=36, block_size=8),
        HEADS,
    ),
    "diffusion.block_size dividing model.block_size": Rule(
        ["model.block_diffusion=true", "diffusion.block_size=5", "model.block_size=16"],
        lambda: transformer.Transformer(4, n_layer=1, n_head=2, n_embd=8, block_size=16, block_diffusion=5),
        BLOCKS,
    ),
    "diffusion.t_min (clean)": Rule(
        ["diffusion.t_min=1.0"], lambda: CleanObjective(absorbing(), t_min=1.0), OBJECTIVES
    ),
    "diffusion.t_min (naive)": Rule(
        ["diffusion.t_min=1.0"], lambda: NaiveObjective(absorbing(), t_min=1.0), OBJECTIVES
    ),
    "diffusion.t_min (ambient)": Rule(
        ["diffusion.t_min=-0.5"], lambda: AmbientObjective(absorbing(), 0.1, t_min=-0.5), OBJECTIVES
    ),
    "diffusion.estimator": Rule(
        ["diffusion.estimator=exact"], lambda: CleanObjective(absorbing(), estimator="exact"), OBJECTIVES
    ),
    "diffusion.estimator=count on uniform noise": Rule(
        ["diffusion.process=uniform", "diffusion.estimator=count"],
        lambda: CleanObjective(UniformKernel(4, LogLinearSchedule()), estimator="count"),
        OBJECTIVES,
    ),
    "model.block_diffusion=true on hybrid noise": Rule(
        ["model.block_diffusion=true", "diffusion.block_size=4", "diffusion.process=hybrid"],
        lambda: BlockDiffusionObjective(HybridKernel(4), 4),
        OBJECTIVES,
    ),
    "diffusion.block_size": Rule(
        ["model.block_diffusion=true", "diffusion.block_size=0"],
        lambda: BlockDiffusionObjective(absorbing(), 0),
        OBJECTIVES,
    ),
    "diffusion.p_uniform": Rule(
        ["diffusion.process=hybrid", "diffusion.p_uniform=1.0"], lambda: HybridKernel(4, p_uniform=1.0), HYBRID
    ),
    "diffusion.gamma": Rule(
        ["diffusion.process=hybrid", "diffusion.gamma=0.0"], lambda: HybridKernel(4, gamma=0.0), HYBRID
    ),
    # values of the eval section that the sampler takes: its rules, with the key the value came from
    "eval.visible_limit": Rule(
        ["eval.visible_limit=1.5"], lambda: SamplingSettings(visible_limit=1.5), SAMPLER, lambda m: "eval." + m
    ),
    "eval.visible_subsets": Rule(
        ["eval.visible_subsets=0"], lambda: SamplingSettings(visible_subsets=0), SAMPLER, lambda m: "eval." + m
    ),
    "eval.sampling_steps": Rule(
        ["eval.sampling_steps=0"],
        lambda: SamplingSettings(steps=0),
        SAMPLER,
        lambda m: m.replace("sampling.steps", "eval.sampling_steps"),
    ),
}


def _message(call) -> str:
    with pytest.raises(TokenDiffError) as info:
        call()
    return str(info.value)


@pytest.mark.parametrize("name", sorted(RULES))
def test_the_schema_and_the_constructor_give_one_message_for_a_bad_value(name):
    rule = RULES[name]
    from_cli, from_constructor = _message(lambda: compose_config(rule.overrides)), _message(rule.construct)
    assert from_cli == rule.rename(from_constructor)
    assert "\n" not in from_cli and any(from_cli.startswith(o.split("=")[0] + "=") for o in rule.overrides)


@pytest.mark.parametrize("name", sorted(RULES))
def test_the_schema_and_the_constructor_check_a_value_through_one_source(name, monkeypatch):
    # with the rule's one source replaced, both refuse the value through it: neither holds a copy of the rule
    rule = RULES[name]
    monkeypatch.setattr(*rule.source)
    with pytest.raises(FromTheSource):
        compose_config(rule.overrides)
    with pytest.raises(FromTheSource):
        rule.construct()


def test_the_hybrid_kernel_checks_its_values_only_where_it_is_the_kernel(monkeypatch):
    monkeypatch.setattr(*HYBRID)
    compose_config(["diffusion.p_uniform=1.0"])  # absorbing: p_uniform is not read, and not checked
    with pytest.raises(FromTheSource):
        compose_config(["diffusion.process=hybrid"])


def test_the_sections_hand_their_settings_whole_to_the_records_that_check_them():
    # the config sections build the constructors' settings records from their own fields (same names, same
    # defaults), so a rule added to a record applies to the CLI without a copy in the schema
    assert set(AMBIENT_KEYS) == {f.name for f in dataclasses.fields(AmbientConfig)}
    assert AmbientConfig().settings() == AmbientSettings()
    assert SamplingConfig().settings() == SamplingSettings()
    assert set(SETTING_KEYS) - {f.name for f in dataclasses.fields(SamplingConfig)} == {
        "visible_limit",
        "visible_subsets",
    }  # the eval section's, checked there by the sampler's rule (eval.visible_limit above)


def test_the_ambient_objective_keeps_the_settings_it_was_given():
    objective = AmbientObjective(absorbing(), 0.1, hard_loss="em", impute_rounds=3, refresh=0.5)
    assert objective.settings == AmbientSettings(hard_loss="em", impute_rounds=3, refresh=0.5)
    for key in AMBIENT_KEYS:
        if hasattr(objective, key):
            assert getattr(objective, key) == getattr(objective.settings, key), key
