#!/usr/bin/env bash
# Check the import contracts in pyproject.toml ([tool.importlinter]): layers, and who may import the platform SDKs.
# import-linter reads a package from one folder, but loopbot's parts live in top-level folders (setuptools
# package-dir), so this lays them out as installed (symlinks in a temporary folder) and lints that. Extra
# arguments go to lint-imports, e.g. --verbose.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
"$root/.venv/bin/python" "$root/scripts/stage_installed_layout.py" "$root" "$stage"
cd "$stage"  # not the checkout: there `import loopbot` would find ./loopbot without its parts
PYTHONPATH="$stage" "$root/.venv/bin/lint-imports" --config "$root/pyproject.toml" --no-cache "$@"
