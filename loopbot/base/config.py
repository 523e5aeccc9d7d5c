"""Find, read, override and check `config.toml`; every user error becomes one ConfigError line."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import BaseModel, ValidationError

from loopbot.base.errors import ConfigError
from loopbot.base.settings import ServedBot, Settings

ENV_PREFIX = "LOOPBOT_"
DEFAULT_CONFIG = Path(__file__).with_name("default_config.toml")
OFFLINE_PREFIX = "offline:"


def find_config(path: str | Path | None = None, *, env: Mapping[str, str] | None = None) -> Path:
    """--config PATH, else $LOOPBOT_CONFIG, else ./config.toml, else the packaged default."""
    env = os.environ if env is None else env
    explicit = path or env.get("LOOPBOT_CONFIG")
    if explicit:
        p = Path(explicit).expanduser()
        if not p.is_file():
            source = "--config" if path else "LOOPBOT_CONFIG"
            raise ConfigError(f"{source} = {str(explicit)!r}: no such file")
        return p
    local = Path.cwd() / "config.toml"
    return local if local.is_file() else DEFAULT_CONFIG


def load_settings(path: str | Path | None = None, *, env: Mapping[str, str] | None = None,
                  overrides: Mapping[str, Any] | None = None, check_secrets: bool = True) -> Settings:
    """Read the config file, apply LOOPBOT_SECTION__KEY overrides, validate, and check cross-references."""
    env = os.environ if env is None else env
    cfg_path = find_config(path, env=env)
    try:
        raw = tomllib.loads(cfg_path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{cfg_path}: not valid TOML: {e}") from None
    for dotted, value in (overrides or {}).items():
        _set_path(raw, dotted.split("."), value)
    _apply_env(raw, env)
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(f"{cfg_path}: {_describe(e, raw)}") from None
    if not settings.data_dir.is_absolute():
        base = cfg_path.parent if cfg_path != DEFAULT_CONFIG else Path.cwd()
        settings.data_dir = (base / settings.data_dir).resolve()
    _check_references(settings, cfg_path, env, check_secrets)
    return settings


def platform_token(settings: Settings, platform: str, env: Mapping[str, str] | None = None, *,
                   bot: ServedBot | None = None) -> str | None:
    """The token of one of the platform's bots (default: the first) if the platform is enabled (explicitly, or
    `auto` with its variable set)."""
    env = os.environ if env is None else env
    section = getattr(settings, platform)
    bot = bot or settings.bots(platform)[0]
    token = env.get(bot.token_env) or None
    if section.enabled is False:
        return None
    return token


def _set_path(raw: dict, keys: list[str], value: Any) -> None:
    node = raw
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {'.'.join(keys)}: {k} is not a table")
    node[keys[-1]] = value


def _apply_env(raw: dict, env: Mapping[str, str]) -> None:
    top_level = set(Settings.model_fields)
    for name, value in sorted(env.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        keys = [k.lower() for k in name[len(ENV_PREFIX):].split("__")]
        if keys[0] not in top_level:
            if len(keys) > 1:
                raise ConfigError(f"{name}: unknown key {keys[0]!r} (expected one of: {', '.join(sorted(top_level))})")
            continue  # LOOPBOT_CONFIG, LOOPBOT_ADMIN_TOKEN, ...: not settings
        _set_path(raw, keys, _parse_env_value(value))


def _parse_env_value(value: str) -> Any:
    """Lists and tables are TOML; scalars stay strings and pydantic converts them to the field's type."""
    if value.strip()[:1] in "[{":
        try:
            return tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            return value
    return value


def _describe(error: ValidationError, raw: dict) -> str:
    err = error.errors()[0]
    loc = [str(p) for p in err["loc"]]
    key = ".".join(loc)
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        hint = f" (expected one of: {', '.join(allowed)})" if allowed else ""
        return f"unknown key {key!r}{hint}"
    if err["type"] == "missing":
        return f"{key}: missing required key"
    value = err.get("input")
    shown = repr(value) if not isinstance(value, dict) else "{...}"
    return f"{key} = {shown}: {err['msg'].lower()}"


