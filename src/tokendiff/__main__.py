"""``python -m tokendiff ...``: the same as the ``tokendiff`` command (and what ``accelerate launch -m``
needs)."""

import sys

from tokendiff.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
