"""``python -m tokendiff.harness`` (and the ``tokendiff-lm-eval`` command): lm-eval's own command line, every
flag of it, with the ``tokendiff`` backend registered: ``tokendiff-lm-eval --model tokendiff --model_args
checkpoint=out,mc_num=32 --tasks ... --output_path results``. lm-eval 0.4 looks up ``--model`` in a registry
it fills itself and loads no third-party entry points, so ``lm_eval --model tokendiff`` cannot find it."""

from __future__ import annotations

import sys


def main() -> int:
    from tokendiff.errors import TokenDiffError
    from tokendiff.extras import require

    try:
        require("lm_eval", "the lm-eval backend")
        import tokendiff.harness.backend  # noqa: F401  registers --model tokendiff
        from lm_eval.__main__ import cli_evaluate

        cli_evaluate()
    except TokenDiffError as e:
        print(f"tokendiff-lm-eval: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
