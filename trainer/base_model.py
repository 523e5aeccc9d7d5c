"""Where a persona's base model lives on disk (training and evaluation need a local directory)."""

from __future__ import annotations

from pathlib import Path

from loopbot.base.errors import UsageError
from loopbot.base.settings import Settings
from loopbot.serving.offline_model import resolve_model_path


def base_model_dir(settings: Settings, persona: str) -> Path:
    """The persona's base model directory; an `offline:` model is converted on first use (serving's resolver)."""
    key = settings.persona(persona).base_model
    try:
        path = resolve_model_path(settings, key)
    except Exception as e:  # ModelUnavailable and friends: one line for the user
        raise UsageError(f"base model for {persona!r}: {e}") from None
    if not (Path(path) / "config.json").is_file():
        raise UsageError(f"models.{key}.path = {settings.models[key].path!r}: training needs a local model "
                         f"directory (with config.json), not a hub id")
    return Path(path)


def load_with_adapters(base_model: Path | str, adapters: dict[str, str]):
    """(tokenizer, eval-mode model): the base model in float32 with each named LoRA adapter loaded (the first one
    active), the tokenizer padding with end-of-sequence when it has no pad token. Evaluation scores and generates
    with it; the reward model's pair sampler draws live replies from it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base_model)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
    if adapters:
        from peft import PeftModel

        (first, first_path), *rest = adapters.items()
        model = PeftModel.from_pretrained(model, first_path, adapter_name=first)
        for name, path in rest:
            model.load_adapter(path, adapter_name=name)
    return tok, model.eval()
