"""The built wheel, installed without the checkout: the demo, the packaged examples and the web pages work from it.

A NON-editable wheel goes into a fresh venv that borrows the heavy dependencies from this venv's site-packages
(a .pth file; .pth files in there are not run, so the checkout's editable loopbot stays out), and every command
runs from a temporary directory. A file found through `__file__` but missing from package-data fails here.
"""

from __future__ import annotations

import json
import os
import re
import signal
import site
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from testkit.ports import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
PERSONAS = ("coach", "comedian", "clone")  # the packaged config's; each has one packaged example as its source


def _clean_env() -> dict[str, str]:
    """This environment without anything that points at the checkout, loopbot settings or platform tokens."""
    drop = ("PYTHONPATH", "LOOPBOT_", "TELEGRAM_BOT_TOKEN", "DISCORD_BOT_TOKEN", "VIRTUAL_ENV")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


def _run(args, *, cwd: Path, env: dict, timeout: float) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f"{args} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def wheel_install(tmp_path_factory):
    """Build the wheel, make a venv with no loopbot, check that, install the wheel; the venv's paths."""
    base = tmp_path_factory.mktemp("wheel")
    venv, work, env = base / "venv", base / "work", _clean_env()
    work.mkdir()
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=work, env=env, timeout=120)
    python = venv / "bin" / "python"
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], cwd=work, env=env,
                   timeout=60).stdout.strip()
    deps = [p for p in sys.path if p.endswith("site-packages")] or site.getsitepackages()
    Path(purelib, "loopbot_test_deps.pth").write_text("\n".join(deps) + "\n")
    missing = subprocess.run([str(python), "-c", "import loopbot"], cwd=work, env=env, capture_output=True, text=True,
                             check=False)
    assert "No module named 'loopbot'" in missing.stderr, "the checkout's loopbot leaks into the fresh venv"
    # the fresh venv builds (it sees this venv's setuptools) and installs with this venv's pip
    _run([str(python), "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", str(base / "dist"), str(ROOT)], cwd=work, env=env, timeout=600)
    wheel = next((base / "dist").glob("loopbot-*.whl"))
    _run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)], cwd=work, env=env,
         timeout=300)
    return SimpleNamespace(wheel=wheel, python=python, loopbot=venv / "bin" / "loopbot", purelib=Path(purelib),
                           work=work, env=env)


def test_the_wheel_ships_its_data_files_and_no_test_code(wheel_install):
    names = set(zipfile.ZipFile(wheel_install.wheel).namelist())
    for data in ("loopbot/base/default_config.toml", "loopbot/storage/migrations/env.py",
                 "loopbot/web/templates/index.html", "loopbot/web/static/style.css",
                 "loopbot/examples/coach_qa.jsonl", "loopbot/examples/jokes.jsonl",
                 "loopbot/examples/whatsapp_chat.txt"):
        assert data in names
    assert not [n for n in names if n.startswith(("testkit/", "tests/", "bench/", "loopbot/serving/instant"))]


def test_loopbot_is_imported_from_the_installed_wheel(wheel_install):
    out = _run([str(wheel_install.python), "-c", "import loopbot.web.app as m; print(m.__file__)"],
               cwd=wheel_install.work, env=wheel_install.env, timeout=120).stdout
    assert Path(out.strip()).is_relative_to(wheel_install.purelib)


def test_import_reads_every_personas_packaged_examples(wheel_install, tmp_path):
    for persona in PERSONAS:
        out = _run([str(wheel_install.loopbot), "import", "sources", "--persona", persona, "--json"], cwd=tmp_path,
                   env=wheel_install.env, timeout=300).stdout
        reports = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        assert reports and all(r["added"] > 0 and r["problems"] == [] for r in reports), out
        assert all(Path(r["path"]).is_relative_to(wheel_install.purelib / "loopbot" / "examples") for r in reports)
    assert (tmp_path / "data" / "loopbot.db").is_file()  # the packaged config keeps its data under the cwd


def test_run_serves_the_web_pages_without_any_bot(wheel_install, tmp_path):
    port = free_port()
    env = {**wheel_install.env, "LOOPBOT_WEB__PORT": str(port), "LOOPBOT_SCHEDULE__ENABLED": "false"}
    proc = subprocess.Popen([str(wheel_install.loopbot), "run"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 180
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(f"{url}/healthz", trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "loopbot run did not serve /healthz"
            time.sleep(0.5)
        for path in ("/", "/arena", "/leaderboard"):  # /arena redirects to the default persona's arena
            page = httpx.get(url + path, trust_env=False, follow_redirects=True)
            assert page.status_code == 200 and "coach" in page.text, (path, page.status_code, page.text[:500])
        css = httpx.get(f"{url}/static/style.css", trust_env=False)
        assert css.status_code == 200 and "{" in css.text
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.timeout(1800)
def test_quick_demo_runs_the_whole_loop_from_the_wheel(wheel_install, tmp_path):
    data = tmp_path / "demo"
    out = _run([str(wheel_install.loopbot), "demo", "--quick", "--data-dir", str(data)], cwd=tmp_path,
               env=wheel_install.env, timeout=1700).stdout
    assert re.search(r"the bar: (MET|NOT met)", out), out
    report = (data / "reports" / "demo.md").read_text()
    cycles = [line.split("|")[2].strip() for line in report.split("## Training cycles")[1].splitlines()
              if re.match(r"\| \d \|", line)]
    assert cycles and all(c in ("promoted", "rejected", "skipped") for c in cycles), report  # "failed": a lost file
