"""No two of our modules import each other, directly or through others (imports inside functions count too)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# folder -> the package it installs as (pyproject.toml's package-dir)
PACKAGES = {"loopbot": "loopbot", "bot": "loopbot.bot", "serving": "loopbot.serving", "storage": "loopbot.storage",
            "trainer": "loopbot.trainer", "web": "loopbot.web"}


def module_files(root: Path, packages: dict[str, str]) -> dict[str, Path]:
    """{module name: file} for every .py file under the package folders (migrations aside)."""
    out = {}
    for folder, package in packages.items():
        for path in (root / folder).rglob("*.py"):
            parts = path.relative_to(root / folder).with_suffix("").parts
            if "migrations" in parts:
                continue
            name = ".".join((package, *parts))
            out[name.removesuffix(".__init__")] = path
    return out


def import_graph(files: dict[str, Path]) -> dict[str, set[str]]:
    """{module: the modules among `files` it imports}; `from package import module` counts as importing module."""
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in files else node.module
                           for alias in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t in files and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_our_modules_import_each_other_in_one_direction_only():
    files = module_files(ROOT, PACKAGES)
    assert "loopbot.bot.chat" in files and "loopbot.trainer.importers.common" in files
    assert cycles(import_graph(files)) == []


def test_the_rule_catches_a_circle_hidden_in_a_function(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("from loopbot.pkg import b\n")
    (tmp_path / "pkg" / "b.py").write_text("def f():\n    from loopbot.pkg.c import g\n")
    (tmp_path / "pkg" / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                           "    from loopbot.pkg.a import x\n")
    graph = import_graph(module_files(tmp_path, {"pkg": "loopbot.pkg"}))
    assert cycles(graph) == [["loopbot.pkg.a", "loopbot.pkg.b", "loopbot.pkg.c"]]
