"""Lay out the checkout's package folders as the wheel installs them (pyproject's package-dir), for import-linter.

Usage: stage_installed_layout.py CHECKOUT DEST [--copy]   (symlinks by default; --copy makes an editable copy)
"""

from __future__ import annotations

import shutil
import sys
import tomllib
from pathlib import Path


def stage(checkout: Path, dest: Path, *, copy: bool = False) -> Path:
    """Build DEST/loopbot/... from CHECKOUT's folders as mapped by [tool.setuptools] package-dir; returns it."""
    package_dir = tomllib.loads((checkout / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    top = dest / "loopbot"
    top.mkdir(parents=True)
    for entry in (checkout / package_dir["loopbot"]).iterdir():
        if entry.name != "__pycache__":
            _place(entry, top / entry.name, copy)
    for package, folder in sorted(package_dir.items()):
        if package != "loopbot":
            _place(checkout / folder, dest.joinpath(*package.split(".")), copy)
    return top


def _place(source: Path, target: Path, copy: bool) -> None:
    if not copy:
        target.symlink_to(source)
    elif source.is_dir():
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
    else:
        shutil.copy2(source, target)


if __name__ == "__main__":
    stage(Path(sys.argv[1]).resolve(), Path(sys.argv[2]), copy="--copy" in sys.argv[3:])
