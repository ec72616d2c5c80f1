"""``tokendiff <command> [key=value ...]``: prepare, train, sample, eval.

Arguments after the command are Hydra overrides (``model.n_layer=6``, ``+experiment=medium``).
``prompt=`` and ``template=`` take the rest of their argument verbatim, so a prompt may hold any
character (commas, brackets, quotes) without Hydra's quoting rules.

Any mistake a user can make ends in one line on stderr and exit status 2.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from pathlib import Path

from tokendiff.errors import Interrupted, TokenDiffError

USAGE = """usage: tokendiff <command> [key=value ...]

commands:
  prepare   tokenize text into train/val token files:  tokendiff prepare data.input=book.txt data.tokenizer=bpe
  train     train a model:                             tokendiff train +experiment=small training.max_iters=5000
  sample    generate text from a checkpoint:           tokendiff sample checkpoint=out prompt="ROMEO:"
  eval      NELBO / bits per char / perplexity:        tokendiff eval checkpoint=out
  score     sample quality under an autoregressive run: tokendiff score samples=s.jsonl reference=out/ar
  demo      a browser page that streams the denoising:  tokendiff demo checkpoint=out demo.port=7860

Every key=value is a Hydra override of the config in tokendiff/configs/schema.py;
presets: +experiment=shakespeare_char | shakespeare_char_ar | shakespeare_char_udlm | shakespeare_char_hybrid
         | small | medium | mnist | mnist_baseline | mnist_ambient.
"""

VERBATIM_KEYS = ("prompt=", "template=")


def strict_json(value, **kwargs) -> str:
    """JSON with ``null`` for a NaN or infinite number (which JSON has no literal for)."""

    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(value), allow_nan=False, **kwargs)


def split_args(args: list[str]) -> tuple[list[str], dict]:
    """Separate Hydra overrides from the verbatim ``prompt=`` / ``template=`` values."""
    overrides, verbatim = [], {}
    for arg in args:
        key = next((k for k in VERBATIM_KEYS if arg.startswith(k)), None)
        if key:
            verbatim[key[:-1]] = arg[len(key) :]
        else:
            overrides.append(arg)
    return overrides, verbatim


def load_config(args: list[str]):
    from tokendiff.configs import compose_config

    overrides, verbatim = split_args(args)
    cfg = compose_config(overrides)
    for key, value in verbatim.items():
        setattr(cfg, key, value)
    return cfg, overrides


def cmd_prepare(args):
    from tokendiff.build import build_dataset

    cfg, _ = load_config(args)
    prepared = build_dataset(cfg)
    if not hasattr(prepared, "meta"):  # images: nothing to tokenize; load (and check) the splits
        splits = {name: len(prepared.split(name)) for name in ("train", "val", "test")}
        print(strict_json({"dataset": cfg.data.dataset, "images": splits}, indent=2))
        return
    print(strict_json({"prepared_dir": str(prepared.root), **prepared.meta}, indent=2))


def cmd_train(args):
    from tokendiff.build import build_dataset, build_training, default_device
    from tokendiff.checkpoint import load_checkpoint
    from tokendiff.cli.launch import check_process_count, is_launched_worker, launch_workers
    from tokendiff.configs import compose_resume_config, to_dict
    from tokendiff.training import Trainer
    from tokendiff.training.run_directory import check_run_directory, create_run_directory, run_directory_of

    overrides, _ = split_args(args)
    resume = next((o.split("=", 1)[1] for o in overrides if o.startswith("resume=")), None)
    resume_from = None
    if resume:
        if any(o.startswith("output_dir=") for o in overrides):
            raise TokenDiffError("a resumed run continues in its own run directory; drop output_dir=")
        changed = [o.split("=", 1)[0] for o in overrides if o.startswith("model.")]
        if changed:
            raise TokenDiffError(f"a resumed run keeps its model; drop {changed[0]}= (or start a new run)")
        loaded = load_checkpoint(resume, what="resume")
        resume_from = loaded.path
        cfg = compose_resume_config(loaded.config, [o for o in overrides if not o.startswith("resume=")])
        cfg.resume = str(resume_from)
    else:
        cfg, _ = load_config(args)
    if any(o.startswith("training.max_iters=") for o in overrides):
        cfg.training.n_epochs = None  # an explicit step count wins over the preset's epochs
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
        kind += f" on {procs.num_processes} processes ({procs.distributed_type.value}; batch_size per process)"
    say(
        f"tokendiff: {kind} {type(model).__name__}, {model.num_parameters() / 1e6:.2f}M parameters "
        f"({model.num_parameters():,}); vocab {tokenizer.vocab_size} ({tokenizer.kind}); "
        f"train {len(data.split('train')):,} sequences/tokens, val {len(data.split('val')):,}; output {run}",
        flush=True,
    )
    overwrite = cfg.overwrite
    cfg.output_dir, cfg.overwrite = str(run), False  # what the checkpoints record
    trainer = Trainer(cfg, to_dict(cfg), model, objective, tokenizer, data, resume_from)  # all its checks
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


def process_state(device: str):
    """accelerate's view of the processes of this run (one, unless started by accelerate launch / torchrun)."""
    from accelerate import PartialState

    return PartialState(cpu=device == "cpu")


