"""Which base model each persona is served by, the adapter <-> base model check, and the start-up checks that a
configuration can be served (one base model per backend: a local worker each, or vLLM servers per model)."""

from __future__ import annotations

import json
import logging
import math
import os
import struct
from collections.abc import Callable
from pathlib import Path

from loopbot.base.errors import ConfigError
from loopbot.serving.errors import WrongBaseModel
from loopbot.serving.offline_model import OFFLINE_MODELS, OFFLINE_PREFIX, is_converted, offline_model_dir

log = logging.getLogger(__name__)

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int8": 1}
OFFLINE_PARAMETERS = {"smollm2": 134_515_008}  # counted from the wheel's GGUF tensors, as the converted copy has
AUTO_BUDGET_SHARE = 0.8  # serving.local.memory_budget_gb unset: this share of the device's memory


# ---- which persona is served by which base model --------------------------------------------------------------
def persona_models(settings) -> dict[str, str]:
    """{persona: the [models.*] name of its base model}."""
    return {name: p.base_model for name, p in settings.personas.items()}


def used_models(settings) -> list[str]:
    """The base models the personas use, the default persona's first, then by name."""
    default = settings.personas.get(settings.default_persona) or next(iter(settings.personas.values()))
    return [default.base_model, *sorted({p.base_model for p in settings.personas.values()} - {default.base_model})]


def vllm_urls(settings) -> dict[str, list[str]]:
    """`serving.vllm.urls` per base model. The list form (one set of replicas) serves the default persona's base
    model, as before several base models existed; the table form is keyed by [models.*] name."""
    urls = settings.serving.vllm.urls
    if isinstance(urls, dict):
        return {model: list(replicas) for model, replicas in urls.items()}
    return {used_models(settings)[0]: list(urls)}


# ---- an adapter's base model ----------------------------------------------------------------------------------
def adapter_base(path: str | Path) -> str | None:
    """The base model an adapter directory says it was trained on (peft's `base_model_name_or_path`), if any."""
    try:
        config = json.loads((Path(path) / "adapter_config.json").read_text())
    except (OSError, ValueError):
        return None
    value = config.get("base_model_name_or_path") if isinstance(config, dict) else None
    return str(value) if value else None


def _same_path(a: str, b: str) -> bool:
    try:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    except (OSError, RuntimeError):
        return False


class BaseModelCheck:
    """Tell whether an adapter was trained on a base model, from what its adapter_config.json names.

    `identities` = {model name: the names and paths that mean it (the [models.*] name, its `path`, the directory it
    resolves to)}. A claim matches a model if it is one of those strings, the same file-system path, or, when it
    matches no configured model at all, a path whose last component is the model directory's (a data directory
    moved to another disk or machine). An adapter that names no base model is allowed (with a warning)."""

    def __init__(self, identities: dict[str, list[str]]):
        self.identities = {model: [s for s in names if s] for model, names in identities.items()}

    def _matches(self, claim: str, model: str) -> bool:
        return any(claim == s or _same_path(claim, s) for s in self.identities.get(model, []))

    def trained_on(self, path: str | Path) -> str | None:
        """The configured model the adapter at `path` names exactly, if any."""
        claim = adapter_base(path)
        if claim is None:
            return None
        for model in self.identities:
            if self._matches(claim, model):
                return model
        return None

    def check(self, model: str, name: str, path: str | Path) -> None:
        """Raise WrongBaseModel (one line) unless the adapter at `path` was trained on `model`. A path this process
        cannot read (a hosted model id, a directory on the vLLM server's machine) is left to the backend."""
        if not (Path(path) / "adapter_config.json").is_file():
            return
        claim = adapter_base(path)
        if claim is None:
            log.warning("adapter %s at %s names no base model (base_model_name_or_path); loading it on %s unchecked",
                        name, path, model)
            return
        if self._matches(claim, model):
            return
        other = self.trained_on(path)
        if other is None and model in self.identities:
            last = Path(claim.rstrip("/")).name.lower()
            if last and any(Path(s.rstrip("/")).name.lower() == last for s in self.identities[model]):
                return  # the same model directory, moved
        trained = f"base model {other!r} ({claim})" if other else claim
        raise WrongBaseModel(f"adapter {name!r} at {path} was trained on {trained}, not on base model {model!r}: "
                             f"an adapter is only loaded on the base model it was trained on")


def model_identities(settings, model: str) -> list[str]:
    """The names and paths that mean [models.MODEL]: for the adapter check, without converting or loading."""
    path = settings.models[model].path
    names = [model, path]
    if path.startswith(OFFLINE_PREFIX):
        offline = path[len(OFFLINE_PREFIX):]
        if offline in OFFLINE_MODELS:
            names.append(str(offline_model_dir(settings.models_dir, offline)))
    else:
        names.append(str(Path(path).expanduser()))
    return names


def base_model_check(settings) -> BaseModelCheck:
    return BaseModelCheck({model: model_identities(settings, model) for model in settings.models})


