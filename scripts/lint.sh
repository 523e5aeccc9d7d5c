#!/usr/bin/env bash
# The checks that need no test run: ruff (style and bug patterns), import-linter (layers that only point down,
# platform SDKs only in their adapter) and the docs site (`mkdocs build --strict`: no broken link or page).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
./scripts/lint-imports.sh
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet -d "$(mktemp -d)"
echo "lint: ruff, import-linter and the docs build passed"
