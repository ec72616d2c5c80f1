"""The ``training``, ``system`` and ``logging`` sections: the optimization loop and where it runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from tokendiff.configs.sections.checks import check

__all__ = ["TrainingConfig", "LoraSettings", "SystemConfig", "LoggingConfig", "OPTIMIZERS"]

OPTIMIZERS = ("adamw", "muon")  # training.optimizer (tokendiff.training.optimizer builds them)


@dataclass
class LoraSettings:
    """LoRA adapters (peft, ``pip install 'tokendiff[lora]'``): train low-rank updates of a frozen base model
    (``training.init_from``, or ``model.arch=hf`` with ``model.hf_name``); :mod:`tokendiff.training.lora`."""

    r: int = 0  # LoRA rank: train rank-r adapters on a frozen base (e.g. 8); 0 = off, every weight trains
    alpha: float = 8.0  # adapters' scale: their update is multiplied by alpha / r (peft's lora_alpha)
    dropout: float = 0.0  # dropout on the adapters' input (peft's lora_dropout)
    # null: the attention and MLP linears of model.arch=transformer (qkv, proj, gate_up, down); for model.arch=hf
    # peft's defaults for its model type (bert: query, value; llama: q_proj, v_proj), else every linear but the head
    target_modules: Optional[List[str]] = None  # layers to adapt, e.g. [qkv,proj] (peft's matching); null: defaults

    def __post_init__(self):
        check(0 <= self.r <= 65536, f"training.lora.r={self.r} must lie in [0, 65536], e.g. 8 (0 turns LoRA off)")
        check(self.alpha > 0, f"training.lora.alpha={self.alpha} must be > 0, e.g. 16")
        check(0.0 <= self.dropout < 1.0, f"training.lora.dropout={self.dropout} must lie in [0, 1), e.g. 0.05")
        targets = self.target_modules
        check(
            targets is None or (len(targets) > 0 and all(isinstance(t, str) and t.strip() for t in targets)),
            f"training.lora.target_modules={targets} must be a list of module names, e.g. [qkv,proj], or null "
            "for the backbone's defaults",
        )


@dataclass
class TrainingConfig:
    """The optimization loop."""

    max_iters: int = 2000  # optimizer steps
    n_epochs: Optional[int] = None  # if set: train this many passes over the data (sets max_iters)
    epochs_per_checkpoint: int = 5  # with n_epochs: a checkpoint every this many epochs
    batch_size: int = 32  # sequences per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    learning_rate: float = 1e-3  # peak learning rate
    min_lr: float = 1e-4  # floor of the cosine decay
    warmup_iters: int = 100  # linear warmup steps
    lr_decay_iters: Optional[int] = None  # end of the cosine decay; default max_iters
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    # adamw, or muon: Muon (orthogonalized momentum, torch.optim.Muon) for the hidden matrices and AdamW for the
    # embeddings, the output head, gains and biases; both follow learning_rate's schedule (Muon's step is
    # rescaled to AdamW's RMS, Moonshot's rule, so one rate serves both)
    optimizer: str = "adamw"
    grad_clip: float = 1.0  # max global gradient norm; 0 disables
    ema: float = 0.999  # EMA decay of the weights used for sampling and eval; 0 disables
    eval_interval: int = 250  # steps between evaluations (0: only at the end)
    eval_iters: int = 20  # validation batches per evaluation
    sample_interval: int = 500  # steps between logged samples (0: only at the end)
    checkpoint_interval: int = 500  # steps between checkpoints (the final one is always written)
    log_interval: int = 10
    max_minutes: Optional[float] = None  # stop (with a checkpoint) after this wall-clock time
    init_from: Optional[str] = None  # start from this checkpoint's weights (fresh optimizer), e.g. MDLM -> BD3-LM
    attention_anneal_iters: int = 0  # model.adapt=a2d: open causal attention up to bidirectional over these steps
    # model.adapt=a2d: this share of max_iters first trains the model autoregressively, in the same run (no
    # init_from); 0: start from training.init_from. Each stage warms up (at most a tenth of it) and decays on its own
    ar_share: float = 0.0
    seed: int = 1337
    lora: LoraSettings = field(default_factory=LoraSettings)  # training.lora.*: LoRA adapters (r=0: off)

    def __post_init__(self):
        check(self.n_epochs is None or self.n_epochs >= 1, f"training.n_epochs={self.n_epochs} must be >= 1")
        for name in ("max_iters", "batch_size", "grad_accum", "eval_iters", "log_interval", "epochs_per_checkpoint"):
            check(getattr(self, name) >= 1, f"training.{name}={getattr(self, name)} must be >= 1")
        check(self.batch_size <= 100_000, f"training.batch_size={self.batch_size} must lie in [1, 100000]")
        for name in ("eval_interval", "sample_interval", "checkpoint_interval", "warmup_iters"):
            check(getattr(self, name) >= 0, f"training.{name}={getattr(self, name)} must be >= 0")
        check(0.0 <= self.ar_share < 1.0, f"training.ar_share={self.ar_share} must lie in [0, 1), e.g. 0.5")
        for name in ("attention_anneal_iters",):
            check(getattr(self, name) >= 0, f"training.{name}={getattr(self, name)} must be >= 0")
        check(
            self.optimizer in OPTIMIZERS,
            f"training.optimizer={self.optimizer!r} is not one of {', '.join(OPTIMIZERS)}; "
            "e.g. training.optimizer=muon",
        )
        check(self.learning_rate > 0, f"training.learning_rate={self.learning_rate} must be > 0, e.g. 6e-4")
        check(
            0 <= self.min_lr <= self.learning_rate,
            f"training.min_lr={self.min_lr} must lie in [0, training.learning_rate={self.learning_rate}]",
        )
        check(0.0 <= self.ema < 1.0, f"training.ema={self.ema} must lie in [0, 1); 0 turns EMA off")
        check(self.grad_clip >= 0, f"training.grad_clip={self.grad_clip} must be >= 0 (0 turns it off)")
        check(0 <= self.seed < 2**63, f"training.seed={self.seed} must lie in [0, 2^63), e.g. 1337")
        check(
            self.max_minutes is None or self.max_minutes > 0,
            f"training.max_minutes={self.max_minutes} must be > 0 (or unset)",
        )

    def apply_epochs(self, sequences_per_epoch: int) -> str | None:
        """With ``n_epochs`` set, derive ``max_iters`` and ``checkpoint_interval`` from the epoch size.

        Returns a line saying what was derived (for the user), or None when ``n_epochs`` is unset.
        """
        if not self.n_epochs:
            return None
        per_step = self.batch_size * self.grad_accum
        steps_per_epoch = -(-sequences_per_epoch // per_step)
        self.max_iters = self.n_epochs * steps_per_epoch
        self.checkpoint_interval = self.epochs_per_checkpoint * steps_per_epoch
        return (
            f"{self.n_epochs} epochs of {steps_per_epoch} steps = {self.max_iters} steps; "
            f"a checkpoint every {self.epochs_per_checkpoint} epochs"
        )


@dataclass
class SystemConfig:
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    dtype: str = "auto"  # auto (bfloat16 where bf16 matmul is native, else float32) | float32 | bfloat16 | float16
    # torch.compile the model: null (auto) compiles on a GPU, and on a CPU for runs of >= 500 steps, where the
    # measured 1.18x (fp32) to 1.39x (native bf16) step repays ~30 s of compiling (docs/benchmarks.md); true/false
    compile: Optional[bool] = None
    threads: Optional[int] = None  # CPU threads; default torch's choice
    # gloo on CPUs, one GPU each with CUDA; torchrun / accelerate launch set their own count instead
    num_processes: int = 1  # train: start this many data-parallel processes from one command (1: this one)
    # with system.num_processes>1 or torchrun: the parameters, gradients, optimizer moments and EMA are sharded across
    # the processes instead of copied to each (tokendiff.training.fsdp); accelerate launch --use_fsdp sets it too
    fsdp: bool = False  # train: shard the model, its gradients, moments and EMA across the processes (FSDP2)

    def __post_init__(self):
        check(
            1 <= self.num_processes <= 1024,
            f"system.num_processes={self.num_processes} must lie in [1, 1024], e.g. system.num_processes=2",
        )
        check(
            self.threads is None or 1 <= self.threads <= 1024,
            f"system.threads={self.threads} must lie in [1, 1024] (or unset for torch's choice)",
        )
        check(
            self.dtype in ("auto", "float32", "bfloat16", "float16"),
            f"system.dtype={self.dtype!r} is unknown; use auto, float32, bfloat16 or float16",
        )


@dataclass
class LoggingConfig:
    wandb: bool = False  # log to Weights & Biases (pip install 'tokendiff[wandb]')
    project: str = "tokendiff"
    name: Optional[str] = None
    tags: List[str] = field(default_factory=list)