def _allowed_keys(loc: list[str]) -> list[str]:
    """The keys a table at `loc` may hold, for the unknown-key message."""
    model: Any = Settings
    skip_next = False
    for part in loc:
        if skip_next:  # the NAME in personas.NAME
            skip_next = False
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return []
        model = model.model_fields[part].annotation
        if get_origin(model) is dict:
            model, skip_next = get_args(model)[1], True
    if isinstance(model, type) and issubclass(model, BaseModel):
        return sorted(model.model_fields)
    return []


def _check_references(s: Settings, cfg_path: Path, env: Mapping[str, str], check_secrets: bool) -> None:
    def fail(msg: str) -> None:
        raise ConfigError(f"{cfg_path}: {msg}")

    for name, persona in s.personas.items():
        if persona.base_model not in s.models:
            fail(f"personas.{name}.base_model = {persona.base_model!r}: no such model "
                 f"(expected one of the [models.*] tables: {', '.join(sorted(s.models)) or 'none defined'})")
    for key, value in (("default_persona", s.default_persona),
                       ("telegram.default_persona", s.telegram.default_persona),
                       ("discord.default_persona", s.discord.default_persona)):
        if value is not None and value not in s.personas:
            fail(f"{key} = {value!r}: no such persona (expected one of: {', '.join(sorted(s.personas))})")
    for platform in ("telegram", "discord"):
        _check_bots(s, platform, fail)
    if not check_secrets:
        return
    for platform in ("telegram", "discord"):
        section = getattr(s, platform)
        for bot in s.bots(platform):
            if section.enabled is True and not env.get(bot.token_env):
                fail(f"{platform}.enabled = true but the environment variable {bot.token_env} "
                     f"({bot.key}.token_env) is not set")
    if s.telegram.mode == "webhook":
        for bot in s.bots("telegram"):
            if platform_token(s, "telegram", env, bot=bot) and not bot.webhook_url:
                also = f" or {bot.key}.webhook_url" if bot.name else ""
                fail(f"telegram.mode = 'webhook' needs telegram.webhook_url{also} "
                     "(the public https address Telegram calls)")
    if s.serving.backend == "mistral" and not env.get(s.serving.mistral.api_key_env):
        fail(f"serving.backend = 'mistral' but the environment variable {s.serving.mistral.api_key_env} "
             f"(serving.mistral.api_key_env) is not set")
    check_bot_tokens(s, env)


def _check_bots(s: Settings, platform: str, fail) -> None:
    """`[[PLATFORM.bots]]`: unique names and token variables, known personas; webhooks on distinct ports and paths."""
    section = getattr(s, platform)
    if not section.bots:
        return
    seen: dict[str, dict[object, int]] = {"name": {}, "token_env": {}, "webhook_port": {}, "webhook_url": {}}
    for i, (raw, bot) in enumerate(zip(section.bots, s.bots(platform), strict=True)):
        key = f"{platform}.bots[{i}]"
        if raw.persona is not None and raw.persona not in s.personas:
            fail(f"{key}.persona = {raw.persona!r}: no such persona (expected one of: {', '.join(sorted(s.personas))})")
        values = {"name": bot.name, "token_env": bot.token_env}
        if platform == "telegram" and s.telegram.mode == "webhook":
            values.update(webhook_port=bot.webhook_port, webhook_url=bot.webhook_url)
        for field, value in values.items():
            if value is None:
                continue
            if value in seen[field]:
                fail(f"{key}.{field} = {value!r}: {platform}.bots[{seen[field][value]}] has the same {field}; "
                     "each bot needs its own")
            seen[field][value] = i


def check_bot_tokens(s: Settings, env: Mapping[str, str]) -> None:
    """Two bots with the same token value are one bot twice: refuse, naming both keys (never the token)."""
    for platform in ("telegram", "discord"):
        first: dict[str, str] = {}
        for bot in s.bots(platform):
            token = platform_token(s, platform, env, bot=bot)
            if not token:
                continue
            if token in first:
                raise ConfigError(f"{bot.key}.token_env = {bot.token_env!r}: holds the same token as "
                                  f"{first[token]}.token_env; each bot needs its own token")
            first[token] = bot.key
