"""``tokendiff <command> [key=value ...]``: prepare, train, sample, eval, score, demo, lm-eval, merge.

This module reads the command, dispatches to it (``cli/train.py``, ``cli/sample.py``,
``cli/evaluate.py``), prints ``--help`` from the config schema, and keeps the promise of every command:
any mistake a user can make ends in one line on stderr and exit status 2 (Ctrl-C: 130), and a bug of
ours in one line that names the file holding its traceback (exit status 1).

Arguments after the command are Hydra overrides (``model.n_layer=6``, ``+experiment=medium``), except
``prompt=`` and ``template=``, taken verbatim (:mod:`tokendiff.cli.arguments`).
"""

from __future__ import annotations

import os
import sys

from tokendiff.cli.evaluate import cmd_eval, cmd_score
from tokendiff.cli.lm_eval import cmd_lm_eval
from tokendiff.cli.merge import cmd_merge
from tokendiff.cli.sample import cmd_demo, cmd_sample
from tokendiff.cli.train import cmd_prepare, cmd_train
from tokendiff.errors import Interrupted, TokenDiffError

USAGE = """usage: tokendiff <command> [key=value ...]

commands:
  prepare   tokenize text into train/val token files:  tokendiff prepare data.input=book.txt data.tokenizer=bpe
  train     train a model:                             tokendiff train +experiment=small training.max_iters=5000
  sample    generate text from a checkpoint:           tokendiff sample checkpoint=out prompt="ROMEO:"
  eval      NELBO / bits per char / perplexity:        tokendiff eval checkpoint=out
  score     sample quality under an autoregressive run: tokendiff score samples=s.jsonl reference=out/ar
  demo      a browser page that streams the denoising:  tokendiff demo checkpoint=out demo.port=7860
  lm-eval   score with lm-evaluation-harness:          tokendiff lm-eval checkpoint=out tasks=[lambada] mc_num=32
  merge     fold a LoRA adapter into its base:         tokendiff merge checkpoint=out/lora output_dir=out/merged

Every key=value is a Hydra override of the config in tokendiff/configs/sections/;
presets: +experiment=quickstart (A2D) | quickstart_mdlm | shakespeare_char | shakespeare_char_ar
         | shakespeare_char_udlm | shakespeare_char_hybrid | shakespeare_char_bd3 | small | medium | mnist
         | mnist_baseline | mnist_ambient.
"""

COMMANDS = {
    "prepare": cmd_prepare, "train": cmd_train, "sample": cmd_sample, "eval": cmd_eval, "score": cmd_score,
    "demo": cmd_demo, "lm-eval": cmd_lm_eval, "merge": cmd_merge,
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
    "lm-eval": ([], []),
    "merge": ([], ["checkpoint", "output_dir", "overwrite"]),
}
EXTRA_HELP = {  # keys a command reads that are not config keys
    "lm-eval": (
        "harness: tasks=[a,b] (required) include_path=<folder of task YAMLs> output_path=<folder> limit=N "
        "num_fewshot=N log_samples=true|false\nthe tokendiff backend's model arguments: checkpoint=<run> "
        "mc_num=32 batch_size=32 seed=0 greedy=true device=auto dtype=float32 max_gen_toks=256 "
        "requests_file=<path>\nand the sampler's: steps strategy temperature top_p top_k threshold confidence "
        "block_size remask remask_eta kv_cache time_grid cache (also as sampling.<key>)"
    ),
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
