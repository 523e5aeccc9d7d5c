"""Build the configured backend and router from settings (the composition root calls these)."""

from __future__ import annotations

import logging
import os

from loopbot.serving.base import Backend
from loopbot.serving.errors import BackendUnavailable
from loopbot.serving.local import LocalBackend
from loopbot.serving.mistral import MistralBackend
from loopbot.serving.offline_model import resolve_model_path
from loopbot.serving.router import Router
from loopbot.serving.vllm import VllmBackend

log = logging.getLogger(__name__)


def served_base_model(settings) -> str:
    """The one base model a local or vLLM backend serves: the default persona's (others should share it)."""
    name = settings.personas[settings.default_persona].base_model
    others = sorted({p.base_model for p in settings.personas.values()} - {name})
    if others:
        log.warning("personas use base models %s besides %s; the %s backend serves only %s",
                    ", ".join(others), name, settings.serving.backend, name)
    return name


def build_backend(settings, *, kind: str | None = None) -> Backend:
    """The backend named by serving.backend (or `kind`). Nothing heavy happens here: the local backend loads
    (and, for `offline:` models, converts) its model in its worker thread on first use."""
    kind = kind or settings.serving.backend
    if kind == "local":
        model_name = served_base_model(settings)
        model = settings.models[model_name]
        local = settings.serving.local
        return LocalBackend(lambda: resolve_model_path(settings, model_name), model_name=model_name,
                            tokenizer=model.tokenizer, device=local.device, dtype=model.dtype,
                            max_batch_size=local.max_batch_size, batch_wait_ms=local.batch_wait_ms,
                            threads=local.threads, max_context=model.max_context)
    if kind == "vllm":
        v = settings.serving.vllm
        api_key = os.environ.get(v.api_key_env) if v.api_key_env else None
        return VllmBackend(v.urls, api_key=api_key, timeout_s=v.timeout_s, resync_interval_s=v.resync_interval_s)
    if kind == "mistral":
        m = settings.serving.mistral
        key = os.environ.get(m.api_key_env)
        if not key:
            raise BackendUnavailable(f"serving.backend = 'mistral' needs the API key in ${m.api_key_env}")
        return MistralBackend(api_key=key, server_url=m.server_url, base_model=m.base_model, timeout_s=m.timeout_s)
    raise ValueError(f"unknown serving backend {kind!r}")


def build_router(settings, backend: Backend, routes: dict[str, tuple[str, str] | None]) -> Router:
    """A router that loads `routes` = {persona: (served name, path or remote id) | None} on first use (the composition
    root reads them from the database's active adapters: serving itself never reads the database)."""
    return Router(backend, routes=routes, unload_grace_s=settings.serving.vllm.unload_grace_s,
                  smoke_prompts={name: p.smoke_prompts for name, p in settings.personas.items()})
