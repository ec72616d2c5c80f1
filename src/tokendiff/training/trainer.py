"""The training loop: accelerate for devices and mixed precision, AdamW with warmup and cosine decay,
EMA weights, periodic evaluation, samples and checkpoints, exact resume.

Exact resume: every random draw of step ``k`` (the batch offsets, the times, the masks) comes from a
generator seeded by ``(seed, k, micro-step)`` (:mod:`tokendiff.training.step_rng`), and the checkpoint holds
the raw and EMA weights, the optimizer moments, the global torch RNG (dropout) and ``k``
(:mod:`tokendiff.training.trainer_state`). So a run stopped at step ``k`` and resumed ends with the same
parameters as one that ran straight through (``tests/test_training.py``).

Several processes (``accelerate launch`` or ``torchrun``, e.g. DDP over GPUs, or gloo on CPUs): each
process draws its own batch, times and masks from ``(seed, k, micro-step, rank)``, so the processes see
different data and a run is exactly reproducible for a given number of processes; ``training.batch_size``
is per process. Gradients are averaged by accelerate. Only the main process writes checkpoints, logs,
samples and wandb; evaluation is split across the processes and gathered; every decision to stop
(``training.max_minutes``, Ctrl-C) is taken by all processes together (``tests/test_distributed.py``).
``system.fsdp=true`` shards the weights, gradients, moments and EMA across the processes instead
(:mod:`tokendiff.training.fsdp`, ``tests/test_fsdp.py``).

The trainer reads the config sections it is given (``training``, ``system``, ``logging``, ``sampling``) and
a few plain values; the whole config tree stays with the CLI (:func:`tokendiff.cli.train.trainer_from_config`),
which also hands over its resolved JSON form for the checkpoints to record (the trainer does not read it).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from tokendiff.checkpoint import CHECKPOINTS, FINAL, init_weights_from
from tokendiff.errors import Interrupted, TokenDiffError
from tokendiff.training import fsdp
from tokendiff.training.devices import check_precision, make_accelerator
from tokendiff.training.ema import EMA
from tokendiff.training.interrupts import interrupts_between_steps
from tokendiff.training.logger import RunLogger, check_logging
from tokendiff.training.monitor import eval_line, eval_record, nelbo_of_windows, sample_texts
from tokendiff.training.optimizer import build_optimizer, learning_rate
from tokendiff.training.stages import ArStage
from tokendiff.training.step_rng import step_generator
from tokendiff.training.trainer_state import load_state, save_state

__all__ = ["Trainer", "TrainResult", "StepStats"]

AUTO_COMPILE_MIN_STEPS = 500  # system.compile=null compiles a CPU run of at least this many steps


@dataclass
class StepStats:
    loss: float  # mean training loss of the step's micro-batches
    lr: float  # the learning rate it used
    grad_norm: float  # global gradient norm before clipping


@dataclass
class TrainResult:
    checkpoint: Path
    step: int
    eval: dict | None
    samples: list[str]


class Trainer:
    """Train ``model`` with ``objective`` on a prepared corpus.

    Args:
        model, objective, tokenizer, data: built by the CLI (``tokendiff.build``).
        training, system, logging, sampling: the config's sections of those names
            (:class:`~tokendiff.configs.schema.TrainingConfig` and so on).
        block_size: ``model.block_size``, the tokens of a window before the objective's extra ones, and
            the default length of the logged samples.
        eval_t_min: ``eval.t_min``: where the evaluation's part below ``t_min`` is reported apart.
        adapt: ``model.adapt=a2d``: ``training.init_from`` is an autoregressive model made bidirectional here.
        ar_stage: ``training.ar_share``: the autoregressive stage that comes first (:mod:`.stages`).
        output_dir: the run directory (logs, checkpoints).
        config_dict: the resolved config's JSON form, recorded in every checkpoint and in wandb as it is.
        resume_from: a checkpoint directory to continue from, or None.
    """

    def __init__(
        self,
        model,
        objective,
        tokenizer,
        data,
        *,
        training,
        system,
        logging,
        sampling,
        block_size: int,
        eval_t_min: float,
        adapt: bool = False,
        ar_stage: ArStage | None = None,
        output_dir: str | Path,
        config_dict: dict,
        resume_from: Path | None = None,
    ):
        self.training, self.system, self.logging, self.sampling = training, system, logging, sampling
        self.block_size = block_size
        self.eval_t_min = eval_t_min
        self.config_dict = config_dict
        self.objective = self.diffusion_objective = objective
        self.ar_stage, self.in_ar_stage = ar_stage, False
        self.adapted_logit_shift = model.logit_shift  # the model's, after an autoregressive stage without it
        self.tokenizer = tokenizer
        self.data = data
        self.output_dir = Path(output_dir)
        self.seq_len = block_size + objective.extra_tokens
        self.train_split = data.split("train")
        self.val_split = data.split("val")
        check_precision(system)
        check_logging(logging)
        self.fsdp = fsdp.fsdp_requested(system)  # shard the model (FSDP2) instead of copying it to each process
        self.accelerator, self.dtype = make_accelerator(system, training.grad_accum, fsdp=self.fsdp)
        self.device = self.accelerator.device
        self.rank, self.world = self.accelerator.process_index, self.accelerator.num_processes
        self.is_main = self.accelerator.is_main_process
        if self.fsdp and self.world == 1:
            raise TokenDiffError(
                "system.fsdp=true shards the model across processes, and this run has one: add "
                "system.num_processes=2 (or launch with torchrun --nproc_per_node 2), or set system.fsdp=false"
            )
        if training.init_from and resume_from is None:  # a new run from another run's weights
            init_weights_from(model, training.init_from, tokenizer, adapt=adapt)
        self.raw_model = model.to(self.device)
        self.ema = EMA(self.raw_model, training.ema) if training.ema > 0 else None  # before sharding: it copies
        if self.fsdp:  # the EMA sharded as the model is, so that its update is local
            for module in [self.raw_model] + ([self.ema.module] if self.ema is not None else []):
                fsdp.shard(module)
        # the objective's imputations, if it draws any (EM), come from the EMA weights
        objective.bind_imputer(self.ema.module if self.ema is not None else self.raw_model)
        fused = self.device.type in ("cpu", "cuda")
        optimizer = build_optimizer(self.raw_model, training, fused)  # after sharding: over the shards
        if self.fsdp:  # accelerate would wrap the sharded model in DDP: it gets the optimizer only
            self.model, self.optimizer = self.raw_model, self.accelerator.prepare(optimizer)
        else:
            self.model, self.optimizer = self.accelerator.prepare(self.raw_model, optimizer)
        # accelerate's prepare runs the model's forward under mixed precision; an unprepared sharded one needs it here
        self.autocast = self.accelerator.autocast if self.fsdp else contextlib.nullcontext
        self.step = 0
        self.last_eval: dict | None = None
        self.last_checkpoint: Path | None = None  # the newest periodic checkpoint of this session
        if resume_from is not None:
            load_state(self, Path(resume_from))
        if ar_stage is not None:  # the stage is a function of the step (a resumed run included)
            ar_stage.enter(self, autoregressive=self.step < ar_stage.steps)
        compile_model = system.compile
        if compile_model is None:  # auto: where it pays for its compilation time (docs/benchmarks.md)
            steps_left = training.max_iters - self.step
            compile_model = not self.fsdp and (
                self.device.type == "cuda" or (self.device.type == "cpu" and steps_left >= AUTO_COMPILE_MIN_STEPS)
            )
        self.compiled = bool(compile_model)
        self.forward = torch.compile(self.model) if compile_model else self.model
        self._compile_checked = not compile_model

    # ------------------------------------------------------------------ state
    def inference_model(self):
        """The weights to evaluate and sample with: EMA when enabled."""
        return self.ema.module if self.ema is not None else self.raw_model

    def _save(self, target: Path) -> Path:
        """Write a checkpoint (every process calls this; the main process writes, the others wait)."""
        return save_state(self, target)

    # ------------------------------------------------------------------ pieces
    def evaluate(self, num_batches: int | None = None, split: str = "val") -> dict:
        """Validation NELBO on a fixed set of windows (the same every time, so curves are comparable)."""
        t = self.training
        num_windows = (num_batches or t.eval_iters) * t.batch_size
        shard = (self.rank, self.world)
        if self.fsdp:  # every process must make as many forward calls
            shard = fsdp.eval_shard(num_windows, t.batch_size, self.rank, self.world)
        return nelbo_of_windows(
            self.inference_model(),
            self.objective,
            self.val_split if split == "val" else self.train_split,
            num_windows=num_windows,
            seq_len=self.seq_len,
            batch_size=t.batch_size,
            seed=t.seed,
            t_min=self.eval_t_min,
            device=self.device,
            autocast=self.accelerator.autocast,
            shard=shard,
        )

    def sample(self, num_samples: int = 2) -> list[str]:
        """A few samples for the log (the main process only; the others return []). A sharded model's forward
        calls are collectives, so every process then draws the same samples, and only the main one keeps them."""
        if not self.is_main and not self.fsdp:
            return []
        prompt = None
        if hasattr(self.val_split, "prompt_ids"):  # a chat run answers its first validation prompt
            prompt = self.val_split.prompt_ids(0)
        texts = sample_texts(
            self.inference_model(),
            self.objective.kernel,
            self.tokenizer,
            self.sampling,
            num_samples=num_samples,
            length=self.sampling.length or self.block_size,
            seed=self.step,
            device=self.device,
            prompt=prompt,
        )
        return texts if self.is_main else []

    # ------------------------------------------------------------------ loop
    def train(self) -> TrainResult:
        t = self.training
        logger = RunLogger(
            self.logging, self.config_dict, self.raw_model.num_parameters(), self.output_dir, enabled=self.is_main
        )
        tokens_per_step = t.batch_size * t.grad_accum * self.seq_len
        start_time = time.time()
        ckpt_dir = self.output_dir / CHECKPOINTS
        bar = tqdm(
            total=t.max_iters,
            initial=self.step,
            desc="train",
            dynamic_ncols=True,
            disable=not self.accelerator.is_main_process,
        )
        self.model.train()
        loss_avg = None
        stop = out_of_time = False
        if not self._compile_checked:  # the first step compiles the model: tens of seconds without a tick
            bar.set_postfix_str("compiling the model for the first step (Ctrl-C takes effect after it)")
        try:
            with interrupts_between_steps(self._interrupt_notice) as interrupted:
                while self.step < t.max_iters and not stop:
                    step_start = time.perf_counter()
                    stats = self.train_step()
                    loss_value, lr, grad_norm = stats.loss, stats.lr, stats.grad_norm
                    dt = time.perf_counter() - step_start
                    loss_avg = loss_value if loss_avg is None else 0.9 * loss_avg + 0.1 * loss_value
                    bar.update(1)
                    if self.step % t.log_interval == 0 or self.step == 1:
                        bar.set_postfix(loss=f"{loss_value:.3f}", tok_s=f"{tokens_per_step / dt:,.0f}")
                        logger.log(
                            {
                                "train/loss": loss_value,
                                "train/loss_avg": loss_avg,
                                "train/lr": lr,
                                "train/grad_norm": grad_norm,
                                "train/time_ms": dt * 1000.0,
                                "train/tokens_per_s": tokens_per_step / dt,
                            },
                            self.step,
                        )
                    done = self.step >= t.max_iters
                    out_of_time = t.max_minutes is not None and time.time() - start_time > 60.0 * t.max_minutes
                    out_of_time, stop = self._agree(out_of_time, interrupted())
                    if stop:  # Ctrl-C: checkpoint this step at once (below), skip its evaluation and samples
                        break
                    if t.eval_interval and self.step % t.eval_interval == 0 and not done:
                        self._log_eval(logger, bar)
                    if t.sample_interval and self.step % t.sample_interval == 0 and not done:
                        logger.log_samples(self.sample(), self.step)
                    if t.checkpoint_interval and self.step % t.checkpoint_interval == 0 and not done:
                        self.last_checkpoint = self._save(ckpt_dir / f"step_{self.step:06d}")
                    if out_of_time:
                        if self.is_main:
                            bar.write(f"training.max_minutes={t.max_minutes} reached at step {self.step}")
                        break
        finally:
            bar.close()  # so that an error message starts on a line of its own
        if stop:
            path = self._save(ckpt_dir / f"step_{self.step:06d}")
            logger.finish()
            raise Interrupted(f"interrupted at step {self.step}; saved {path}; continue with resume={self.output_dir}")
        # the final checkpoint first: nothing after the last step (evaluation, samples) can lose it
        path = self._save(self.output_dir / FINAL)
        try:
            final_eval = self._log_eval(logger, None)
            samples = self.sample()
        except KeyboardInterrupt:
            logger.finish()
            raise Interrupted(f"interrupted during the final evaluation; the run is saved in {path}") from None
        logger.log_samples(samples, self.step)
        logger.finish()
        return TrainResult(path, self.step, final_eval, samples)

    def _interrupt_notice(self) -> str | None:
        if self._compile_checked or not self.is_main:
            return None
        return (
            "Ctrl-C: stopping after this step, the first, which torch.compile is still compiling (up to a "
            "minute); a second Ctrl-C stops at once, without a checkpoint"
        )

    def train_step(self) -> StepStats:
        """One optimizer step (every micro-batch of ``training.grad_accum``), then the EMA update and the
        step counter: the unit the loop repeats and ``bench/train_throughput.py`` times.

        Raises :class:`TokenDiffError` when the loss is not finite: the optimizer has stepped on it by then,
        so the weights in memory are spoiled; the step counter and the EMA are left as they were, and the
        message says which checkpoint to resume from.
        """
        t = self.training
        start, steps, warmup = (0, t.max_iters, t.warmup_iters)
        if self.ar_stage:  # each stage its own schedule, its warmup at most a tenth of it (stages.py)
            start, steps, warmup = self.ar_stage.schedule(self.step, t.max_iters, t.warmup_iters)
        decay_end = t.lr_decay_iters or steps
        lr = learning_rate(self.step - start, t.learning_rate, t.min_lr, warmup, decay_end)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        losses = []
        grad_norm = float("nan")
        progress = self.step / t.max_iters  # share of training done (ambient.hard_start uses it)
        if t.attention_anneal_iters and not self.in_ar_stage:  # A2D: causal attention opened up step by step
            reach = self.block_size * (self.step - start) // t.attention_anneal_iters  # 0: causal; block_size: all
            self.raw_model.attention_reach = reach if self.step - start < t.attention_anneal_iters else None
        for micro in range(t.grad_accum):
            g_data = step_generator(t.seed, self.step, micro, 0, "cpu", self.rank, self.world)
            g = step_generator(t.seed, self.step, micro, 1, self.device, self.rank, self.world)
            x = self.train_split.batch(t.batch_size, self.seq_len, g_data)  # (B, L), or chat examples and roles
            roles = None
            if isinstance(x, tuple):  # data.format=chat: the prompt/response roles go with the tokens
                x, roles = x[0], x[1].to(self.device)
            x = x.to(self.device)
            with self.accelerator.accumulate(self.model):
                with self.autocast():
                    terms = self._loss_terms(x, g, progress, roles)  # (B, L)
                loss = terms.mean()
                self.accelerator.backward(loss)
                losses.append(loss.detach())
                if self.accelerator.sync_gradients:
                    grad_norm = self._clip()
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
        loss = torch.stack(losses).float().mean()
        if self.world > 1:  # the mean over all processes: what the averaged gradient descends
            loss = self.accelerator.reduce(loss, "mean")
        loss_value = loss.item()  # read once per step, not per micro-batch
        if not math.isfinite(loss_value):
            raise TokenDiffError(
                f"the training loss became {loss_value} at step {self.step}; lower "
                f"training.learning_rate (now {t.learning_rate}) or use system.dtype=float32 "
                f"and resume from the last checkpoint ({self.last_checkpoint or 'none written yet'})"
            )
        if self.ema is not None:
            self.ema.update(self.raw_model)
        self.step += 1
        if self.in_ar_stage and self.step == self.ar_stage.steps:  # inside the step: checkpoints hold one stage
            self.ar_stage.switch(self)
        return StepStats(loss_value, lr, grad_norm)

    def _loss_terms(self, x, g, progress, roles=None):
        extra = {} if roles is None else {"roles": roles}  # chat examples: the response objective's roles
        if self._compile_checked:
            return self.objective.loss_terms(self.forward, x, g, progress, **extra)
        # torch.compile fails only at its first call (e.g. no C++ compiler): fall back to eager, say so
        state = g.get_state()
        try:
            terms = self.objective.loss_terms(self.forward, x, g, progress, **extra)
        except Exception as exc:  # inductor raises many kinds; any failure here means "cannot compile"
            print(
                f"torch.compile failed ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); "
                "training without it (system.compile=false skips the attempt)",
                flush=True,
            )
            self.forward = self.model
            self.compiled = False
            g.set_state(state)
            terms = self.objective.loss_terms(self.forward, x, g, progress, **extra)
        self._compile_checked = True
        return terms

    def _agree(self, out_of_time: bool, interrupted: bool) -> tuple[bool, bool]:
        """(out of time, stop) as all processes see it: any process's clock or Ctrl-C stops every one at
        the same step, so none waits forever in a collective the others left."""
        if self.world == 1:
            return out_of_time, interrupted
        flags = torch.tensor([float(out_of_time), float(interrupted)], device=self.device)
        flags = self.accelerator.reduce(flags, "sum")
        return bool(flags[0] > 0), bool(flags[1] > 0)

    def _clip(self) -> float:
        params = self.raw_model.parameters()
        if self.training.grad_clip > 0 or self.fsdp:  # max_norm inf: a sharded model's norm, not clipped
            return float(self.accelerator.clip_grad_norm_(params, self.training.grad_clip or math.inf))
        norms = [p.grad.detach().norm() for p in params if p.grad is not None]
        return float(torch.stack(norms).norm()) if norms else 0.0

    def _log_eval(self, logger, bar) -> dict:
        val = self.evaluate()
        # on corrupted data the clean NELBO of the training split is undefined: report val only
        train = self.evaluate(split="train") if self.objective.reports_train_nelbo else None
        self.last_eval = eval_record(self.step, val, train)
        logger.log({f"eval/{k}": v for k, v in self.last_eval.items() if k != "step" and v is not None}, self.step)
        if self.is_main:
            (bar.write if bar is not None else print)(eval_line(self.step, val))
        return self.last_eval
