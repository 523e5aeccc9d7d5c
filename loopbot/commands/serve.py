"""`loopbot serve`: start a local vLLM server per base model (or --model), load the active adapters, stop cleanly."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
from pathlib import Path

import typer

from loopbot.base.errors import UsageError
from loopbot.commands.context import app_from
from loopbot.serving.base_models import base_model_check, used_models
from loopbot.serving.offline_model import resolve_model_path
from loopbot.serving.router import Router
from loopbot.serving.vllm import VllmBackend
from loopbot.serving.vllm_server import StartCancelled, VllmServer


def _adapter_rank(path: str) -> int:
    try:
        return int(json.loads((Path(path) / "adapter_config.json").read_text()).get("r", 0))
    except (OSError, ValueError):
        return 0


async def _load_active(url: str, served_name: str, routes: dict, api_key: str | None = None, check=None,
                       settings=None) -> tuple[dict, dict]:
    backend = VllmBackend([url], model=served_name, api_key=api_key)
    router = Router(backend, check=check,
                    persona_models={p: settings.personas[p].base_model for p in routes} if settings else None)
    try:
        await router.reconcile(routes)
        return router.routes(), dict(router.problems)
    finally:
        await router.aclose()
        await backend.aclose()


def _port_of(url: str) -> int | None:
    from urllib.parse import urlsplit

    try:
        return urlsplit(url).port
    except ValueError:
        return None


def _plan(settings, model: str | None, port: int | None) -> list[tuple[str, int]]:
    """(base model, port) of each server to start: every base model the personas use, or just --model; a model's
    port is --port, else the port of its first URL in a `serving.vllm.urls` table, else serving.vllm.port (+1 for
    each further model)."""
    v = settings.serving.vllm
    if model is not None:
        if model not in settings.models:
            raise UsageError(f"--model {model!r}: no such model (expected one of the [models.*] tables: "
                             f"{', '.join(sorted(settings.models))})")
        models = [model]
    else:
        models = used_models(settings)
    if port is not None and len(models) > 1:
        raise UsageError(f"--port with {len(models)} base models ({', '.join(models)}): start one with --model NAME "
                         "--port P, or give each its port in a serving.vllm.urls table")
    table = v.urls if isinstance(v.urls, dict) else {}
    plan: list[tuple[str, int]] = []
    for i, name in enumerate(models):
        first = (table.get(name) or [None])[0]
        plan.append((name, port or (first and _port_of(first)) or v.port + i))
    taken = [p for _, p in plan]
    if len(set(taken)) < len(taken):
        raise UsageError(f"serving.vllm.urls: two base models on one port ({', '.join(f'{m}:{p}' for m, p in plan)})")
    return plan


def _start_store_sync(loopbot, servers, stop: threading.Event) -> None:
    """adapters_from = store: a thread keeps each server holding its personas' live versions, fetched from the
    artifact store (loopbot.replica_sync); returns after the first pass, having printed what it loaded."""
    from loopbot.replica_sync import ReplicaSync, start_sync_thread

    settings = loopbot.settings
    v = settings.serving.vllm
    unload_after = v.unload_grace_s + settings.serving.reconcile_interval_s  # the bots have flipped by then
    syncs = [ReplicaSync(settings, loopbot.engine, name, server.url, settings.data_dir / "cache" / "artifacts",
                         api_key=server.api_key, unload_after_s=unload_after) for name, server, _ in servers]
    _, first = start_sync_thread(syncs, v.sync_interval_s, stop)
    first.wait(600)
    for sync in syncs:
        typer.echo(f"adapters from the artifact store on {sync.url}: following the registry every "
                   f"{v.sync_interval_s:g} s")
        for name, why in sorted(sync.problems.items()):
            typer.echo(f"  {name}: NOT LOADED: {why}", err=True)


def serve(ctx: typer.Context,
          host: str = typer.Option(None, help="address to bind (default serving.vllm.host, 127.0.0.1)"),
          port: int = typer.Option(None, help="port (default serving.vllm.port; with several base models, each "
                                   "one's port in a serving.vllm.urls table)"),
          model: str = typer.Option(None, "--model", help="serve only this [models.*] base model (default: one "
                                    "server for each base model the personas use)"),
          adapters: bool = typer.Option(True, help="load the personas' active adapters once the server is up"),
          start_timeout: float = typer.Option(600, help="seconds to wait for the server's /health")) -> None:
    """Start vLLM's OpenAI-compatible server with runtime LoRA loading (one per base model, or just --model), load
    the active adapters of the personas on each, and run until Ctrl-C or SIGTERM (then stop the servers and their
    workers)."""
    import os

    loopbot = app_from(ctx)
    settings = loopbot.settings
    v = settings.serving.vllm
    plan = _plan(settings, model, port)
    from_store = adapters and v.adapters_from == "store"
    all_routes = loopbot.active_routes() if adapters and not from_store else {}
    check = base_model_check(settings)
    share = None
    servers: list[tuple[str, VllmServer, dict]] = []
    for name, server_port in plan:
        model_path = resolve_model_path(settings, name, progress=lambda line: typer.echo(f"model: {line}"))
        routes = {p: t for p, t in all_routes.items() if settings.personas[p].base_model == name}
        rank = max([settings.trainer.lora.r] + [_adapter_rank(t[1]) for t in routes.values() if t])
        log_path = loopbot.data_path("logs", f"vllm-{server_port}.log")
        server = VllmServer(model_path, served_name=name, host=host or v.host, port=server_port,
                            max_lora_rank=rank, max_loras=max(v.max_loras, sum(1 for t in routes.values() if t) + 1),
                            max_model_len=min(v.max_model_len, settings.models[name].max_context), dtype=v.dtype,
                            gpu_memory_utilization=v.gpu_memory_utilization,
                            api_key=os.environ.get(v.api_key_env) if v.api_key_env else None,
                            extra_args=v.extra_args, log_path=log_path)
        if server.gpu and len(plan) > 1 and v.gpu_memory_utilization is None:  # they share the GPU(s)
            share = server.gpu_memory_utilization = round(0.9 / len(plan), 2)
        servers.append((name, server, routes))
    if share:
        typer.echo(f"{len(plan)} servers share the GPU: --gpu-memory-utilization {share} each "
                   "(set serving.vllm.gpu_memory_utilization to choose)")
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        for name, server, _ in servers:
            typer.echo(f"starting vLLM for {name} ({server.model_path}) at {server.url}; log: {server.log_path}")
            server.start()
        for name, server, routes in servers:
            seconds = server.wait_ready(start_timeout, progress=typer.echo, stop=stop)
            which = f" for {name}" if len(servers) > 1 else ""
            typer.echo(f"vLLM{which} ready in {seconds:.0f} s")
            if from_store:
                continue
            if routes:
                live, problems = asyncio.run(_load_active(server.url, name, routes, server.api_key, check,
                                                          settings))
                for persona, served in sorted(live.items()):
                    typer.echo(f"  {persona}: {served or 'base model'}")
                for persona, why in sorted(problems.items()):
                    typer.echo(f"  {persona}: NOT LOADED: {why}", err=True)
        if from_store:
            _start_store_sync(loopbot, servers, stop)
        for name, server, _ in servers:
            typer.echo(f"serving {name} at {server.url} (point serving.vllm.urls here); Ctrl-C to stop")
        while not stop.is_set():
            for name, server, _ in servers:
                if server.process is None or server.process.poll() is not None:
                    typer.echo(f"vLLM for {name} exited on its own:\n{server.log_tail()}", err=True)
                    raise typer.Exit(1)
            stop.wait(1.0)
    except (KeyboardInterrupt, StartCancelled):  # Ctrl-C, or SIGTERM while a server was starting
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        for name, server, _ in servers:
            code = server.stop()
            typer.echo(f"vLLM for {name} stopped (exit code {code})" if len(servers) > 1
                       else f"vLLM stopped (exit code {code})")


def register(app: typer.Typer) -> None:
    app.command()(serve)
