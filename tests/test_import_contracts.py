"""The import contracts in pyproject.toml (layers; only the adapters import the platform SDKs), run by import-linter."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
stage = runpy.run_path(str(ROOT / "scripts" / "stage_installed_layout.py"))["stage"]

OFFENDERS = {  # module file -> source; each breaks one contract
    "storage/sneaky.py": "import loopbot.web\n",
    "serving/sneaky.py": "import loopbot.storage\n",
    "bot/sneaky.py": "def f():\n    import telegram.ext\n",
    "web/sneaky.py": "def f():\n    from discord import Intents\n",
    "newpart/__init__.py": "",
}


def lint_imports(staged: Path) -> subprocess.CompletedProcess:
    """lint-imports with the project's contracts on the loopbot package laid out under `staged`."""
    return subprocess.run([str(Path(sys.executable).parent / "lint-imports"), "--config", str(ROOT / "pyproject.toml"),
                           "--no-cache"], cwd=staged, env={**os.environ, "PYTHONPATH": str(staged)},
                          capture_output=True, text=True, timeout=120, check=False)


def test_the_code_keeps_the_import_contracts(tmp_path):
    stage(ROOT, tmp_path)
    result = lint_imports(tmp_path)
    assert result.returncode == 0 and " 0 broken." in result.stdout, result.stdout + result.stderr


def test_the_contracts_catch_wrong_layers_sdk_imports_and_an_unplaced_part(tmp_path):
    package = stage(ROOT, tmp_path, copy=True)
    for name, source in OFFENDERS.items():
        (package / name).parent.mkdir(exist_ok=True)
        (package / name).write_text(source)
    result = lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    for line in ("loopbot.storage.sneaky -> loopbot.web (l.1)", "loopbot.serving.sneaky -> loopbot.storage (l.1)",
                 "loopbot.bot.sneaky -> telegram (l.2)", "loopbot.web.sneaky -> discord (l.2)", "- loopbot.newpart"):
        assert line in result.stdout, result.stdout
