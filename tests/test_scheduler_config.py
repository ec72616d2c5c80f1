"""scheduler_config.json against the constructors of diffusers' token-diffusion schedulers.

diffusers is not a dependency (the schedulers are not in a release as of diffusers 0.42.1), so each
constraint of their ``__init__`` is restated here from the source, with the file it comes from:

- ``src/diffusers/schedulers/scheduling_token_diffusion.py`` (``TokenDiffusionScheduler.__init__``)::

      if vocab_size <= 0: raise ...
      if num_train_timesteps <= 1: raise ...
      if not (0.0 < eps < 1.0): raise ...
      if not (0 <= mask_token_id < vocab_size): raise ...
      alpha_schedule = str(alpha_schedule).lower()
      if alpha_schedule not in {"log_linear", "linear", "cosine", "geometric"}: raise ...
      if sigma_min <= 0 or sigma_max <= 0: raise ...
      if sigma_max <= sigma_min: raise ...
      if forward_process not in {"absorbing", "uniform"}: raise ...

  (``_alpha_t`` dispatches on the *stored* string, so it must already be lower case.)

- ``src/diffusers/schedulers/scheduling_hybrid_token_diffusion.py`` (``HybridTokenDiffusionScheduler.__init__``)::

      if vocab_size <= 0: raise ...
      if not (0 <= mask_token_id < vocab_size): raise ...
      if num_train_timesteps <= 1: raise ...
      if not (0.0 < t_eps < 0.5): raise ...
      if gamma <= 0: raise ...
      log_B = gamma * math.log(2.0) + math.log(p_uniform) - math.log(1.0 - p_uniform)   # p_uniform < 1

Both take ``vocab_size`` and ``mask_token_id`` without defaults; ``ConfigMixin.from_config`` passes the
keys that match ``__init__`` arguments and ignores the others.
"""

import math

import pytest
import torch

from tokendiff.processes import AbsorbingKernel, HybridKernel, UniformKernel, kernel_from_config
from tokendiff.schedules import SCHEDULES, make_schedule

TOKEN_DIFFUSION_ARGS = {
    "vocab_size",
    "mask_token_id",
    "num_train_timesteps",
    "alpha_schedule",
    "eps",
    "sigma_min",
    "sigma_max",
    "forward_process",
    "exclude_mask_from_uniform",
}
HYBRID_ARGS = {"vocab_size", "mask_token_id", "num_train_timesteps", "t_eps", "p_uniform", "clip_noise", "gamma"}


def check_token_diffusion(c: dict) -> None:
    assert c["_class_name"] == "TokenDiffusionScheduler"
    assert TOKEN_DIFFUSION_ARGS <= set(c)
    assert isinstance(c["vocab_size"], int) and c["vocab_size"] > 0
    assert c["num_train_timesteps"] > 1
    assert 0.0 < c["eps"] < 1.0
    assert isinstance(c["mask_token_id"], int) and 0 <= c["mask_token_id"] < c["vocab_size"]
    assert c["alpha_schedule"] in {"log_linear", "linear", "cosine", "geometric"}  # lower case as stored
    assert c["sigma_min"] > 0 and c["sigma_max"] > 0 and c["sigma_max"] > c["sigma_min"]
    assert c["forward_process"] in {"absorbing", "uniform"}
    assert isinstance(c["exclude_mask_from_uniform"], bool)


def check_hybrid(c: dict) -> None:
    assert c["_class_name"] == "HybridTokenDiffusionScheduler"
    assert HYBRID_ARGS <= set(c)
    assert isinstance(c["vocab_size"], int) and c["vocab_size"] > 0
    assert isinstance(c["mask_token_id"], int) and 0 <= c["mask_token_id"] < c["vocab_size"]
    assert c["num_train_timesteps"] > 1
    assert 0.0 < c["t_eps"] < 0.5
    assert c["gamma"] > 0
    assert 0.0 <= c["p_uniform"] < 1.0


