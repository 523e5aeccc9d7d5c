"""config.toml: found, overridden from the environment, and refused with one clear line when wrong."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from loopbot.base.config import DEFAULT_CONFIG, load_settings, platform_token
from loopbot.base.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
CONFIG = (ROOT / "config.toml").read_text()


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.toml"
    p.write_text(text)
    return p


def test_committed_config_defines_the_three_personas_on_embedded_defaults():
    s = load_settings(ROOT / "config.toml", env={})
    assert set(s.personas) >= {"comedian", "coach", "clone"}
    assert s.serving.backend == "local" and s.database_url.startswith("sqlite:///")
    assert s.models[s.personas["coach"].base_model].path == "offline:smollm2"
    assert platform_token(s, "telegram", {}) is None and platform_token(s, "discord", {}) is None
    assert s.data_dir == (ROOT / "data").resolve()


def test_env_overrides_every_level(tmp_path):
    env = {"LOOPBOT_STORAGE__URL": "postgresql+psycopg://postgres@127.0.0.1/x",
           "LOOPBOT_PERSONAS__COACH__SAMPLING__TEMPERATURE": "0.25",
           "LOOPBOT_ACCESS__ADMINS": '["telegram:1", "discord:2"]',
           "LOOPBOT_FEEDBACK__CONSENT_DEFAULT": "false",
           "LOOPBOT_ADMIN_TOKEN": "not a setting, ignored"}
    s = load_settings(ROOT / "config.toml", env=env)
    assert s.storage.url.startswith("postgresql")
    assert s.personas["coach"].sampling.temperature == 0.25
    assert s.access.admins == ["telegram:1", "discord:2"]
    assert s.feedback.consent_default is False


def test_loopbot_config_variable_and_auto_platform(tmp_path):
    p = write(tmp_path, CONFIG)
    s = load_settings(env={"LOOPBOT_CONFIG": str(p), "TELEGRAM_BOT_TOKEN": "123:abc"})
    assert s.data_dir == tmp_path / "data"
    assert platform_token(s, "telegram", {"TELEGRAM_BOT_TOKEN": "123:abc"}) == "123:abc"


@pytest.mark.parametrize("edit, env, expected", [
    (("[feedback]\narena_rate = 0.1", "[feedback]\narena_rate = 0.1\narena_rat = 2"), {},
     "unknown key 'feedback.arena_rat' (expected one of: arena_rate, consent_default, reactions)"),
    (("temperature = 0.7", "temperature = \"hot\""), {},
     "personas.coach.sampling.temperature = 'hot': input should be a valid number"),
    (('base_model = "smollm2"\nlanguage = "en"', 'base_model = "gpt-9"\nlanguage = "en"'), {},
     "personas.coach.base_model = 'gpt-9': no such model (expected one of the [models.*] tables: smollm2)"),
    (('[telegram]\nenabled = "auto"', "[telegram]\nenabled = true"), {},
     "telegram.enabled = true but the environment variable TELEGRAM_BOT_TOKEN (telegram.token_env) is not set"),
    (("", ""), {"LOOPBOT_STORAGE__URLL": "x"}, "unknown key 'storage.urll'"),
    (("", ""), {"LOOPBOT_WEB__PORT": "eighty"}, "web.port = 'eighty': input should be a valid integer"),
])
def test_bad_config_names_key_value_and_expectation(tmp_path, edit, env, expected):
    old, new = edit
    assert old in CONFIG
    p = write(tmp_path, CONFIG.replace(old, new, 1))
    with pytest.raises(ConfigError) as e:
        load_settings(p, env=env)
    assert expected in str(e.value)
    assert "\n" not in str(e.value)


def test_invalid_toml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "[storage\nurl = 1"), env={})
    with pytest.raises(ConfigError, match="no such file"):
        load_settings(tmp_path / "nope.toml", env={})


def test_cli_prints_one_line_and_exits_2_on_bad_config(tmp_path):
    p = write(tmp_path, CONFIG.replace("max_batch_size = 8", "max_batch_size = -3"))
    r = subprocess.run([sys.executable, "-m", "loopbot.cli", "--config", str(p), "db", "upgrade"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "serving.local.max_batch_size = -3" in lines[0] and "greater than 0" in lines[0]
    assert "Traceback" not in r.stderr


def test_the_packaged_default_config_is_the_checkout_config_toml():
    """`config.toml` (what a checkout runs with) and the default the wheel ships are one text: edit both together."""
    assert DEFAULT_CONFIG.read_bytes() == (ROOT / "config.toml").read_bytes(), \
        "config.toml and loopbot/base/default_config.toml differ: copy config.toml over the packaged default"


TWO_BOTS = """
[[telegram.bots]]
name = "coachbot"
token_env = "TG_COACH"
persona = "coach"

