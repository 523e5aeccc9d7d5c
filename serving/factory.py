"""Build the configured backend and router from settings (the composition root calls these)."""

from __future__ import annotations

import os

from loopbot.base.artifacts import store_options
from loopbot.serving.base import Backend
from loopbot.serving.base_models import base_model_check, check_servable, persona_models, used_models, vllm_urls
from loopbot.serving.errors import BackendUnavailable
from loopbot.serving.local import LocalBackend
from loopbot.serving.mistral import MistralBackend
from loopbot.serving.multi import ModelBackends
from loopbot.serving.offline_model import resolve_model_path
from loopbot.serving.router import Router
from loopbot.serving.vllm import VllmBackend


def served_base_model(settings) -> str:
    """The default persona's base model: what a single-list `serving.vllm.urls` serves."""
    return used_models(settings)[0]


def _local(settings, model_name: str) -> LocalBackend:
    model = settings.models[model_name]
    local = settings.serving.local
    return LocalBackend(lambda: resolve_model_path(settings, model_name), model_name=model_name,
                        tokenizer=model.tokenizer, device=local.device, dtype=model.dtype,
                        max_batch_size=local.max_batch_size, batch_wait_ms=local.batch_wait_ms,
                        threads=local.threads, max_context=model.max_context,
                        artifact_cache=settings.artifacts_cache_dir, store_options=store_options(settings) or None)


def _vllm(settings, urls: list[str]) -> VllmBackend:
    v = settings.serving.vllm
    api_key = os.environ.get(v.api_key_env) if v.api_key_env else None
    return VllmBackend(urls, api_key=api_key, timeout_s=v.timeout_s, resync_interval_s=v.resync_interval_s,
                       adapters_from=v.adapters_from, adapter_wait_s=v.adapter_wait_s)


def build_backend(settings, *, kind: str | None = None, check: bool = True) -> Backend:
    """The backend named by serving.backend (or `kind`): for local and vLLM, one per base model the personas use
    (a ModelBackends when there are several; the plain backend when there is one, as before). Raises ConfigError
    when the configuration cannot be served (`check=False` skips that). Nothing heavy happens here: the local
    backend loads (and, for `offline:` models, converts) each model in its worker thread on first use."""
    kind = kind or settings.serving.backend
    if kind in ("local", "vllm"):
        if check and kind == settings.serving.backend:
            check_servable(settings)
        models = used_models(settings)
        if kind == "local":
            backends = {m: _local(settings, m) for m in models}
        else:
            urls = vllm_urls(settings)
            backends = {m: _vllm(settings, urls[m]) for m in models if m in urls}
            if not backends:  # check=False with a table that serves none of them: the first table entry
                backends = {next(iter(urls)): _vllm(settings, next(iter(urls.values())))}
        if len(backends) == 1:
            return next(iter(backends.values()))
        return ModelBackends(backends, default=models[0], check=base_model_check(settings))
    if kind == "mistral":
        m = settings.serving.mistral
        key = os.environ.get(m.api_key_env)
        if not key:
            raise BackendUnavailable(f"serving.backend = 'mistral' needs the API key in ${m.api_key_env}")
        return MistralBackend(api_key=key, server_url=m.server_url, base_model=m.base_model, timeout_s=m.timeout_s)
    raise ValueError(f"unknown serving backend {kind!r}")


def build_router(settings, backend: Backend, routes: dict[str, tuple[str, str] | None]) -> Router:
    """A router that loads `routes` = {persona: (served name, path or remote id) | None} on first use (the composition
    root reads them from the database's active adapters: serving itself never reads the database). Each persona goes
    to the backend of its base model, and only adapters trained on that base model are loaded for it."""
    hosted = settings.serving.backend == "mistral"
    return Router(backend, routes=routes, unload_grace_s=settings.serving.vllm.unload_grace_s,
                  smoke_prompts={name: p.smoke_prompts for name, p in settings.personas.items()},
                  persona_models=None if hosted else persona_models(settings),
                  check=None if hosted else base_model_check(settings))