KERNELS = {
    **{f"absorbing-{name}": (lambda name=name: AbsorbingKernel(65, make_schedule(name))) for name in sorted(SCHEDULES)},
    "uniform": lambda: UniformKernel(65, make_schedule("log_linear")),
    "uniform-with-mask": lambda: UniformKernel(65, make_schedule("cosine"), exclude_mask_from_uniform=False),
    "hybrid": lambda: HybridKernel(65, p_uniform=0.1, gamma=1.0),
    "hybrid-masking": lambda: HybridKernel(65, p_uniform=0.0),
}


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_every_kernel_writes_a_config_diffusers_accepts_and_reads_it_back(name):
    kernel = KERNELS[name]()
    config = kernel.to_config()
    (check_hybrid if name.startswith("hybrid") else check_token_diffusion)(config)
    # the mask is the last id diffusers counts: our 65 real tokens + the mask
    assert config["vocab_size"] == 66 and config["mask_token_id"] == 65
    again = kernel_from_config(config)
    assert type(again) is type(kernel) and again.to_config() == config
    t = torch.linspace(0.05, 0.95, 7, dtype=torch.float64)
    torch.testing.assert_close(again.alpha(t), kernel.alpha(t))


def diffusers_alpha(name: str, t: torch.Tensor, eps=1e-3, sigma_min=1e-4, sigma_max=20.0) -> torch.Tensor:
    """``TokenDiffusionScheduler._alpha_t``, restated from scheduling_token_diffusion.py."""
    if name == "log_linear":
        return 1.0 - (1.0 - eps) * t
    if name == "linear":
        return (1.0 - 2.0 * eps) * (1.0 - t) + eps
    if name == "cosine":
        return (1.0 - 2.0 * eps) * (1.0 - torch.cos(torch.pi / 2.0 * (1.0 - t))) + eps
    if name == "geometric":
        return (-(sigma_min ** (1.0 - t)) * (sigma_max**t)).exp()
    raise AssertionError(name)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_a_schedule_named_like_a_diffusers_one_computes_the_same_alpha(name):
    t = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0], dtype=torch.float64)
    torch.testing.assert_close(make_schedule(name).alpha(t), diffusers_alpha(name, t), rtol=1e-12, atol=1e-15)


def test_hybrid_marginals_are_diffusers_get_alpha_betapi():
    # HybridTokenDiffusionScheduler._get_alpha_betapi, restated: c_t = B t^(g/2) (1-t)^(g/2),
    # B = 2^g p / (1 - p), alpha = (1 - t)/C_t, beta*pi = (t mask + c_t unif)/C_t, unif over the non-mask ids
    V, p, gamma = 65, 0.2, 1.5
    kernel = HybridKernel(V, p_uniform=p, gamma=gamma)
    t = torch.tensor([0.05, 0.1, 0.5, 0.9, 0.95], dtype=torch.float64)
    B = math.exp(gamma * math.log(2.0) + math.log(p) - math.log(1.0 - p))
    c = t.pow(gamma / 2) * (1 - t).pow(gamma / 2) * B
    C = 1 + c
    mask = torch.zeros(V + 1, dtype=torch.float64)
    mask[V] = 1.0
    unif = (1.0 - mask) / V
    torch.testing.assert_close(kernel.alpha(t), (1 - t) / C)
    torch.testing.assert_close(kernel.noise(t), (t[:, None] * mask + c[:, None] * unif) / C[:, None])
    # p_uniform is the probability of a uniform token at t = 1/2
    half = kernel.noise(torch.tensor([0.5], dtype=torch.float64))[0, :V].sum().item()
    assert half == pytest.approx(p)


def test_our_constructor_arguments_are_diffusers_names():
    # the fields tokendiff reads back are the constructor arguments of the diffusers classes (plus
    # _class_name); a field of ours that diffusers lacks would need a name diffusers does not use
    assert set(AbsorbingKernel(3, make_schedule("log_linear")).to_config()) - {"_class_name"} == TOKEN_DIFFUSION_ARGS
    assert set(UniformKernel(3, make_schedule("log_linear")).to_config()) - {"_class_name"} == TOKEN_DIFFUSION_ARGS
    assert set(HybridKernel(3).to_config()) - {"_class_name"} == HYBRID_ARGS


