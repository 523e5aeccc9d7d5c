"""A loopbot cluster on loopback, for tests/test_cluster.py and bench/bench_cluster.py: every role a real `loopbot`
process on its own "host" (a directory of its own: data_dir, caches, logs; a copy of the base model), sharing only
PostgreSQL, Redis and an S3-compatible server, as docs/deploying.md#several-hosts describes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Host:
    """One role's process and its directory."""

    name: str
    args: list[str]
    env: dict[str, str]
    dir: Path
    proc: asyncio.subprocess.Process | None = None

    @property
    def log_path(self) -> Path:
        return self.dir / "process.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def start(self) -> Host:
        self.dir.mkdir(parents=True, exist_ok=True)
        out = self.log_path.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "loopbot.cli", "--config", str(ROOT / "config.toml"), *self.args, env=self.env,
            cwd=self.dir, stdout=out, stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        out.close()
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def wait_log(self, text: str, timeout: float) -> None:
        """Until the process's log contains `text`; raises with the log's tail if it exits or the time runs out."""
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if not self.running:
                raise AssertionError(f"{self.name} exited ({self.proc.returncode}) before {text!r}:\n"
                                     f"{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: no {text!r} after {timeout:.0f} s:\n{self.log()[-3000:]}")
            await asyncio.sleep(0.2)

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int | None:
        if self.proc is None or self.proc.returncode is not None:
            return self.proc.returncode if self.proc else None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            return await self.proc.wait()


@dataclass
class Cluster:
    """Hosts that share `shared_env` (the database, Redis and S3 settings) and nothing on disk."""

    root: Path
    shared_env: dict[str, str]
    model_dir: Path
    hosts: dict[str, Host] = field(default_factory=dict)

    def host_env(self, host_dir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The environment of a process on `host_dir`: no inherited LOOPBOT_* or bot tokens, its own data_dir and
        its own copy of the base model."""
        model = host_dir / "model"
        if not model.exists():
            shutil.copytree(self.model_dir, model)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("LOOPBOT_") and k not in ("TELEGRAM_BOT_TOKEN", "DISCORD_BOT_TOKEN")}
        env.update({"LOOPBOT_DATA_DIR": str(host_dir / "data"), "LOOPBOT_MODELS__SMOLLM2__PATH": str(model),
                    "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **self.shared_env, **(extra or {})})
        return env

    def add(self, name: str, args: list[str], extra_env: dict[str, str] | None = None) -> Host:
        host_dir = self.root / name
        host_dir.mkdir(parents=True, exist_ok=True)
        host = Host(name, args, self.host_env(host_dir, extra_env), host_dir)
        self.hosts[name] = host
        return host

    async def stop_all(self) -> None:
        await asyncio.gather(*(h.stop(timeout=30) for h in reversed(list(self.hosts.values()))),
                             return_exceptions=True)

    def logs(self) -> str:
        return "\n".join(f"===== {h.name} =====\n{h.log()[-2500:]}" for h in self.hosts.values())
