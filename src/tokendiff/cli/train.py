"""``tokendiff prepare`` and ``tokendiff train``: the data, then a model, in one process or several."""

from __future__ import annotations

import os
import sys

from tokendiff.cli.arguments import load_config, split_args
from tokendiff.cli.output import strict_json
from tokendiff.cli.ranks import leader_first, process_state
from tokendiff.errors import TokenDiffError

__all__ = ["cmd_prepare", "cmd_train", "trainer_from_config"]


def cmd_prepare(args):
    from tokendiff.build import build_dataset

    cfg, _ = load_config(args)
    prepared = build_dataset(cfg)
    if not hasattr(prepared, "meta"):  # images: nothing to tokenize; load (and check) the splits
        splits = {name: len(prepared.split(name)) for name in ("train", "val", "test")}
        print(strict_json({"dataset": cfg.data.dataset, "images": splits}, indent=2))
        return
    print(strict_json({"prepared_dir": str(prepared.root), **prepared.meta}, indent=2))


def trainer_from_config(cfg, model, objective, tokenizer, data, resume_from=None):
    """The :class:`~tokendiff.training.Trainer` of a resolved config: the one place that hands the trainer
    the config sections and values it reads (``tokendiff train``, the benchmarks and the tests build it here)."""
    from tokendiff.configs import to_dict
    from tokendiff.objectives import AutoregressiveObjective
    from tokendiff.training import Trainer
    from tokendiff.training.stages import ArStage, ar_stage_steps

    t = cfg.training
    ar_stage = None
    if t.ar_share > 0:  # A2D in one run: an autoregressive stage first (tokendiff.training.stages)
        ar_stage = ArStage(AutoregressiveObjective(tokenizer.vocab_size), ar_stage_steps(t.ar_share, t.max_iters))
    return Trainer(
        model,
        objective,
        tokenizer,
        data,
        training=cfg.training,
        system=cfg.system,
        logging=cfg.logging,
        sampling=cfg.sampling,
        block_size=cfg.model.block_size,
        eval_t_min=cfg.eval.t_min,
        adapt=cfg.model.adapt == "a2d",
        ar_stage=ar_stage,
        output_dir=cfg.output_dir,
        config_dict=to_dict(cfg),  # recorded in the checkpoints as it is
        resume_from=resume_from,
    )


def lora_base(init_from: str, resume_from=None):
    """The base checkpoint of a LoRA run, as an absolute path: ``training.init_from`` resolved (a run directory to
    its newest checkpoint) for a new run; for a resumed one, where its checkpoint found its base (which may be by
    the path relative to it, after the run and its base were moved together)."""
    from tokendiff.checkpoint import CONFIG, lora_base_dir, read_json, resolve_checkpoint

    if resume_from is not None:
        return lora_base_dir(resume_from, read_json(resume_from / CONFIG))
    return resolve_checkpoint(init_from, "training.init_from").resolve()


def cmd_train(args):
    from tokendiff.build import build_dataset, build_training, default_device
    from tokendiff.checkpoint import load_checkpoint
    from tokendiff.cli.launch import check_process_count, is_launched_worker, launch_workers
    from tokendiff.configs import compose_resume_config, prefer_given_steps, resume_target
    from tokendiff.training.fsdp import launched_with_fsdp
    from tokendiff.training.run_directory import check_run_directory, create_run_directory, run_directory_of

    overrides, _ = split_args(args)
    resume = resume_target(overrides)
    resume_from = None
    if resume:
        loaded = load_checkpoint(resume, what="resume")
        resume_from = loaded.path
        cfg = compose_resume_config(loaded.config, overrides, resume_from)
    else:
        cfg, _ = load_config(args)
    prefer_given_steps(cfg, overrides)
    if not cfg.system.fsdp and launched_with_fsdp():  # accelerate launch --use_fsdp: tokendiff's own sharding
        cfg.system.fsdp = True  # and its rules; the checkpoints record it, so that a resumed run shards too
        cfg.check_fsdp()
    if cfg.training.lora.r and cfg.training.init_from:  # the base, found once: what every checkpoint references
        cfg.training.init_from = str(lora_base(cfg.training.init_from, resume_from))
    device = default_device(cfg.system.device)  # a clear error for a device this machine does not have
    # where the run writes, decided (not yet made) before any work: a resumed run continues in its own
    # directory; the directory is created only once everything else has been checked, below
    run = run_directory_of(resume_from) if resume_from else check_run_directory(cfg.output_dir, cfg.overwrite)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if cfg.system.num_processes > 1 and not is_launched_worker():
        check_process_count(cfg.system.num_processes, device)
        build_dataset(cfg)  # checked and prepared once, before any worker starts (they find it ready)
        return launch_workers(cfg.system.num_processes, args)
    if cfg.system.num_processes > 1 and cfg.system.num_processes != world:
        raise TokenDiffError(
            f"system.num_processes={cfg.system.num_processes}, but the launcher started {world} process(es); "
            "drop system.num_processes= when launching with torchrun or accelerate launch"
        )
    # one process, or one of several (system.num_processes, torchrun, accelerate launch): the main one
    # prepares data and the run directory, the others wait for it and then read what it made
    procs = process_state(cfg.system.device)
    say = print if procs.is_main_process else (lambda *a, **k: None)
    parts = leader_first(procs, lambda: build_training(cfg), local=True)  # each machine prepares its cache once
    if parts.derived:
        say(parts.derived, flush=True)
    data, tokenizer, model, kernel, objective = parts.data, parts.tokenizer, parts.model, parts.kernel, parts.objective
    kind = "autoregressive" if kernel is None else f"{kernel.name} diffusion ({cfg.diffusion.objective})"
    if procs.num_processes > 1:
        engine = "FSDP2, sharded" if cfg.system.fsdp else procs.distributed_type.value
        kind += f" on {procs.num_processes} processes ({engine}; batch_size per process)"
    say(
        f"tokendiff: {kind} {type(model).__name__}, {model.num_parameters() / 1e6:.2f}M parameters "
        f"({model.num_parameters():,}); vocab {tokenizer.vocab_size} ({tokenizer.kind}); "
        f"train {len(data.split('train')):,} sequences/tokens, val {len(data.split('val')):,}; output {run}",
        flush=True,
    )
    if cfg.training.lora.r:
        from tokendiff.training.lora import describe

        say(f"tokendiff: {describe(model)}; base frozen: {cfg.training.init_from or cfg.model.hf_name}", flush=True)
    overwrite = cfg.overwrite
    cfg.output_dir, cfg.overwrite = str(run), False  # what the checkpoints record
    trainer = trainer_from_config(cfg, model, objective, tokenizer, data, resume_from)  # all its checks
    if not resume_from:  # every check has passed (init_from's weights are loaded): now the directory
        leader_first(procs, lambda: create_run_directory(str(run), overwrite), follower=lambda: run)
    if resume_from is not None:
        say(f"resumed from {resume_from} at step {trainer.step}", flush=True)
    result = trainer.train()
    if procs.is_main_process:
        print(f"\nsaved {result.checkpoint} (step {result.step})")
        for i, text in enumerate(result.samples):
            print(f"\n----- sample {i} -----\n{text}")
        if result.eval:
            print("\n" + strict_json(result.eval))
    if procs.num_processes > 1:
        procs.wait_for_everyone()
        procs.destroy_process_group()
        # Everything is written (checkpoints atomically, by the main process, before the barrier) and
        # printed. Leave without running interpreter teardown: gloo's background threads, destroyed
        # with the interpreter, abort the process now and then ("terminate called without an active
        # exception", SIGABRT), which turned a finished run into a failed exit status under load.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