[[telegram.bots]]
name = "comedybot"
token_env = "TG_COMEDY"
persona = "comedian"
switchable = true
"""


def test_bot_lists_resolve_and_the_one_bot_form_is_their_one_entry_case(tmp_path):
    one = load_settings(write(tmp_path, CONFIG), env={}).bots("telegram")
    assert [(b.name, b.key, b.token_env, b.persona, b.switchable) for b in one] == [
        ("", "telegram", "TELEGRAM_BOT_TOKEN", "coach", True)]
    s = load_settings(write(tmp_path, CONFIG + TWO_BOTS), env={"LOOPBOT_TELEGRAM__WEBHOOK_URL": "https://x.org/tg"})
    bots = s.bots("telegram")
    assert [(b.name, b.key, b.persona, b.switchable) for b in bots] == [
        ("coachbot", "telegram.bots[0]", "coach", False), ("comedybot", "telegram.bots[1]", "comedian", True)]
    assert [(b.webhook_url, b.webhook_port, b.webhook_secret_env) for b in bots] == [
        ("https://x.org/tg/coachbot", 8443, "TELEGRAM_WEBHOOK_SECRET_COACHBOT"),
        ("https://x.org/tg/comedybot", 8444, "TELEGRAM_WEBHOOK_SECRET_COMEDYBOT")]
    assert platform_token(s, "telegram", {"TG_COMEDY": "2:b"}, bot=bots[1]) == "2:b"


@pytest.mark.parametrize("extra, env, expected", [
    (TWO_BOTS.replace('"comedybot"', '"coachbot"'), {},
     "telegram.bots[1].name = 'coachbot': telegram.bots[0] has the same name; each bot needs its own"),
    (TWO_BOTS.replace('"TG_COMEDY"', '"TG_COACH"'), {},
     "telegram.bots[1].token_env = 'TG_COACH': telegram.bots[0] has the same token_env"),
    (TWO_BOTS.replace('persona = "comedian"', 'persona = "poet"'), {},
     "telegram.bots[1].persona = 'poet': no such persona (expected one of: clone, coach, comedian)"),
    ('\n[[discord.bots]]\nname = "Coach Bot"\ntoken_env = "X"\n', {}, "discord.bots.0.name = 'Coach Bot'"),
    (TWO_BOTS, {"TG_COACH": "1:same", "TG_COMEDY": "1:same"},
     "telegram.bots[1].token_env = 'TG_COMEDY': holds the same token as telegram.bots[0].token_env"),
])
def test_unservable_bot_lists_stop_start_up_naming_the_key(tmp_path, extra, env, expected):
    with pytest.raises(ConfigError) as e:
        load_settings(write(tmp_path, CONFIG + extra), env=env)
    assert expected in str(e.value) and "\n" not in str(e.value)
    assert "1:same" not in str(e.value)  # never the token


def test_cli_exits_2_on_two_bots_with_one_token(tmp_path):
    import os

    p = write(tmp_path, CONFIG + TWO_BOTS)
    env = {**os.environ, "TG_COACH": "1:same", "TG_COMEDY": "1:same"}
    r = subprocess.run([sys.executable, "-m", "loopbot.cli", "--config", str(p), "run"],
                       capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "telegram.bots[1].token_env" in r.stderr and "1:same" not in r.stderr


def test_the_three_bot_deployment_in_the_docs_loads_and_can_be_served(tmp_path):
    """docs/deploying.md#three-bots, as a user would copy it: three Telegram bots and one Discord bot, each fixed to
    its persona, the comedian on another base model than the coach and the clone, a vLLM server per base model."""
    import re
    from pathlib import Path

    from loopbot.base.config import load_settings
    from loopbot.serving.base_models import check_servable, persona_models, vllm_urls

    doc = (Path(__file__).resolve().parents[1] / "docs" / "deploying.md").read_text(encoding="utf-8")
    block = re.search(r"```toml\n(.*?)```", doc[doc.index("## Three bots"):], re.S).group(1)
    (tmp_path / "config.toml").write_text(block, encoding="utf-8")
    env = {"COMEDIAN_TELEGRAM_TOKEN": "1:a", "COACH_TELEGRAM_TOKEN": "2:b", "CLONE_TELEGRAM_TOKEN": "3:c",
           "COACH_DISCORD_TOKEN": "d"}
    s = load_settings(tmp_path / "config.toml", env=env)
    assert [(b.name, b.persona, b.switchable) for b in s.bots("telegram")] == \
        [("comedian", "comedian", False), ("coach", "coach", False), ("clone", "clone", False)]
    assert [(b.name, b.persona) for b in s.bots("discord")] == [("coach", "coach")]
    assert persona_models(s) == {"comedian": "qwen", "coach": "smollm2", "clone": "smollm2"}
    assert vllm_urls(s) == {"smollm2": ["http://10.0.0.5:8000"], "qwen": ["http://10.0.0.6:8000"]}
    check_servable(s)  # every persona's base model has vLLM servers: no exit 2
