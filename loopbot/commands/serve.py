"""`loopbot serve`: start a local vLLM server for the base model, load the active adapters, stop it cleanly."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
from pathlib import Path

import typer

from loopbot.commands.context import app_from
from loopbot.serving.factory import served_base_model
from loopbot.serving.offline_model import resolve_model_path
from loopbot.serving.router import Router
from loopbot.serving.vllm import VllmBackend
from loopbot.serving.vllm_server import VllmServer


def _adapter_rank(path: str) -> int:
    try:
        return int(json.loads((Path(path) / "adapter_config.json").read_text()).get("r", 0))
    except (OSError, ValueError):
        return 0


async def _load_active(url: str, served_name: str, routes: dict, api_key: str | None = None) -> tuple[dict, dict]:
    backend = VllmBackend([url], model=served_name, api_key=api_key)
    router = Router(backend)
    try:
        await router.reconcile(routes)
        return router.routes(), dict(router.problems)
    finally:
        await router.aclose()
        await backend.aclose()


def serve(ctx: typer.Context,
          host: str = typer.Option(None, help="address to bind (default serving.vllm.host, 127.0.0.1)"),
          port: int = typer.Option(None, help="port (default serving.vllm.port)"),
          adapters: bool = typer.Option(True, help="load the personas' active adapters once the server is up"),
          start_timeout: float = typer.Option(600, help="seconds to wait for the server's /health")) -> None:
    """Start vLLM's OpenAI-compatible server with runtime LoRA loading, load the active adapters, and run until
    Ctrl-C or SIGTERM (then stop the server and its workers)."""
    import os

    loopbot = app_from(ctx)
    settings = loopbot.settings
    v = settings.serving.vllm
    model_name = served_base_model(settings)
    model_path = resolve_model_path(settings, model_name, progress=lambda line: typer.echo(f"model: {line}"))
    routes = loopbot.active_routes() if adapters else {}
    rank = max([settings.trainer.lora.r] + [_adapter_rank(t[1]) for t in routes.values() if t])
    log_path = loopbot.data_path("logs", f"vllm-{port or v.port}.log")
    server = VllmServer(model_path, served_name=model_name, host=host or v.host, port=port or v.port,
                        max_lora_rank=rank, max_loras=max(v.max_loras, sum(1 for t in routes.values() if t) + 1),
                        max_model_len=min(v.max_model_len, settings.models[model_name].max_context), dtype=v.dtype,
                        gpu_memory_utilization=v.gpu_memory_utilization,
                        api_key=os.environ.get(v.api_key_env) if v.api_key_env else None,
                        extra_args=v.extra_args, log_path=log_path)
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    typer.echo(f"starting vLLM for {model_name} ({model_path}) at {server.url}; log: {log_path}")
    server.start()
    try:
        seconds = server.wait_ready(start_timeout, progress=typer.echo)
        typer.echo(f"vLLM ready in {seconds:.0f} s")
        if routes:
            live, problems = asyncio.run(_load_active(server.url, model_name, routes, server.api_key))
            for persona, name in sorted(live.items()):
                typer.echo(f"  {persona}: {name or 'base model'}")
            for persona, why in sorted(problems.items()):
                typer.echo(f"  {persona}: NOT LOADED: {why}", err=True)
        typer.echo(f"serving at {server.url} (point serving.vllm.urls here); Ctrl-C to stop")
        while not stop.is_set():
            if server.process is None or server.process.poll() is not None:
                typer.echo(f"vLLM exited on its own:\n{server.log_tail()}", err=True)
                raise typer.Exit(1)
            stop.wait(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        code = server.stop()
        typer.echo(f"vLLM stopped (exit code {code})")


def register(app: typer.Typer) -> None:
    app.command()(serve)
