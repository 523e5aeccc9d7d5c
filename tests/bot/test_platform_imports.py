"""Only bot/telegram.py imports `telegram` and only bot/discord.py imports `discord`, anywhere in the project."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["bot", "serving", "storage", "trainer", "loopbot", "web"]
OWNERS = {"telegram": "bot/telegram.py", "discord": "bot/discord.py"}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_platform_sdks_are_imported_only_by_their_adapter():
    offenders = []
    files = [p for pkg in PACKAGES if (ROOT / pkg).is_dir() for p in (ROOT / pkg).rglob("*.py")]
    assert any(p.name == "chat.py" for p in files)
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        for sdk in imported_roots(path) & set(OWNERS):
            if rel != OWNERS[sdk]:
                offenders.append(f"{rel} imports {sdk}")
    assert offenders == []


def test_the_rule_catches_an_offender(tmp_path):
    sneaky = tmp_path / "sneaky.py"
    sneaky.write_text("def f():\n    from telegram.ext import Application\n")
    assert "telegram" in imported_roots(sneaky)
