"""Start, watch and stop a local vLLM OpenAI-compatible server (for `loopbot serve` and the real-vLLM tests)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from loopbot.serving.errors import BackendUnavailable


class StartCancelled(BackendUnavailable):
    """The stop event was set while waiting for the server to be ready (SIGTERM during a slow start)."""


def cuda_available() -> bool:
    import torch  # heavy: only when a server is started

    return torch.cuda.is_available()


class VllmServer:
    """`python -m vllm.entrypoints.openai.api_server` with runtime LoRA loading enabled, in its own process group."""

    def __init__(self, model_path: str | Path, *, served_name: str, host: str = "127.0.0.1", port: int = 8000,
                 max_lora_rank: int = 16, max_loras: int = 4, max_model_len: int = 2048, dtype: str = "auto",
                 max_num_seqs: int | None = None, gpu_memory_utilization: float | None = None,
                 api_key: str | None = None, extra_args: list[str] | tuple[str, ...] = (),
                 log_path: str | Path | None = None, python: str = sys.executable):
        self.model_path = str(model_path)
        self.served_name = served_name
        self.host, self.port = host, port
        self.max_lora_rank, self.max_loras, self.max_model_len = max_lora_rank, max_loras, max_model_len
        self.gpu = cuda_available()
        self.dtype = dtype if dtype != "auto" or self.gpu else "float32"
        self.max_num_seqs = max_num_seqs if max_num_seqs is not None else (None if self.gpu else 8)
        self.gpu_memory_utilization = gpu_memory_utilization
        self.api_key = api_key
        self.extra_args = list(extra_args)
        self.log_path = Path(log_path) if log_path else None
        self.python = python
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    def command(self) -> list[str]:
        cmd = [self.python, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model_path,
               "--served-model-name", self.served_name, "--host", self.host, "--port", str(self.port),
               "--dtype", self.dtype, "--max-model-len", str(self.max_model_len),
               "--enable-lora", "--max-lora-rank", str(self.max_lora_rank), "--max-loras", str(self.max_loras)]
        if self.max_num_seqs:
            cmd += ["--max-num-seqs", str(self.max_num_seqs)]
        if self.gpu_memory_utilization:
            cmd += ["--gpu-memory-utilization", str(self.gpu_memory_utilization)]
        return cmd + self.extra_args  # the API key goes in the environment (VLLM_API_KEY), not here: see `ps`

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", "HF_HUB_OFFLINE": "1",
                    "VLLM_HOST_IP": "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host,
                    "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"})
        if not self.gpu:
            env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        if self.api_key:  # vLLM reads it from there; a command-line --api-key is visible to every local user
            env["VLLM_API_KEY"] = self.api_key
        return env

    def start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.process = subprocess.Popen(self.command(), env=self.environment(), stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            if out is not subprocess.DEVNULL:
                out.close()

    def log_tail(self, lines: int = 20) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait_ready(self, timeout_s: float = 300.0, *, progress=None, stop=None) -> float:
        """Block until /health answers 200; returns the seconds it took. Raises if the process dies or times out,
        and StartCancelled when `stop` (a threading.Event) is set meanwhile."""
        started = time.monotonic()
        next_note = started + 10
        while True:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise BackendUnavailable(f"vLLM exited (code {code}) before it was ready:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2.0, trust_env=False).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            if stop is not None and stop.is_set():
                raise StartCancelled(f"stopped while waiting for vLLM at {self.url}")
            now = time.monotonic()
            if now - started > timeout_s:
                self.stop()
                raise BackendUnavailable(f"vLLM did not answer /health within {timeout_s:.0f} s:\n{self.log_tail()}")
            if progress and now >= next_note:
                progress(f"waiting for vLLM at {self.url} ({now - started:.0f} s)")
                next_note = now + 10
            time.sleep(0.5)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM the server's process group, SIGKILL it if it has not exited after `timeout_s`."""
        proc = self.process
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        self.process = None
        return proc.returncode

    def __enter__(self) -> VllmServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
