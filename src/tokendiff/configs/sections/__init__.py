"""The config's sections, one dataclass each, grouped by what they configure.

Each section checks its own values in ``__post_init__``; a value that a library constructor takes is checked
by that constructor's rule (:mod:`tokendiff.objectives.rules`,
:class:`~tokendiff.objectives.ambient.settings.AmbientSettings`,
:class:`~tokendiff.samplers.settings.SamplingSettings`, the kernels), called from here, so the rule and its
message exist once. Rules across sections live with :class:`tokendiff.configs.schema.Config`.
"""

from tokendiff.configs.sections.ambient import AmbientConfig
from tokendiff.configs.sections.data import DataConfig
from tokendiff.configs.sections.model import DiffusionConfig, ModelConfig
from tokendiff.configs.sections.sampling import SAMPLING_FIELDS, EvalConfig, SamplingConfig
from tokendiff.configs.sections.training import LoggingConfig, SystemConfig, TrainingConfig

__all__ = [
    "ModelConfig",
    "DiffusionConfig",
    "DataConfig",
    "TrainingConfig",
    "SystemConfig",
    "LoggingConfig",
    "SamplingConfig",
    "EvalConfig",
    "AmbientConfig",
    "SAMPLING_FIELDS",
]
