"""The ``ambient`` section: training from corrupted data (``diffusion.objective=ambient``)."""

from __future__ import annotations

from dataclasses import dataclass

from tokendiff.objectives.ambient.settings import AMBIENT_KEYS, AmbientSettings

__all__ = ["AmbientConfig"]


@dataclass
class AmbientConfig:
    """Ambient training from corrupted data (diffusion.objective=ambient)."""

    consistency_weight: float = 1.0  # weight of the hard loss below the corruption level (0: easy loss only)
    descent_steps: int = 2  # model passes that reach the consistency anchor or draw the imputations
    easy_fraction: float = 0.5  # share of each batch on the easy loss; the rest on the hard loss
    hard_loss: str = "consistency"  # below the corruption level: consistency (tower) | imputation (EM)
    divergence: str = "kl"  # consistency: kl | squared (probabilities)
    hard_start: float = 0.0  # share of the training steps on the easy loss alone, before the hard loss
    hard_batch: float = 0.0  # > 0: easy loss on every row, the hard loss on this share of rows on top
    imputed_weight: float = 1.0  # em: weight of imputed tokens in the M-step (0: observed only, 1: Monte Carlo EM)
    impute_rounds: int = 16  # em: rounds (model passes) of the sequential draw that fills a buffer entry
    refresh: float = 0.25  # em: chance that a buffer entry is drawn afresh when used (else a Gibbs sweep)
    gibbs_share: float = 0.1  # em: share of an entry's imputed tokens a Gibbs sweep draws again
    consistency_reveal: float = 0.0  # consistency: > 0 reveals this share, two draws, product of residuals
    consistency_max_masked: float = 1.0  # consistency: anchors with at most this share masked (1: all below t_n)

    def __post_init__(self):
        self.settings()  # the ambient losses' values are checked where they live (AmbientSettings), once

    def settings(self) -> AmbientSettings:
        """The ambient objective's settings of this section
        (:class:`tokendiff.objectives.ambient.settings.AmbientSettings`)."""
        return AmbientSettings(**{key: getattr(self, key) for key in AMBIENT_KEYS})