TOKEN = {"_class_name": "TokenDiffusionScheduler", "vocab_size": 66, "mask_token_id": 65}
HYBRID = {"_class_name": "HybridTokenDiffusionScheduler", "vocab_size": 66, "mask_token_id": 65}
DAMAGED = {
    "not an object": ([1, 2], "is not a JSON object"),
    "no class name": ({**TOKEN, "_class_name": None, "forward_process": "absorbing"}, "_class_name=None"),
    "another class": ({**TOKEN, "_class_name": "DDPMScheduler", "forward_process": "absorbing"}, "'DDPMScheduler'"),
    "unknown process": ({**TOKEN, "forward_process": "gaussian"}, "forward_process='gaussian'"),
    "hybrid's process under the token class": ({**TOKEN, "forward_process": "hybrid"}, "forward_process='hybrid'"),
    "mask not last": ({**TOKEN, "forward_process": "absorbing", "mask_token_id": 3}, "mask as the last id"),
    "vocabulary as a boolean": ({**TOKEN, "forward_process": "absorbing", "vocab_size": True}, "vocab_size=True"),
    "no real token": ({**TOKEN, "forward_process": "absorbing", "vocab_size": 1, "mask_token_id": 0}, "vocab_size=1"),
    "uniform over one token": (
        {**TOKEN, "forward_process": "uniform", "vocab_size": 2, "mask_token_id": 1},
        "vocab_size=2",
    ),
    "unknown schedule": ({**TOKEN, "forward_process": "uniform", "alpha_schedule": "x"}, "alpha_schedule='x'"),
    "format 1 schedule name": ({**TOKEN, "forward_process": "absorbing", "alpha_schedule": "loglinear"}, "'loglinear'"),
    "eps above one": ({**TOKEN, "forward_process": "absorbing", "eps": 2.0}, "eps=2.0"),
    "eps as a word": ({**TOKEN, "forward_process": "absorbing", "eps": "small"}, "eps='small'"),
    "eps not a number": ({**TOKEN, "forward_process": "absorbing", "eps": float("nan")}, "eps=nan"),
    "sigma_min of 0": ({**TOKEN, "forward_process": "absorbing", "sigma_min": 0}, "sigma_min=0"),
    "sigma_max below sigma_min": ({**TOKEN, "forward_process": "absorbing", "sigma_max": 1e-5}, "sigma_max=1e-05"),
    "exclude as a word": (
        {**TOKEN, "forward_process": "uniform", "exclude_mask_from_uniform": "false"},
        "exclude_mask_from_uniform='false'",
    ),
    "gamma of 0": ({**HYBRID, "gamma": 0}, "gamma=0"),
    "gamma infinite": ({**HYBRID, "gamma": float("inf")}, "gamma=inf"),
    "p_uniform of 1": ({**HYBRID, "p_uniform": 1.0}, "p_uniform=1.0"),
    "t_eps of 0.7": ({**HYBRID, "t_eps": 0.7}, "t_eps=0.7"),
}


@pytest.mark.parametrize("case", sorted(DAMAGED))
def test_a_damaged_scheduler_config_is_one_line_naming_the_file_and_its_field(case):
    # the value is reported as the file spells it, never as the diffusion.* key a config would have used
    from tokendiff.errors import TokenDiffError

    config, needle = DAMAGED[case]
    with pytest.raises(TokenDiffError) as info:
        kernel_from_config(config, "run/final/scheduler_config.json")
    message = str(info.value)
    assert message.startswith("run/final/scheduler_config.json") and needle in message, message
    assert "diffusion." not in message and "\n" not in message
    assert "put back" in message


def test_the_class_name_error_lists_the_classes_tokendiff_reads():
    from tokendiff.errors import TokenDiffError

    with pytest.raises(TokenDiffError, match="TokenDiffusionScheduler: absorbing or uniform.*Hybrid"):
        kernel_from_config({**TOKEN, "_class_name": "TokenDiffusionSchedular", "forward_process": "absorbing"})


