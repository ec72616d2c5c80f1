#!/usr/bin/env bash
# Install tokendiff with every extra and the test-only parity references into .venv (torch pinned by constraints.txt) and run the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q -c constraints.txt torch==2.13.0
.venv/bin/pip install -q -c constraints.txt -e ".[dev,wandb,hf,demo,eval,bench,parity,lora]"
export TOKENDIFF_DATA="${TOKENDIFF_DATA:-$(cd .. && pwd)/shared/data}"
export TOKENDIFF_CACHE="${TOKENDIFF_CACHE:-$(mktemp -d)}"
export WANDB_MODE=offline WANDB_SILENT=true
.venv/bin/ruff check src tests bench
.venv/bin/python -m pytest tests "$@"
