"""The backbone registry: every ``model.arch`` name is a Backbone built from the config by its own class."""

import pytest
import torch

from tokendiff.build import build_model
from tokendiff.configs import compose_config
from tokendiff.errors import TokenDiffError
from tokendiff.models.base import Backbone
from tokendiff.models.registry import BACKBONES, backbone_class


@pytest.mark.parametrize("arch", sorted(BACKBONES))
def test_every_registered_name_is_a_backbone_built_from_the_config(arch):
    cls = backbone_class(arch)
    assert issubclass(cls, Backbone) and callable(cls.from_config)


@pytest.mark.parametrize(
    "overrides",
    [
        ["model.n_layer=1", "model.n_embd=16", "model.n_head=2", "model.block_size=8"],
        ["model.n_layer=1", "model.n_embd=16", "model.n_head=2", "model.block_size=8", "model.causal=true"],
        ["+experiment=mnist", "model.arch=image_conv", "model.n_layer=1", "model.n_embd=8"],
        ["+experiment=mnist", "model.arch=image_patch", "model.n_layer=1", "model.n_embd=16", "model.n_head=2"],
    ],
)
def test_build_model_gives_the_registered_class_with_the_configured_sizes(overrides):
    cfg = compose_config(overrides)
    model = build_model(cfg, vocab_size=5)
    assert type(model) is backbone_class(cfg.model.arch)
    assert model.causal == cfg.model.causal and model.time_conditioning == cfg.model.time_conditioning
    x = torch.zeros(2, cfg.model.block_size, dtype=torch.long)
    t = torch.full((2,), 0.5) if model.time_conditioning else None
    assert model(x, t).shape == (2, cfg.model.block_size, 5)


def test_an_unknown_arch_names_every_registered_backbone():
    with pytest.raises(TokenDiffError) as info:
        compose_config(["model.arch=mamba"])
    message = str(info.value)
    assert "model.arch='mamba' is unknown" in message and all(name in message for name in BACKBONES)