def write_scheduler(tmp_path, kernel):
    import json

    (tmp_path / "scheduler_config.json").write_text(json.dumps({**kernel.to_config(), "tokendiff_version": "x"}))


NEEDS_TIME = {
    "uniform": (lambda: UniformKernel(65, make_schedule("log_linear")), "says forward_process=uniform"),
    "hybrid": (
        lambda: HybridKernel(65, p_uniform=0.1),
        "says _class_name=HybridTokenDiffusionScheduler with p_uniform=0.1",
    ),
}


@pytest.mark.parametrize("kernel", sorted(NEEDS_TIME))
def test_a_kernel_that_needs_t_on_a_time_agnostic_model_is_refused_naming_both_files(kernel, tmp_path):
    # training refuses this pair, so loading does too: the sampler would feed t to a model that ignores it
    from tokendiff.checkpoint import read_kernel
    from tokendiff.configs import Config
    from tokendiff.errors import TokenDiffError

    make, says = NEEDS_TIME[kernel]
    write_scheduler(tmp_path, make())
    with pytest.raises(TokenDiffError) as info:
        read_kernel(tmp_path, Config(), 65)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'scheduler_config.json'} {says}, which needs a time-conditioned model")
    assert f"but {tmp_path / 'config.json'} has model.time_conditioning=false" in message
    assert message.endswith("put back the scheduler_config.json saved with the checkpoint")


def test_time_agnostic_kernels_load_on_either_model(tmp_path):
    # masks (and hybrid without its uniform share) need no t; a time-conditioned model may still be told it
    from tokendiff.checkpoint import read_kernel
    from tokendiff.configs import record_kernel
    from tokendiff.configs.schema import Config, ModelConfig

    for kernel in (AbsorbingKernel(65, make_schedule("cosine")), HybridKernel(65, p_uniform=0.0)):
        write_scheduler(tmp_path, kernel)
        for model in (ModelConfig(time_conditioning=False), ModelConfig(time_conditioning=True)):
            cfg = Config(model=model)
            loaded = read_kernel(tmp_path, cfg, 65)
            assert loaded.name == kernel.name == record_kernel(cfg, loaded).diffusion.process


@pytest.mark.parametrize(
    "sections,setting",
    [
        ({"diffusion": {"objective": "ambient"}, "data": {"dataset": "mnist"}}, "diffusion.objective=ambient"),
        ({"diffusion": {"objective": "naive"}, "data": {"dataset": "mnist"}}, "diffusion.objective=naive"),
        ({"model": {"block_diffusion": True}, "diffusion": {"block_size": 16}}, "model.block_diffusion=true"),
        ({"diffusion": {"estimator": "count"}}, "diffusion.estimator=count"),
    ],
)
def test_a_kernel_other_than_masks_for_a_masks_only_model_is_refused(sections, setting, tmp_path):
    from tokendiff.checkpoint import read_kernel
    from tokendiff.configs import config_from_dict
    from tokendiff.errors import TokenDiffError

    cfg = config_from_dict(sections)
    write_scheduler(tmp_path, HybridKernel(65, p_uniform=0.0))
    with pytest.raises(TokenDiffError, match=f"{setting}, which needs forward_process=absorbing"):
        read_kernel(tmp_path, cfg, 65)