# ---- memory: parameters x dtype size --------------------------------------------------------------------------
def _safetensors_parameters(files: list[Path]) -> int:
    total = 0
    for f in files:
        with open(f, "rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size))
        total += sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")
    return total


def _config_parameters(model_dir: str | Path) -> int:
    """Count from config.json by building the model on the meta device (no weights read or allocated)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def parameter_count(settings, model: str) -> int | None:
    """The number of parameters of [models.MODEL] from its files (safetensors headers, else config.json; an offline
    model not converted yet: its known count); None when there is nothing local to count from (a hub id)."""
    path = settings.models[model].path
    if path.startswith(OFFLINE_PREFIX):
        offline = path[len(OFFLINE_PREFIX):]
        directory = offline_model_dir(settings.models_dir, offline)
        if not is_converted(directory):  # not converted yet (the conversion reads the GGUF for ~10 s)
            return OFFLINE_PARAMETERS.get(offline)
    else:
        directory = Path(path).expanduser()
    if not directory.is_dir():
        return None
    files = sorted(directory.glob("*.safetensors"))
    if files:
        return _safetensors_parameters(files)
    if (directory / "config.json").is_file():
        return _config_parameters(directory)
    return None


def _checkpoint_dtype(settings, model: str) -> str | None:
    path = Path(settings.models[model].path).expanduser()
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return config.get("dtype") or config.get("torch_dtype")


def bytes_per_parameter(settings, model: str, device: str) -> int:
    """What the local backend loads [models.MODEL] in: its `dtype`, or float32 on a CPU and the checkpoint's dtype
    (else 2 bytes) on a GPU for `auto`."""
    dtype = settings.models[model].dtype
    if dtype == "auto":
        dtype = "float32" if device == "cpu" else (_checkpoint_dtype(settings, model) or "bfloat16")
    return DTYPE_BYTES.get(str(dtype).removeprefix("torch."), 4)


def local_device(settings) -> str:
    device = settings.serving.local.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    return device


def device_memory_bytes(device: str) -> int:
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.get_device_properties(torch.device(device)).total_memory)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def check_local_memory(settings, *, device: str | None = None,
                       counter: Callable[[object, str], int | None] = parameter_count) -> dict[str, int]:
    """The local backend holds one worker (one copy of the weights) per base model the personas use: refuse to
    start when their parameters x dtype size exceed serving.local.memory_budget_gb. Returns {model: bytes}."""
    device = device or local_device(settings)
    budget_gb = settings.serving.local.memory_budget_gb
    if budget_gb is None:
        budget = AUTO_BUDGET_SHARE * device_memory_bytes(device)
        where = f"unset: {AUTO_BUDGET_SHARE:.0%} of the {_gb(device_memory_bytes(device))} of {device} memory"
    else:
        budget, where = budget_gb * 1e9, f"{budget_gb:g}"
    needs: dict[str, int] = {}
    for model in used_models(settings):
        count = counter(settings, model)
        if count is None:
            log.warning("models.%s: cannot count its parameters before loading it (not a local directory): "
                        "left out of serving.local.memory_budget_gb's check", model)
            continue
        needs[model] = count * bytes_per_parameter(settings, model, device)
    total = sum(needs.values())
    if total > budget:
        parts = " + ".join(f"{m} {_gb(b)}" for m, b in needs.items())
        raise ConfigError(f"serving.local.memory_budget_gb = {where}: the base models the personas use need about "
                          f"{_gb(total)} ({parts}; parameters x dtype size, one copy per model), over the "
                          f"{_gb(budget)} budget: raise it, load them in a smaller dtype ([models.NAME] dtype), "
                          f"or serve them with vLLM")
    return needs


# ---- can this configuration be served? ------------------------------------------------------------------------
def check_servable(settings, *, device: str | None = None) -> None:
    """Raise ConfigError (one line naming the key) when a persona's base model has no backend that serves it, or
    the local backend's base models do not fit its memory budget."""
    kind = settings.serving.backend
    if kind == "vllm":
        urls = settings.serving.vllm.urls
        if isinstance(urls, dict):
            for model, replicas in urls.items():
                if model not in settings.models:
                    raise ConfigError(f"serving.vllm.urls.{model}: no such model (expected [models.*] names: "
                                      f"{', '.join(sorted(settings.models))})")
                if not replicas:
                    raise ConfigError(f"serving.vllm.urls.{model} = []: give at least one server URL")
        elif not urls:
            raise ConfigError("serving.vllm.urls = []: give at least one server URL")
        served = vllm_urls(settings)
        for persona, model in sorted(persona_models(settings).items()):
            if model in served:
                continue
            if isinstance(urls, dict):
                hint = f"serving.vllm.urls has servers for {', '.join(sorted(served))} only; add {model} = [URL, ...]"
            else:
                first = used_models(settings)[0]
                hint = (f"serving.vllm.urls is one list of servers, which serve {first} (the default persona's base "
                        f"model); key it by model: urls = {{ {first} = [...], {model} = [...] }}")
            raise ConfigError(f"personas.{persona}.base_model = {model!r}: no vLLM server serves it ({hint})")
    elif kind == "local":
        check_local_memory(settings, device=device)
