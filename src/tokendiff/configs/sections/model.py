"""The ``model`` and ``diffusion`` sections: the backbone, and the kernel and objective it is trained with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from tokendiff.configs.sections.checks import check
from tokendiff.models import transformer as transformer_rules
from tokendiff.models.registry import BACKBONES
from tokendiff.objectives.rules import check_estimator, check_t_min
from tokendiff.processes.hybrid import HybridKernel

__all__ = ["ModelConfig", "DiffusionConfig", "kernel_needs_time", "kernel_words"]


@dataclass
class ModelConfig:
    """The backbone: the text transformer, a Hugging Face transformers model, or an image network."""

    arch: str = "transformer"  # transformer (tokens) | hf (transformers) | image_conv | image_patch (binary images)
    hf_name: Optional[str] = None  # arch=hf: pretrained weights (hub id or save_pretrained folder)
    hf_config: Optional[str] = None  # arch=hf: a config (hub id, folder or config.json) for fresh weights
    patch: int = 4  # image_patch: pixels per patch side (28 = 7 x 4)
    n_layer: int = 4  # transformer blocks
    n_head: int = 4  # attention heads; n_embd / n_head must be even (RoPE)
    n_embd: int = 256  # width
    block_size: int = 256  # sequence length the model is trained on
    dropout: float = 0.0
    causal: bool = False  # true: the autoregressive baseline (next-token loss, causal mask)
    # Any, not Optional[bool]: OmegaConf would refuse the word `auto` before __post_init__ sees it. Config
    # resolves null / auto to a bool, so a checkpoint's config.json always holds true or false.
    time_conditioning: Any = None  # null = auto (default): true iff the kernel needs t (uniform; hybrid, p_uniform>0)
    block_diffusion: bool = False  # true: BD3-LM, block-causal attention over blocks of diffusion.block_size
    # a2d: a diffusion LM adapted from an autoregressive one (training.init_from=<AR run>, or model.arch=hf with a
    # causal LM's hf_name): its weights, attention made bidirectional (Dream, DiffuLLaMA); none: as built
    adapt: str = "none"
    logit_shift: bool = False  # true: position i's token is read from position i-1's output (Dream; keeps an AR head)
    trust_remote_code: bool = False  # checkpoint= a pretrained folder with auto_map (LLaDA, Dream): run its own code
    # true: the transformer also takes its previous estimate of x0 (CDCD, DiffusionGemma): trained with a first pass
    # without gradient on half the steps, sampled with the previous step's estimate
    self_conditioning: bool = False

    def __post_init__(self):
        check(
            self.arch in BACKBONES,
            f"model.arch={self.arch!r} is unknown; use {', '.join(BACKBONES)} (tokendiff.models.registry)",
        )
        check(self.adapt in ("none", "a2d"), f"model.adapt={self.adapt!r} is unknown; use none or a2d")
        if isinstance(self.time_conditioning, str) and self.time_conditioning.lower() == "auto":  # as Hydra's bools
            self.time_conditioning = None
        check(
            self.time_conditioning is None or isinstance(self.time_conditioning, bool),
            f"model.time_conditioning={self.time_conditioning!r} is unknown; use true, false or auto (null: what "
            "the kernel needs)",
        )
        if self.arch == "hf":
            check(
                (self.hf_name is None) != (self.hf_config is None),
                "model.arch=hf needs exactly one of model.hf_name=<hub id or folder> (pretrained weights) or "
                f"model.hf_config=<hub id, folder or config.json> (fresh weights); got hf_name={self.hf_name!r}, "
                f"hf_config={self.hf_config!r}",
            )
        else:
            check(
                self.hf_name is None and self.hf_config is None,
                f"model.hf_name / model.hf_config apply to model.arch=hf (here model.arch={self.arch}); "
                "add model.arch=hf or drop them",
            )
        for name in ("n_layer", "n_head", "n_embd", "block_size"):
            check(getattr(self, name) >= 1, f"model.{name}={getattr(self, name)} must be >= 1")
        transformer_rules.check_heads(self.n_embd, self.n_head)  # the transformer's rule (RoPE)
        check(0.0 <= self.dropout < 1.0, f"model.dropout={self.dropout} must lie in [0, 1)")
        check(
            not (self.causal and self.time_conditioning),
            "model.causal=true has no diffusion time; set model.time_conditioning=false",
        )
        check(
            not self.self_conditioning or (self.arch == "transformer" and not self.causal and not self.block_diffusion),
            "model.self_conditioning=true is for tokendiff's bidirectional transformer (model.arch=transformer, not "
            f"causal, not block diffusion; here arch={self.arch}, causal={self.causal}, "
            f"block_diffusion={self.block_diffusion}); drop model.self_conditioning",
        )


@dataclass
class DiffusionConfig:
    """The forward kernel, its noise schedule and the training objective (ignored by the autoregressive
    baseline). ``scheduler_config.json`` in each checkpoint records the kernel in diffusers' fields."""

    process: str = "absorbing"  # absorbing (MDLM) | uniform (UDLM) | hybrid (GIDD: mask + uniform)
    objective: str = "clean"  # clean | naive (corrupted data as if clean) | ambient (easy + consistency)
    schedule: Optional[str] = None  # log_linear (default) | linear | cosine | geometric; hybrid has its own
    eps: float = 1e-3  # alpha(1) = eps (log_linear; linear and cosine run from 1 - eps to eps)
    sigma_min: float = 1e-4  # geometric: alpha(t) = exp(-sigma_min^(1-t) sigma_max^t)
    sigma_max: float = 20.0
    exclude_mask_from_uniform: bool = True  # uniform: noise tokens are real tokens, never the mask id
    p_uniform: float = 0.1  # hybrid: share of uniform noise at t = 1/2 (0 = masked diffusion)
    gamma: float = 1.0  # hybrid: shape of the uniform share over time, c_t ~ (t (1 - t))^(gamma/2)
    t_min: float = 1e-3  # training times t ~ U[t_min, 1] (see CleanObjective); eval has its own eval.t_min
    # training loss: time (t ~ U[t_min, 1], then the noise) | count (masks only: k ~ U{1..L}, weight L/k) |
    # bound (the whole NELBO as eval estimates it: importance times on (0, 1], t_min unused; the t = 0 term)
    estimator: str = "time"
    antithetic: bool = True  # low-discrepancy times within a batch
    block_size: Optional[int] = None  # model.block_diffusion=true: tokens per block (divides model.block_size)

    def __post_init__(self):
        check(
            self.process in ("absorbing", "uniform", "hybrid"),
            f"diffusion.process={self.process!r} is unknown; use absorbing, uniform or hybrid",
        )
        check_t_min(self.t_min)  # the objectives' rules (tokendiff.objectives.rules)
        check_estimator(self.estimator)
        check(
            self.objective in ("clean", "naive", "ambient"),
            f"diffusion.objective={self.objective!r} is unknown; use clean, naive or ambient",
        )
        check(
            not (self.process == "hybrid" and self.schedule is not None),
            f"diffusion.schedule={self.schedule!r} does not apply to diffusion.process=hybrid (GIDD has its own "
            "alpha(t), shaped by diffusion.p_uniform and diffusion.gamma); drop diffusion.schedule",
        )
        if self.process == "hybrid":  # p_uniform and gamma are the hybrid kernel's: its constructor has their rules
            HybridKernel(2, p_uniform=self.p_uniform, gamma=self.gamma)  # two tokens: a few bytes, raises or not


def kernel_words(d: DiffusionConfig) -> str:
    """``diffusion.process=...`` for a message, with the uniform share of a hybrid kernel."""
    share = f" with diffusion.p_uniform={d.p_uniform}" if d.process == "hybrid" else ""
    return f"diffusion.process={d.process}{share}"


def kernel_needs_time(d: DiffusionConfig) -> bool:
    """Whether the kernel of ``diffusion.*`` makes noise that looks like data, so that the denoiser must be told
    t (its ``time_conditioned``): uniform noise, and hybrid noise with a uniform share."""
    return d.process == "uniform" or (d.process == "hybrid" and d.p_uniform > 0)
