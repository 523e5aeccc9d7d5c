#!/usr/bin/env bash
# Run every test (SQLite and PostgreSQL, the real Telegram/Discord libraries over loopback, a real vLLM server,
# real training with tiny models, the headless browser). Extra arguments go to pytest, e.g. -m "not slow".
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 NO_PROXY=127.0.0.1,localhost
exec .venv/bin/python -m pytest -q -ra --durations=15 "$@"
