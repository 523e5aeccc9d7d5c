"""Secrets never reach the output: a logging filter on the root handlers and `redact()` for printed errors.

What is masked: every secret value registered with `add_secrets` (the settings' `*_env` variables: bot tokens,
API keys, the webhook secret, the admin token; `loopbot run` adds the tokens it starts the bots with) and
anything shaped like a Telegram bot token (`<digits>:<35 characters>`), which python-telegram-bot and httpx
write into URLs such as `/bot<TOKEN>/getMe` in their DEBUG logs."""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterable, Mapping

MASK = "***"
MIN_SECRET_LENGTH = 8  # shorter values would mask ordinary words; real tokens and keys are far longer
TELEGRAM_TOKEN_RE = re.compile(r"(?<!\d)\d+:[A-Za-z0-9_-]{35}(?![A-Za-z0-9_-])")

_secrets: set[str] = set()
_lock = threading.Lock()
_pattern: re.Pattern | None = None


def add_secrets(values: Iterable[str | None]) -> None:
    """Mask these values (empty and very short ones are ignored) wherever redact() or the log filter sees them."""
    global _pattern
    new = {v for v in values if v and len(v) >= MIN_SECRET_LENGTH} - _secrets
    if not new:
        return
    with _lock:
        _secrets.update(new)
        longest_first = sorted(_secrets, key=len, reverse=True)
        _pattern = re.compile("|".join(map(re.escape, longest_first)))


def clear_secrets() -> None:
    """Forget the registered values (tests)."""
    global _pattern
    with _lock:
        _secrets.clear()
        _pattern = None


def settings_secrets(settings, env: Mapping[str, str] | None = None) -> list[str]:
    """The values of the environment variables the settings name in their `*_env` fields (every section)."""
    env = os.environ if env is None else env
    found: list[str] = []

    def walk(section) -> None:
        for name in type(section).model_fields:
            value = getattr(section, name)
            if name.endswith("_env") and isinstance(value, str) and env.get(value):
                found.append(env[value])
            elif hasattr(type(value), "model_fields"):
                walk(value)
            elif isinstance(value, dict):
                for item in value.values():
                    if hasattr(type(item), "model_fields"):
                        walk(item)

    walk(settings)
    return found


def redact(text: str) -> str:
    """`text` with every registered secret and every Telegram-token-shaped string replaced by ***."""
    pattern = _pattern
    if pattern is not None:
        text = pattern.sub(MASK, text)
    if ":" in text:
        text = TELEGRAM_TOKEN_RE.sub(MASK, text)
    return text


def mask_token(token: str) -> str:
    """A token as it may be shown: a Telegram token keeps its bot id (public: it is the bot's user id), `123:***`;
    anything else is ***."""
    if TELEGRAM_TOKEN_RE.fullmatch(token):
        return f"{token.split(':', 1)[0]}:{MASK}"
    return MASK


class RedactingFilter(logging.Filter):
    """Masks secrets in a record's message, exception text and stack before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install(logger: logging.Logger | None = None) -> None:
    """Put the filter on every handler of `logger` (the root logger by default) that does not have it yet."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
