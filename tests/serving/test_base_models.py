"""Personas on different base models: each base model has its own backend (a local worker each), each persona is
answered by its own base model and adapter, an adapter is only loaded on the base model it was trained on, and a
configuration that cannot be served stops start-up with one line naming the key (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loopbot.app import Loopbot
from loopbot.base.config import load_settings
from loopbot.base.errors import ConfigError
from loopbot.cli import main
from loopbot.serving.base import SamplingParams, complete
from loopbot.serving.base_models import BaseModelCheck, check_servable, parameter_count
from loopbot.serving.errors import SwapFailed, WrongBaseModel
from loopbot.serving.factory import build_backend, build_router
from loopbot.serving.local import LocalBackend
from loopbot.serving.multi import ModelBackends
from loopbot.storage import crud
from testkit.tiny_model import build_tiny_adapter, build_tiny_model

ROOT = Path(__file__).resolve().parents[2]

GREEDY = SamplingParams(temperature=0.0, top_p=1.0, max_tokens=10, seed=0)
ASK = [{"role": "user", "content": "How should I pace my first marathon?"}]


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    """Two tiny base models of different shapes, and an adapter for each."""
    base = tmp_path_factory.mktemp("two-models")
    small = build_tiny_model(base / "tiny-small", hidden=64, layers=2)
    wide = build_tiny_model(base / "tiny-wide", hidden=96, layers=3, seed=1)
    return {"small": small, "wide": wide,
            "small-adapter": build_tiny_adapter(small, base / "adapter-small", seed=1),
            "wide-adapter": build_tiny_adapter(wide, base / "adapter-wide", seed=2)}


def two_model_settings(tmp_path, two_models, **env):
    """The committed config with coach on `small` (the smollm2 table, pointed at it) and comedian on `wide`."""
    env = {"LOOPBOT_MODELS__SMOLLM2__PATH": str(two_models["small"]),
           "LOOPBOT_MODELS__WIDE__PATH": str(two_models["wide"]),
           "LOOPBOT_PERSONAS__COMEDIAN__BASE_MODEL": "wide",
           "LOOPBOT_SERVING__LOCAL__DEVICE": "cpu", **env}
    return load_settings(ROOT / "config.toml", env=env, overrides={"data_dir": str(tmp_path / "data")})


async def test_each_persona_is_answered_by_its_own_base_model_and_adapter(tmp_path, two_models):
    settings = two_model_settings(tmp_path, two_models)
    loopbot = Loopbot(settings)
    crud.create_adapter(loopbot.engine, persona="coach", version=1, base_model=str(two_models["small"]),
                        path=str(two_models["small-adapter"]))
    crud.create_adapter(loopbot.engine, persona="comedian", version=1, base_model=str(two_models["wide"]),
                        path=str(two_models["wide-adapter"]))
    crud.activate_adapter(loopbot.engine, persona="coach", version=1)
    crud.activate_adapter(loopbot.engine, persona="comedian", version=1)
    backend = loopbot.backend
    assert isinstance(backend, ModelBackends) and backend.name == "local"
    assert {m: type(b) for m, b in backend.backends.items()} == {"smollm2": LocalBackend, "wide": LocalBackend}
    router = loopbot.router
    try:
        replies = {}
        for persona in ("coach", "comedian", "clone"):  # clone: smollm2's base model, no adapter
            text, finished = await router.complete(persona, ASK, sampling=GREEDY)
            replies[persona] = (text, finished.served_model)
        assert replies["coach"][1] == "coach-v1" and replies["comedian"][1] == "comedian-v1"
        assert replies["clone"][1] == "smollm2"
        assert len({text for text, _ in replies.values()}) == 3, replies
        assert (await router.complete("comedian", ASK, sampling=GREEDY, adapter=None))[1].served_model == "wide"
        # each matches its own base model + adapter served alone
        for model, adapter, persona in (("small", "small-adapter", "coach"), ("wide", "wide-adapter", "comedian")):
            alone = LocalBackend(two_models[model], device="cpu")
            await alone.load_adapter("x", str(two_models[adapter]))
            assert (await complete(alone, ASK, adapter="x", sampling=GREEDY))[0] == replies[persona][0]
            await alone.aclose()
        # each worker holds only its own model's adapters
        assert {a.name: a.details["base_model"] for a in await backend.list_adapters()} == \
            {"coach-v1": "smollm2", "comedian-v1": "wide"}
        assert backend.backends["wide"].model.config.hidden_size == 96
        assert backend.backends["smollm2"].model.config.hidden_size == 64
    finally:
        await router.aclose()
        await backend.aclose()


async def test_an_adapter_of_one_base_model_offered_to_the_other_is_refused(tmp_path, two_models):
    settings = two_model_settings(tmp_path, two_models)
    backend = build_backend(settings)
    router = build_router(settings, backend, {})
    try:
        await router.swap("comedian", "comedian-v1", str(two_models["wide-adapter"]))
        before = await backend.list_adapters()
        with pytest.raises(SwapFailed) as failed:  # the small model's adapter, offered to the wide model's persona
            await router.swap("comedian", "comedian-v2", str(two_models["small-adapter"]))
        line = str(failed.value)
        assert "\n" not in line and "was trained on base model 'smollm2'" in line and "not on base model 'wide'" in line
        assert "comedian stays on comedian-v1" in line
        assert router.route("comedian") == "comedian-v1" and await backend.list_adapters() == before  # nothing changed
        with pytest.raises(SwapFailed, match="not on base model 'smollm2'"):
            await router.swap("coach", "coach-v1", str(two_models["wide-adapter"]))
        assert router.route("coach") is None
        # reconcile (start-up from the database) refuses it too, and says why
        routes = await router.reconcile({"coach": ("coach-v9", str(two_models["wide-adapter"]))})
        assert routes["coach"] is None and "trained on base model 'wide'" in router.problems["coach"]
        assert "coach-v9" not in {a.name for a in await backend.list_adapters()}
        # the backend itself, used directly, loads an adapter on the model it names
        await backend.load_adapter("direct", str(two_models["small-adapter"]))
        assert [a.details["base_model"] for a in await backend.list_adapters() if a.name == "direct"] == ["smollm2"]
    finally:
        await router.aclose()
        await backend.aclose()


def test_the_base_model_check_reads_adapter_config(tmp_path, two_models):
    check = BaseModelCheck({"small": ["small", str(two_models["small"])], "wide": ["wide", str(two_models["wide"])]})
    check.check("small", "a", two_models["small-adapter"])
    with pytest.raises(WrongBaseModel, match="trained on base model 'small'"):
        check.check("wide", "a", two_models["small-adapter"])
    moved = tmp_path / "moved"
    moved.mkdir()
    config = json.loads((two_models["small-adapter"] / "adapter_config.json").read_text())
    (moved / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path":
                                                           "/elsewhere/data/models/tiny-small"}))
    check.check("small", "moved", moved)  # the same model directory on another disk
    with pytest.raises(WrongBaseModel, match="/elsewhere/data/models/tiny-small, not on base model 'wide'"):
        check.check("wide", "moved", moved)
    (moved / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": None}))
    check.check("wide", "unnamed", moved)  # names no base model: allowed, with a warning
    check.check("wide", "remote", "ft:open-mistral-7b:abc")  # nothing readable here: left to the backend


def test_a_single_base_model_keeps_one_plain_backend(settings):
    backend = build_backend(settings)
    assert isinstance(backend, LocalBackend) and backend.model_name == "smollm2"
    settings.serving.backend = "vllm"
    assert [r.url for r in build_backend(settings).replicas] == ["http://127.0.0.1:8000"]


def test_vllm_urls_per_base_model(tmp_path, two_models):
    urls = '{ smollm2 = ["http://127.0.0.1:8001"], wide = ["http://127.0.0.1:8002", "http://127.0.0.1:8003"] }'
    settings = two_model_settings(tmp_path, two_models, LOOPBOT_SERVING__BACKEND="vllm",
                                  LOOPBOT_SERVING__VLLM__URLS=urls)
    backend = build_backend(settings)
    assert isinstance(backend, ModelBackends) and backend.name == "vllm"
    assert {m: [r.url for r in b.replicas] for m, b in backend.backends.items()} == \
        {"smollm2": ["http://127.0.0.1:8001"], "wide": ["http://127.0.0.1:8002", "http://127.0.0.1:8003"]}
    router = build_router(settings, backend, {})
    assert router.backend_for("comedian") is backend.backends["wide"]
    assert router.backend_for("coach") is router.backend_for("clone") is backend.backends["smollm2"]


def test_memory_budget(tmp_path, two_models):
    settings = two_model_settings(tmp_path, two_models, LOOPBOT_SERVING__LOCAL__MEMORY_BUDGET_GB="1")
    small, wide = parameter_count(settings, "smollm2"), parameter_count(settings, "wide")
    assert 0 < small < wide
    check_servable(settings)  # float32 on the CPU: (small + wide) x 4 bytes, far under 1 GB
    settings.serving.local.memory_budget_gb = (small + wide) * 4 / 1e9 * 0.99
    with pytest.raises(ConfigError, match=r"^serving\.local\.memory_budget_gb = .*smollm2 .* \+ wide "):
        check_servable(settings)
    settings.models["wide"].dtype = "bfloat16"  # half the bytes: fits again
    check_servable(settings)


@pytest.mark.parametrize("env, key", [
    ({"LOOPBOT_SERVING__LOCAL__MEMORY_BUDGET_GB": "0.0001"}, "serving.local.memory_budget_gb = 0.0001: "),
    ({"LOOPBOT_SERVING__BACKEND": "vllm"}, "personas.comedian.base_model = 'wide': no vLLM server serves it "),
    ({"LOOPBOT_SERVING__BACKEND": "vllm", "LOOPBOT_SERVING__VLLM__URLS": '{ smollm2 = ["http://127.0.0.1:9"] }'},
     "personas.comedian.base_model = 'wide': no vLLM server serves it (serving.vllm.urls has servers for smollm2"),
    ({"LOOPBOT_SERVING__BACKEND": "vllm",
      "LOOPBOT_SERVING__VLLM__URLS": '{ smollm2 = ["http://127.0.0.1:9"], wide = ["http://127.0.0.1:9"], '
                                     'gpt9 = ["http://127.0.0.1:9"] }'}, "serving.vllm.urls.gpt9: no such model"),
])
def test_a_configuration_that_cannot_be_served_stops_start_up_with_one_line(tmp_path, two_models, monkeypatch,
                                                                           capsys, env, key):
    monkeypatch.setenv("LOOPBOT_MODELS__SMOLLM2__PATH", str(two_models["small"]))
    monkeypatch.setenv("LOOPBOT_MODELS__WIDE__PATH", str(two_models["wide"]))
    monkeypatch.setenv("LOOPBOT_PERSONAS__COMEDIAN__BASE_MODEL", "wide")
    monkeypatch.setenv("LOOPBOT_DATA_DIR", str(tmp_path / "data"))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code = main(["--config", str(ROOT / "config.toml"), "chat", "--persona", "coach"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith(f"loopbot: {key}"), err


def test_loopbot_serve_plans_one_server_per_base_model(tmp_path, two_models, monkeypatch, capsys):
    from loopbot.base.errors import UsageError
    from loopbot.commands.serve import _plan

    urls = '{ smollm2 = ["http://127.0.0.1:8101"], wide = ["http://10.0.0.7:8102", "http://10.0.0.8:8102"] }'
    settings = two_model_settings(tmp_path, two_models, LOOPBOT_SERVING__VLLM__URLS=urls)
    assert _plan(settings, None, None) == [("smollm2", 8101), ("wide", 8102)]
    assert _plan(settings, "wide", None) == [("wide", 8102)]
    assert _plan(settings, "wide", 9000) == [("wide", 9000)]
    with pytest.raises(UsageError, match="--port with 2 base models"):
        _plan(settings, None, 9000)
    settings.serving.vllm.urls = ["http://127.0.0.1:8000"]  # today's list form: serving.vllm.port, +1 per model
    assert _plan(settings, None, None) == [("smollm2", 8000), ("wide", 8001)]
    monkeypatch.setenv("LOOPBOT_DATA_DIR", str(tmp_path / "data"))
    assert main(["--config", str(ROOT / "config.toml"), "serve", "--model", "gpt9"]) == 2
    assert capsys.readouterr().err.strip() == ("loopbot: --model 'gpt9': no such model (expected one of the "
                                               "[models.*] tables: smollm2)")


def test_a_stop_while_a_server_starts_ends_the_wait(tmp_path):
    """SIGTERM to `loopbot serve` while its servers start (minutes each on a busy CPU) stops them at once."""
    import subprocess
    import sys
    import threading
    import time

    from loopbot.serving.vllm_server import StartCancelled, VllmServer
    from testkit.ports import free_port

    server = VllmServer(tmp_path, served_name="x", port=free_port())
    server.process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    started = time.monotonic()
    with pytest.raises(StartCancelled):
        server.wait_ready(60, stop=stop)
    assert time.monotonic() - started < 10
    assert server.stop(5) is not None and server.process is None
