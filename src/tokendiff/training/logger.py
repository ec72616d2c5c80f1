"""Where training metrics go: a JSON-lines file in the run directory, and Weights & Biases if asked.

wandb is optional (``pip install 'tokendiff[wandb]'``) and honours ``WANDB_MODE=offline``.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokendiff.errors import TokenDiffError

__all__ = ["RunLogger", "check_logging"]


def check_logging(logging_cfg) -> None:
    """The logging settings' one-line errors, before a run directory is made (wandb not installed)."""
    import importlib.util

    if logging_cfg.wandb and importlib.util.find_spec("wandb") is None:
        raise TokenDiffError("logging.wandb=true but wandb is not installed; pip install 'tokendiff[wandb]'")


class RunLogger:
    """``enabled=False`` (every process but the main one of a multi-process run) writes nothing."""

    def __init__(self, logging_cfg, config_dict: dict, num_parameters: int, output_dir: Path, enabled: bool = True):
        self.path = Path(output_dir) / "log.jsonl"
        self.enabled = enabled
        self.run = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if logging_cfg.wandb:
            try:
                import wandb
            except ImportError:
                raise TokenDiffError(
                    "logging.wandb=true but wandb is not installed; pip install 'tokendiff[wandb]'"
                ) from None
            self.run = wandb.init(
                project=logging_cfg.project,
                name=logging_cfg.name,
                tags=list(logging_cfg.tags),
                config=config_dict,
                dir=str(output_dir),
            )
            self.run.summary["model/num_parameters"] = num_parameters
        self.log({"model/num_parameters": num_parameters}, 0)

    def log(self, metrics: dict, step: int) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        if self.run is not None:
            self.run.log(metrics, step=step)

    def log_samples(self, samples: list[str], step: int) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, "samples": samples}) + "\n")
        if self.run is not None:
            import wandb

            table = wandb.Table(columns=["step", "index", "text"], data=[[step, i, s] for i, s in enumerate(samples)])
            self.run.log({"samples": table}, step=step)

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