def test_a_format_1_file_is_read_when_its_schedule_means_the_same(tmp_path):
    # tokendiff 0.1 wrote the mask id equal to vocab_size and its own schedule names; log-linear is the
    # same function under both names, its old "cosine" is not (refused rather than silently changed)
    import json

    from tokendiff.checkpoint import read_kernel
    from tokendiff.configs import Config, record_kernel
    from tokendiff.errors import TokenDiffError

    old = {
        "vocab_size": 65,
        "mask_token_id": 65,
        "alpha_schedule": "loglinear",
        "eps": 1e-3,
        "forward_process": "absorbing",
    }
    (tmp_path / "scheduler_config.json").write_text(json.dumps(old))
    cfg = Config()
    kernel = read_kernel(tmp_path, cfg, 65)
    recorded = record_kernel(cfg, kernel)
    assert cfg == Config()  # read_kernel leaves the config as it is; record_kernel makes the one that says the kernel
    assert (
        kernel.vocab_size == 65 and kernel.schedule.name == "log_linear" and recorded.diffusion.schedule == "log_linear"
    )
    (tmp_path / "scheduler_config.json").write_text(json.dumps({**old, "alpha_schedule": "cosine"}))
    with pytest.raises(TokenDiffError, match="retrain"):
        read_kernel(tmp_path, Config(), 65)


# each kernel's diffusion.* settings, the translation between scheduler_config.json and the config it was built from
SETTINGS = [
    (
        AbsorbingKernel(65, make_schedule("cosine", eps=0.01)),
        {"process": "absorbing", "schedule": "cosine", "eps": 0.01, "sigma_min": 1e-4, "sigma_max": 20.0},
    ),
    (
        AbsorbingKernel(65, make_schedule("geometric", sigma_min=1e-3, sigma_max=10.0)),
        {"process": "absorbing", "schedule": "geometric", "eps": 1e-3, "sigma_min": 1e-3, "sigma_max": 10.0},
    ),
    (
        UniformKernel(65, make_schedule("linear", eps=0.05), exclude_mask_from_uniform=False),
        {
            "process": "uniform",
            "schedule": "linear",
            "eps": 0.05,
            "sigma_min": 1e-4,
            "sigma_max": 20.0,
            "exclude_mask_from_uniform": False,
        },
    ),
    (
        HybridKernel(65, p_uniform=0.2, gamma=2.0),
        {"process": "hybrid", "schedule": None, "p_uniform": 0.2, "gamma": 2.0},
    ),
]


@pytest.mark.parametrize("index", range(len(SETTINGS)))
def test_a_config_that_records_a_kernel_builds_that_kernel_and_is_a_copy(index):
    from tokendiff.build import build_kernel
    from tokendiff.configs import record_kernel
    from tokendiff.configs.schema import Config, DiffusionConfig, ModelConfig

    kernel, settings = SETTINGS[index]
    assert kernel.diffusion_settings() == settings
    # a config of another kernel (and another schedule) on a time-conditioned model: every kernel fits it
    cfg = Config(model=ModelConfig(time_conditioning=True), diffusion=DiffusionConfig(schedule="log_linear", eps=0.3))
    before = Config(
        model=ModelConfig(time_conditioning=True), diffusion=DiffusionConfig(schedule="log_linear", eps=0.3)
    )
    recorded = record_kernel(cfg, kernel)
    assert cfg == before and recorded is not cfg and recorded.diffusion is not cfg.diffusion
    assert {key: getattr(recorded.diffusion, key) for key in settings} == settings
    assert recorded.model == cfg.model and recorded.diffusion.t_min == cfg.diffusion.t_min
    assert build_kernel(recorded, 65).to_config() == kernel.to_config()


def test_each_kernel_says_what_its_file_names_it_and_only_absorbing_is_masked_diffusion():
    uniform = UniformKernel(65, make_schedule("log_linear"))
    cases = [
        (AbsorbingKernel(65, make_schedule("log_linear")), "forward_process=absorbing", True),
        (uniform, "forward_process=uniform", False),
        (HybridKernel(65, p_uniform=0.1), "_class_name=HybridTokenDiffusionScheduler with p_uniform=0.1", False),
        # masks only, yet not MDLM's kernel: the masks-only settings are refused for it, as training refuses them
        (HybridKernel(65, p_uniform=0.0), "_class_name=HybridTokenDiffusionScheduler with p_uniform=0.0", False),
    ]
    for kernel, says, masked in cases:
        assert kernel.describe() == says and kernel.masked_diffusion is masked
        assert kernel_from_config(kernel.to_config()).describe() == says
