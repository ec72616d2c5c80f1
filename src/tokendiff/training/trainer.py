"""The training loop: accelerate for devices and mixed precision, AdamW with warmup and cosine decay,
EMA weights, periodic evaluation, samples and checkpoints, exact resume.

Exact resume: every random draw of step ``k`` (the batch offsets, the times, the masks) comes from a
generator seeded by ``(seed, k, micro-step)``, and the checkpoint holds the raw and EMA weights, the
optimizer moments, the global torch RNG (dropout) and ``k``. So a run stopped at step ``k`` and resumed
ends with the same parameters as one that ran straight through (``tests/test_training.py``).

Several processes (``accelerate launch`` or ``torchrun``, e.g. DDP over GPUs, or gloo on CPUs): each
process draws its own batch, times and masks from ``(seed, k, micro-step, rank)``, so the processes see
different data and a run is exactly reproducible for a given number of processes; ``training.batch_size``
is per process. Gradients are averaged by accelerate. Only the main process writes checkpoints, logs,
samples and wandb; evaluation is split across the processes and gathered; every decision to stop
(``training.max_minutes``, Ctrl-C) is taken by all processes together (``tests/test_distributed.py``).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import gather_object
from tqdm.auto import tqdm

from tokendiff.build import default_device, resolve_dtype
from tokendiff.checkpoint import (
    CHECKPOINTS,
    FINAL,
    OPTIMIZER,
    TRAINING_STATE,
    WEIGHTS,
    checkpoint_record,
    init_weights_from,
    load_into,
    load_training_state,
    optimizer_tensors,
    restore_optimizer,
    save_checkpoint,
)
from tokendiff.errors import Interrupted, TokenDiffError
from tokendiff.evaluation.likelihood import evaluate_likelihood
from tokendiff.samplers.text import generate, sampling_options
from tokendiff.training.ema import EMA
from tokendiff.training.logger import RunLogger, check_logging
from tokendiff.training.optimizer import learning_rate, param_groups

__all__ = ["Trainer", "TrainResult", "StepStats", "interrupts_between_steps"]

AUTO_COMPILE_MIN_STEPS = 1000  # system.compile=null compiles a CPU run of at least this many steps
MIXED_PRECISION = {"float32": "no", "bfloat16": "bf16", "float16": "fp16"}


def step_generator(seed: int, step: int, micro: int, stream: int, device, rank: int = 0, world: int = 1):
    """A generator for one micro-step's draws: a function of (seed, step, micro, stream[, rank]) only.

    Stream 0 draws the batch (on the CPU, where the token file is), stream 1 the times and masks (on
    the model's device); distinct streams keep the two independent. With several processes the rank
    joins the seed (one process keeps the draws of earlier versions).
    """
    entropy = [seed, step, micro, stream] + ([rank] if world > 1 else [])
    state = int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] >> 1)
    return torch.Generator(device=device).manual_seed(state)


def weights_sha256(model: torch.nn.Module) -> str:
    """sha256 of every parameter's bytes, in order: equal hashes mean bitwise-equal weights."""
    h = hashlib.sha256()
    for p in model.parameters():
        h.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@contextlib.contextmanager
def interrupts_between_steps(notice=None):
    """Ctrl-C (SIGINT) during the block sets a flag, read by calling the yielded function, instead of
    raising wherever the interpreter is: the loop stops between two steps, so the optimizer step and the
    step counter always change together. A second Ctrl-C raises KeyboardInterrupt at once.

    ``notice()``, if given, is called at the first Ctrl-C: a line to print at once when the step in flight
    will take long (the first step of a compiled model compiles it), so the user knows the key was heard.
    """
    state = {"interrupted": False}
    if threading.current_thread() is not threading.main_thread():
        yield lambda: state["interrupted"]  # signal handlers can only be set in the main thread
        return

    def handler(signum, frame):
        if state["interrupted"]:
            raise KeyboardInterrupt
        state["interrupted"] = True
        line = notice() if notice else None
        if line:
            print(line, file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: state["interrupted"]
    finally:
        signal.signal(signal.SIGINT, previous)


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
        config: the resolved :class:`~tokendiff.configs.Config`; ``config_dict`` its JSON form, saved
            into every checkpoint.
        model, objective, tokenizer, data: built by the CLI (``tokendiff.build``).
        resume_from: a checkpoint directory to continue from, or None.
    """

    def __init__(
        self,
        config,
        config_dict: dict,
        model,
        objective,
        tokenizer,
        data,
        resume_from: Path | None = None,
    ):
        self.cfg = config
        self.config_dict = config_dict
        self.tcfg = config.training
        self.objective = objective
        self.tokenizer = tokenizer
        self.data = data
        self.output_dir = Path(config.output_dir)
        self.seq_len = config.model.block_size + objective.extra_tokens
        self.train_split = data.split("train")
        self.val_split = data.split("val")
        device = config.system.device
        if config.system.dtype == "float16" and (device == "cpu" or not torch.cuda.is_available()):
            raise TokenDiffError("system.dtype=float16 needs a CUDA GPU; on a CPU use system.dtype=bfloat16")
        check_logging(config.logging)
        if config.system.threads:
            torch.set_num_threads(config.system.threads)
        if device.startswith("cuda:"):
            torch.cuda.set_device(int(device.split(":", 1)[1]))  # accelerate uses the current device
        self.dtype, why = resolve_dtype(config.system.dtype, default_device(device))  # after set_device
        if config.system.dtype == "auto" and int(os.environ.get("RANK", "0")) == 0:  # once per run
            print(f"system.dtype=auto: {self.dtype} ({why})", flush=True)
        # accelerate keeps its mixed-precision setting in a process-wide singleton and refuses a second
        # Accelerator with another one; a Trainer owns its precision, so it clears that part (never the
        # distributed PartialState) before building its own: trainers built one after the other in one
        # process (tests, notebooks, sweeps) each get their own precision. Interleaving two live trainers
        # is not supported (accelerate's gradient-accumulation state is process-wide too).
        AcceleratorState._reset_state(reset_partial_state=False)
        self.accelerator = Accelerator(
            cpu=device == "cpu",
            mixed_precision=MIXED_PRECISION[self.dtype],
            gradient_accumulation_steps=self.tcfg.grad_accum,
        )
        self.device = self.accelerator.device
        self.rank, self.world = self.accelerator.process_index, self.accelerator.num_processes
        engine = self.accelerator.distributed_type.value
        if engine in ("FSDP", "DEEPSPEED", "MEGATRON_LM"):  # sharded engines: EMA, checkpoints not tested
            raise TokenDiffError(
                f"accelerate launched this run with {engine}; tokendiff's EMA weights and checkpoints are built and "
                "tested for data parallelism only (DDP: accelerate launch --multi_gpu, or torchrun); launch without "
                f"{engine}"
            )
        self.is_main = self.accelerator.is_main_process
        if self.tcfg.init_from and resume_from is None:  # a new run from another run's weights
            init_weights_from(model, self.tcfg.init_from, tokenizer)
        self.raw_model = model.to(self.device)
        self.ema = EMA(self.raw_model, self.tcfg.ema) if self.tcfg.ema > 0 else None
        # the objective's imputations, if it draws any (EM), come from the EMA weights
        objective.bind_imputer(self.ema.module if self.ema is not None else self.raw_model)
        fused = self.device.type in ("cpu", "cuda")
        optimizer = torch.optim.AdamW(
            param_groups(self.raw_model, self.tcfg.weight_decay),
            lr=self.tcfg.learning_rate,
            betas=(self.tcfg.beta1, self.tcfg.beta2),
            fused=fused,
        )
        self.model, self.optimizer = self.accelerator.prepare(self.raw_model, optimizer)
        self.step = 0
        self.last_eval: dict | None = None
        self.last_checkpoint: Path | None = None  # the newest periodic checkpoint of this session
        if resume_from is not None:
            self._load_state(Path(resume_from))
        compile_model = config.system.compile
        if compile_model is None:  # auto: where it pays for its compilation time (docs/benchmarks.md)
            steps_left = self.tcfg.max_iters - self.step
            compile_model = self.device.type == "cuda" or (
                self.device.type == "cpu" and steps_left >= AUTO_COMPILE_MIN_STEPS
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
        rng = torch.get_rng_state().tolist()
        cuda_rng = torch.cuda.get_rng_state(self.device).tolist() if self.device.type == "cuda" else None
        # dropout streams of every process: the CPU one, and the one of its own GPU
        rank_rngs = gather_object([(rng, cuda_rng)]) if self.world > 1 else None
        # data parallelism keeps the processes' weights bitwise equal; the checkpoint records that it did
        hashes = gather_object([weights_sha256(self.raw_model)]) if self.world > 1 else None
        if hashes and len(set(hashes)) > 1 and self.is_main:
            print(f"warning: the processes' weights differ at step {self.step} (sha256 {hashes})", flush=True)
        if not self.is_main:
            self.accelerator.wait_for_everyone()
            return target
        state = {
            "step": self.step,
            "world_size": self.world,
            "torch_rng_state": rng,
            "rank_torch_rng_states": [r[0] for r in rank_rngs] if rank_rngs else None,
            "rank_cuda_rng_states": [r[1] for r in rank_rngs] if rank_rngs else None,
            "rank_weights_sha256": hashes,
            "cuda_rng_states": [s.tolist() for s in torch.cuda.get_rng_state_all()]
            if torch.cuda.is_available()
            else [],
            "ema_updates": self.ema.updates if self.ema is not None else 0,
            "last_eval": self.last_eval,
        }
        model = self.inference_model()
        export = (lambda d: model.export(d, self.tokenizer)) if hasattr(model, "export") else None
        path = save_checkpoint(
            target,
            config=checkpoint_record(
                self.config_dict,
                step=self.step,
                tokenizer=self.tokenizer,
                num_parameters=self.raw_model.num_parameters(),
            ),
            weights=self.inference_model().state_dict(),
            kernel=self.objective.kernel,
            tokenizer=self.tokenizer,
            training_state={
                "model": self.raw_model.state_dict(),
                "optimizer": optimizer_tensors(self.optimizer.state_dict()),
                "state": state,
                "objective": self.objective.state_tensors(),  # e.g. EM's imputation buffer
            },
            export=export,
        )
        self.accelerator.wait_for_everyone()
        return path

    def _load_state(self, ckpt: Path) -> None:
        saved = load_training_state(ckpt)
        load_into(self.raw_model, saved.raw_weights, ckpt / TRAINING_STATE / WEIGHTS)
        if self.ema is not None:
            load_into(self.ema.module, saved.ema_weights, ckpt / WEIGHTS)
        state = saved.state
        if self.ema is not None:
            self.ema.updates = int(state.get("ema_updates", 0))
        restore_optimizer(self.optimizer.optimizer, saved.optimizer, ckpt / TRAINING_STATE / OPTIMIZER)
        saved_world = state.get("world_size", 1)
        rank_rngs = state.get("rank_torch_rng_states")
        if saved_world != self.world and self.is_main:
            print(
                f"note: {ckpt} was written by {saved_world} process(es), this run has {self.world}: it continues "
                "from the same weights and step, but its draws differ from an uninterrupted run "
                f"(resume with {saved_world} process(es) to continue exactly)",
                flush=True,
            )
        same_world = saved_world == self.world and rank_rngs
        rng = rank_rngs[self.rank] if same_world else state["torch_rng_state"]
        torch.set_rng_state(torch.tensor(rng, dtype=torch.uint8))
        rank_cuda = (state.get("rank_cuda_rng_states") or [None] * self.world)[self.rank] if same_world else None
        cuda_states = state.get("cuda_rng_states") or []
        if rank_cuda is not None and self.device.type == "cuda":  # each process: its own GPU's stream
            torch.cuda.set_rng_state(torch.tensor(rank_cuda, dtype=torch.uint8), self.device)
        elif (
            self.world == 1
            and cuda_states
            and torch.cuda.is_available()
            and len(cuda_states) == torch.cuda.device_count()
        ):
            torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in cuda_states])
        self.objective.load_state_tensors(saved.objective)  # e.g. EM's imputation buffer
        self.step = int(state["step"])
        self.last_eval = state.get("last_eval")

    # ------------------------------------------------------------------ pieces
    def evaluate(self, num_batches: int | None = None, split: str = "val") -> dict:
        """Validation NELBO on a fixed set of windows (the same every time, so curves are comparable)."""
        model = self.inference_model()
        was_training = model.training
        model.eval()
        tokens = self.val_split if split == "val" else self.train_split
        g = torch.Generator().manual_seed(self.tcfg.seed)
        n = (num_batches or self.tcfg.eval_iters) * self.tcfg.batch_size
        windows = tokens.batch(n, self.seq_len, g)
        result = evaluate_likelihood(
            model,
            self.objective,
            windows,
            num_draws=1,
            batch_size=self.tcfg.batch_size,
            seed=self.tcfg.seed,
            chars_per_token=tokens.chars_per_token,
            device=self.device,
            autocast=self.accelerator.autocast,
            t_min=self.cfg.eval.t_min,
            shard=(self.rank, self.world),
            gather=gather_object,
        )
        model.train(was_training)
        return result.to_dict()

    def sample(self, num_samples: int = 2) -> list[str]:
        """A few samples for the log (the main process only; the others return [])."""
        if not self.is_main:
            return []
        s = self.cfg.sampling
        model = self.inference_model()
        was_training = model.training
        model.eval()
        texts, _ = generate(
            model,
            self.objective.kernel,
            self.tokenizer,
            num_samples=num_samples,
            length=s.length or self.cfg.model.block_size,
            seed=self.step,
            device=self.device,
            **sampling_options(s),
        )
        model.train(was_training)
        return texts

    # ------------------------------------------------------------------ loop
    def train(self) -> TrainResult:
        t = self.tcfg
        logger = RunLogger(
            self.cfg.logging, self.config_dict, self.raw_model.num_parameters(), self.output_dir, enabled=self.is_main
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
        t = self.tcfg
        decay_end = t.lr_decay_iters or t.max_iters
        lr = learning_rate(self.step, t.learning_rate, t.min_lr, t.warmup_iters, decay_end)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        losses = []
        grad_norm = float("nan")
        progress = self.step / t.max_iters  # share of training done (ambient.hard_start uses it)
        for micro in range(t.grad_accum):
            g_data = step_generator(t.seed, self.step, micro, 0, "cpu", self.rank, self.world)
            g = step_generator(t.seed, self.step, micro, 1, self.device, self.rank, self.world)
            x = self.train_split.batch(t.batch_size, self.seq_len, g_data).to(self.device)  # (B, L)
            with self.accelerator.accumulate(self.model):
                terms = self._loss_terms(x, g, progress)  # (B, L)
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
        return StepStats(loss_value, lr, grad_norm)

    def _loss_terms(self, x, g, progress):
        if self._compile_checked:
            return self.objective.loss_terms(self.forward, x, g, progress)
        # torch.compile fails only at its first call (e.g. no C++ compiler): fall back to eager, say so
        state = g.get_state()
        try:
            terms = self.objective.loss_terms(self.forward, x, g, progress)
        except Exception as exc:  # inductor raises many kinds; any failure here means "cannot compile"
            print(
                f"torch.compile failed ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); "
                "training without it (system.compile=false skips the attempt)",
                flush=True,
            )
            self.forward = self.model
            self.compiled = False
            g.set_state(state)
            terms = self.objective.loss_terms(self.forward, x, g, progress)
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
        if self.tcfg.grad_clip > 0:
            return float(self.accelerator.clip_grad_norm_(params, self.tcfg.grad_clip))
        norms = [p.grad.detach().norm() for p in params if p.grad is not None]
        return float(torch.stack(norms).norm()) if norms else 0.0

    def _log_eval(self, logger, bar) -> dict:
        val = self.evaluate()
        # on corrupted data the clean NELBO of the training split is undefined: report val only
        train = self.evaluate(split="train") if self.objective.reports_train_nelbo else None
        self.last_eval = {
            "step": self.step,
            "val_loss": val["nelbo_nats_per_token"],
            "val_ppl": val["perplexity"],
            "val_bpc": val["bits_per_char"],
            "train_loss": train["nelbo_nats_per_token"] if train else None,
            "train_ppl": train["perplexity"] if train else None,
        }
        logger.log({f"eval/{k}": v for k, v in self.last_eval.items() if k != "step" and v is not None}, self.step)
        line = f"step {self.step}: val loss {val['nelbo_nats_per_token']:.4f} nats/token"
        if val["bits_per_char"] is not None:
            line += f", val bpc {val['bits_per_char']:.4f}, val ppl {val['perplexity']:.3f}"
        else:
            line += f" ({val['nelbo_nats_per_token'] * self.seq_len:.2f} nats/sequence)"
        if self.is_main:
            (bar.write if bar is not None else print)(line)
        return self.last_eval