def leader_first(procs, work, follower=None, local: bool = False):
    """``work()`` on the leading process (the main one, or each machine's first with ``local``), then
    ``(follower or work)()`` on the others, which find what the leader made. A leader's TokenDiffError is
    the run's one-line error: every process raises it (the main one prints it) instead of waiting in a
    barrier for a leader that has stopped."""
    if procs.num_processes == 1:
        return work()
    from accelerate.utils import gather_object

    leader = procs.is_local_main_process if local else procs.is_main_process
    result, error = None, None
    if leader:
        try:
            result = work()
        except TokenDiffError as exc:
            error = exc
    messages = [m for m in gather_object([None if error is None else str(error)]) if m]
    if messages:
        raise error if error is not None else TokenDiffError(messages[0])
    return result if leader else (follower or work)()


def _device(cfg):
    from tokendiff.build import default_device

    return default_device(cfg.system.device)


def inherit_sampling(cfg, overrides: list[str], saved) -> None:
    """Sampling settings the user did not give on the command line come from the checkpoint's config
    (a preset's ``sampling.steps: 40`` stays 40)."""
    from dataclasses import fields

    given = {o.split("=", 1)[0].lstrip("+") for o in overrides}
    for f in fields(saved.sampling):
        if f"sampling.{f.name}" not in given and f.name not in ("trajectory", "output", "inpaint"):
            setattr(cfg.sampling, f.name, getattr(saved.sampling, f.name))


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` beside ``path`` and rename it into place: never a half-written file."""
    import tempfile

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    except OSError as exc:
        raise TokenDiffError(f"cannot write {path} ({exc.strerror}); choose another path") from None
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def cmd_sample(args):
    from tokendiff.checkpoint import load_checkpoint
    from tokendiff.configs import to_dict
    from tokendiff.samplers.text import generate, sampling_options

    cfg, overrides = load_config(args)
    device = _device(cfg)
    ckpt = load_checkpoint(cfg.checkpoint, device=device)
    inherit_sampling(cfg, overrides, ckpt.config)
    if ckpt.tokenizer.kind == "binary_image":
        return _sample_images(cfg, ckpt, device)
    s = cfg.sampling
    if s.output:  # checked before the work, so a bad path costs nothing
        from tokendiff.viz.files import check_output_file

        check_output_file(s.output, "sampling.output", (".jsonl",), replace=cfg.overwrite)
    frames = []
    watchers = []
    if s.trajectory:
        from tokendiff.viz.text import check_trajectory_path

        check_trajectory_path(s.trajectory, replace=cfg.overwrite)
        watchers.append(lambda step, x: frames.append(x[0].cpu().clone()))
    live = contextlib.nullcontext()
    if s.live:
        if ckpt.kernel is None:
            raise TokenDiffError("sampling.live=true shows denoising; an autoregressive model has none to show")
        from tokendiff.viz.live import LiveView

        live = LiveView(ckpt.tokenizer, ckpt.kernel.mask_token_id, s.steps)
        watchers.append(live.update)
    callback = (lambda step, x: [w(step, x) for w in watchers]) if watchers else None
    start = time.perf_counter()
    with live:
        texts, stats = generate(
            ckpt.model,
            ckpt.kernel,
            ckpt.tokenizer,
            **sampling_options(s),
            num_samples=cfg.num_samples,
            length=s.length or ckpt.config.model.block_size,
            prompt=cfg.prompt,
            template=cfg.template,
            seed=cfg.seed,
            device=device,
            callback=callback,
        )
    seconds = time.perf_counter() - start
    if s.output:  # one JSON line per sample: its text and what made it (written atomically)
        settings = {k: v for k, v in to_dict(cfg)["sampling"].items() if k not in ("output", "trajectory")}
        record = {"checkpoint": str(ckpt.path), "step": ckpt.step, "seed": cfg.seed, "prompt": cfg.prompt}
        record |= {"template": cfg.template, "sampling": settings}
        lines = [json.dumps({"index": i, "text": t, **record}) + "\n" for i, t in enumerate(texts)]
        write_atomically(Path(s.output).expanduser(), "".join(lines))
        print(f"[{len(texts)} samples written to {s.output}]", file=sys.stderr)
    for i, text in enumerate(texts):
        print(f"----- sample {i} -----\n{text}\n")
    print(
        f"[{cfg.num_samples} samples, {stats['model_calls']} model calls, "
        f"{stats['tokens'] / seconds:,.0f} tokens/s, checkpoint {ckpt.path}]",
        file=sys.stderr,
    )
    if s.trajectory:
        from tokendiff.viz.text import write_trajectory

        path = write_trajectory(s.trajectory, frames, ckpt.tokenizer, ckpt.kernel.mask_token_id)
        print(f"[denoising trajectory of sample 0 written to {path}]", file=sys.stderr)


def _sample_images(cfg, ckpt, device) -> None:
    import numpy as np

    from tokendiff.data.mnist import load_binarized_mnist
    from tokendiff.evaluation.images import inpaint, shuffled_test_images
    from tokendiff.samplers.images import draw_images
    from tokendiff.viz.files import check_output_file
    from tokendiff.viz.images import save_grid, save_trajectory

    s = cfg.sampling
    if cfg.prompt or cfg.template:
        raise TokenDiffError("an image model takes no prompt or template; use sampling.inpaint=true")
    output = s.output or ("inpainting.png" if s.inpaint else "samples.png")
    check_output_file(output, "sampling.output", (".png", ".gif", ".jpg", ".jpeg", ".webp"), replace=cfg.overwrite)
    if s.trajectory:
        check_output_file(s.trajectory, "sampling.trajectory", (".gif", ".png"), replace=cfg.overwrite)
    start = time.perf_counter()
    if s.inpaint:
        clean = shuffled_test_images(load_binarized_mnist("test", cfg.data.data_dir), cfg.num_samples)
        q = ckpt.config.data.observed_fraction  # the corruption the model was trained for
        accuracy, corrupted, completed = inpaint(ckpt.model, ckpt.kernel, clean, q, s.steps, cfg.seed, device=device)
        save_grid(np.concatenate([corrupted, completed, clean]), output, nrow=len(clean))  # observed, completed, truth
        print(
            strict_json(
                {"inpainting_accuracy": accuracy, "observed_fraction": q, "images": len(clean), "output": str(output)}
            )
        )
        return
    frames = []
    callback = (lambda step, x: frames.append(x.cpu().numpy().copy())) if s.trajectory else None  # noqa: E731
    images = draw_images(
        ckpt.model,
        ckpt.kernel,
        cfg.num_samples,
        s.steps,
        s.temperature,
        s.strategy,
        cfg.seed,
        s.batch_size,
        device,
        callback,
    )
    save_grid(images, output)
    seconds = time.perf_counter() - start
    print(f"[{cfg.num_samples} images in {seconds:.1f}s written to {output}; checkpoint {ckpt.path}]", file=sys.stderr)
    if s.trajectory:
        path = save_trajectory(frames, s.trajectory)
        print(f"[denoising trajectory written to {path}]", file=sys.stderr)


def eval_weights_file(checkpoint, eval_cfg) -> str:
    """The weights ``eval.weights`` names, relative to the checkpoint directory."""
    from tokendiff.checkpoint import TRAINING_STATE, WEIGHTS, resolve_checkpoint

    if eval_cfg.weights == "ema":
        return WEIGHTS
    raw, ckpt = f"{TRAINING_STATE}/{WEIGHTS}", resolve_checkpoint(checkpoint)
    if not (ckpt / raw).exists():
        raise TokenDiffError(
            f"eval.weights=raw: {ckpt} has no {raw} (a checkpoint saved for sampling only); use eval.weights=ema"
        )
    return raw


def cmd_eval(args):
    from tokendiff.build import build_dataset
    from tokendiff.checkpoint import load_checkpoint
    from tokendiff.evaluation import evaluate_likelihood

    cfg, _ = load_config(args)
    device = _device(cfg)
    ckpt = load_checkpoint(cfg.checkpoint, device=device, weights_file=eval_weights_file(cfg.checkpoint, cfg.eval))
    if cfg.eval.data and ckpt.tokenizer.kind == "binary_image":
        raise TokenDiffError("eval.data is for text models; an image model is evaluated on its own test set")
    if cfg.eval.data:  # zero-shot: another corpus, in the checkpoint's tokenizer (the data.* keys say how to read it)
        from tokendiff.data.text import resolve_eval_corpus

        d = cfg.data
        data = resolve_eval_corpus(cfg.eval.data, ckpt.tokenizer, d.data_dir, d.text_column, d.val_fraction, d.num_proc)
    else:
        data = build_dataset(ckpt.config)  # the corpus the model was trained on (prepared again if missing)
    if ckpt.tokenizer.kind == "binary_image":
        from tokendiff.evaluation.images import evaluate_images

        print(strict_json(evaluate_images(ckpt, data, cfg.eval, cfg.seed, device), indent=2))
        return
    if data.tokenizer().fingerprint() != ckpt.tokenizer.fingerprint():
        raise TokenDiffError(
            f"the corpus prepared in {data.root} uses another tokenizer than {ckpt.path}; "
            "was the checkpoint's tokenizer replaced? use the files saved with the checkpoint"
        )
    split_name = cfg.eval.split or "val"
    split = data.split(split_name)
    seq_len = ckpt.config.model.block_size + ckpt.objective.extra_tokens
    windows = split.windows(seq_len, cfg.eval.max_windows)
    if len(windows) == 0:
        raise TokenDiffError(f"the {split_name} split has fewer than {seq_len} tokens; nothing to evaluate")
    result = evaluate_likelihood(
        ckpt.model,
        ckpt.objective,
        windows,
        num_draws=cfg.eval.num_draws,
        batch_size=cfg.eval.batch_size,
        seed=cfg.seed,
        chars_per_token=split.chars_per_token,
        device=device,
        t_min=cfg.eval.t_min,
    )
    trained_on = ckpt.config.data
    out = {
        "checkpoint": str(ckpt.path),
        "step": ckpt.step,
        "data": cfg.eval.data or trained_on.input or trained_on.hf_path or trained_on.dataset,
        "split": split_name,
        "weights": cfg.eval.weights,
        **result.to_dict(),
    }
    print(strict_json(out, indent=2))


def read_samples(path: str) -> list[str]:
    """The texts of a samples file written by ``tokendiff sample sampling.output=<file>.jsonl``."""
    p = Path(path).expanduser()
    if p.suffix != ".jsonl" or not p.is_file():
        raise TokenDiffError(
            f"samples={path!r} is not a .jsonl file; write one with tokendiff sample sampling.output=samples.jsonl"
        )
    texts = []
    for n, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        try:
            row = json.loads(line) if line.strip() else None
        except json.JSONDecodeError:
            row = None
        if line.strip() and not (isinstance(row, dict) and isinstance(row.get("text"), str)):
            raise TokenDiffError(
                f"samples={path!r}: line {n} is not a JSON object with a text; use the file tokendiff sample wrote"
            )
        if row:
            texts.append(row["text"])
    if not texts:
        raise TokenDiffError(f"samples={path!r} holds no samples")
    return texts


def cmd_score(args):
    from tokendiff.build import build_dataset
    from tokendiff.checkpoint import load_checkpoint
    from tokendiff.evaluation.samples import generative_perplexity, text_statistics

    cfg, _ = load_config(args)
    if not cfg.samples:
        raise TokenDiffError(
            "no samples given; pass samples=<file.jsonl written by tokendiff sample sampling.output=...>"
        )
    texts = read_samples(cfg.samples)
    device = _device(cfg)
    ref = load_checkpoint(cfg.reference, device=device, what="reference")
    if ref.kernel is not None:
        raise TokenDiffError(f"reference={cfg.reference!r} is a diffusion model; give an autoregressive run")
    ids = [ref.tokenizer.encode(t) for t in texts]
    batch = cfg.eval.batch_size
    result = {"samples": cfg.samples, "reference": str(ref.path), "num_samples": len(texts)}
    result |= generative_perplexity(ref.model, ids, device, batch) | text_statistics(ids)
    # the yardstick: as many windows of real validation text, of the samples' mean length in tokens
    val = build_dataset(ref.config).split("val")
    length = max(2, round(sum(map(len, ids)) / len(ids)))
    real = val.windows(min(length, len(val)), len(texts)).tolist()
    result["real_text"] = generative_perplexity(ref.model, real, device, batch) | text_statistics(real)
    print(strict_json(result, indent=2))


def cmd_demo(args):
    """A local Gradio page (``pip install 'tokendiff[demo]'``) that streams one sample's denoising."""
    from tokendiff.checkpoint import load_checkpoint
    from tokendiff.viz.demo import check_gradio, serve, split_server_args

    host, port, rest = split_server_args(args)  # demo.host= / demo.port= are not config keys
    cfg, overrides = load_config(rest)
    check_gradio()
    device = _device(cfg)
    ckpt = load_checkpoint(cfg.checkpoint, device=device)
    if ckpt.kernel is None or ckpt.tokenizer.kind == "binary_image":
        raise TokenDiffError("tokendiff demo shows the denoising of text; give a text diffusion checkpoint")
    inherit_sampling(cfg, overrides, ckpt.config)
    serve(ckpt, cfg, host, port, device)


COMMANDS = {
    "prepare": cmd_prepare, "train": cmd_train, "sample": cmd_sample, "eval": cmd_eval, "score": cmd_score,
    "demo": cmd_demo,
}  # fmt: skip

# the config keys each command reads, for `tokendiff <command> --help`
COMMAND_KEYS = {
    "prepare": (["data"], []),
    "train": (
        ["model", "diffusion", "data", "training", "system", "logging", "sampling", "ambient"],
        ["output_dir", "overwrite", "resume"],
    ),
    "sample": (["sampling", "system"], ["checkpoint", "prompt", "template", "num_samples", "seed", "overwrite"]),
    "eval": (["eval", "system"], ["checkpoint", "seed"]),
    "score": (["system"], ["samples", "reference"]),
    "demo": (["sampling", "system"], ["checkpoint", "prompt", "seed"]),
}
EXTRA_HELP = {  # keys a command reads that are not config keys
    "demo": f"\ndemo.*  the page's server (host= and port= for short)\n  {'demo.host=127.0.0.1':<40} "
    f"address to listen on (0.0.0.0: every interface)\n  {'demo.port=7860':<40} port to listen on",
}


def command_help(command: str) -> str:
    from tokendiff.configs import describe_keys, presets

    sections, top = COMMAND_KEYS[command]
    line = next(x for x in USAGE.splitlines() if x.strip().startswith(command + " "))
    return (
        f"usage: tokendiff {command} [key=value ...]\n\n{line.strip()}\n\n"
        f"keys (key=default, then what it does; presets: +experiment={'|'.join(presets())}):\n"
        + describe_keys(sections, top)
        + EXTRA_HELP.get(command, "")
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    command, args = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"tokendiff: error: unknown command {command!r}; use one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    if any(a in ("-h", "--help", "help") for a in args):
        print(command_help(command))
        return 0
    # in a run of several processes (system.num_processes, torchrun, accelerate launch) every process
    # meets the same user error: the main one says it, the others only exit with its status
    speaks = int(os.environ.get("RANK", "0")) == 0
    try:
        return COMMANDS[command](args) or 0
    except TokenDiffError as exc:
        if speaks:
            kind = "" if isinstance(exc, Interrupted) else "error: "
            print(f"tokendiff {command}: {kind}{exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        if speaks:
            print(f"tokendiff {command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug of ours: one line for the user, the traceback in a file for the report
        log = write_crash_log(command, argv)
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        print(
            f"tokendiff {command}: internal error ({type(exc).__name__}: {first}); the traceback is in {log}, "
            "please attach it to a bug report",
            file=sys.stderr,
        )
        return 1


def write_crash_log(command: str, argv: list[str]) -> str:
    """Write the current exception's traceback to a file in the temporary directory; return its path."""
    import tempfile
    import traceback

    from tokendiff._version import __version__

    fd, path = tempfile.mkstemp(prefix=f"tokendiff-{command}-crash-", suffix=".log")
    with os.fdopen(fd, "w") as f:
        f.write(f"tokendiff {__version__}, python {sys.version.split()[0]}\nargv: {argv}\n\n{traceback.format_exc()}")
    return path


if __name__ == "__main__":
    sys.exit(main())
