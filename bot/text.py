"""Text that can be stored anywhere: NUL characters and lone surrogates become U+FFFD (PostgreSQL refuses both)."""

from __future__ import annotations


def clean_text(text: str) -> str:
    text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
