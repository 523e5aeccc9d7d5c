"""WhatsApp chat exports (.txt, Android and iOS) -> multi-turn SFT examples where one author is the assistant.

Lines look like (Android)  `31/12/23, 21:41 - Ana: hola`, `12/31/23, 9:41 PM - Ana: hi`,
`31/12/2023 21:41 - Ana: hola`, `2023-12-31 21:41 - Ana: hola`, `31/12/23, 9:41 p. m. - Ana: hola`
or (iOS)  `[31/12/23, 21:41:05] Ana: hola`, `[12/31/23, 9:41:05 PM] Ana: hi`.
Lines without a header continue the previous message. The date order (day/month, month/day, year first) is
detected from the whole file: a first field above 12 means day first, a second above 12 month first; when
nothing decides, 12-hour English times (AM/PM) mean month first and anything else day first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from loopbot.trainer.importers.common import ImportFileError, ImportReport, open_text, validation_split

_DATE = r"(?P<date>\d{1,4}[./-]\d{1,2}[./-]\d{1,4})"
_TIME = r"(?P<time>\d{1,2}[:.]\d{2}(?:[:.]\d{2})?)"
_AMPM = r"(?:\s?(?P<ampm>[AaPp]\.?\s?[Mm]\.?))?"
ANDROID_RE = re.compile(rf"^{_DATE},?\s{_TIME}{_AMPM}\s[-–]\s(?P<rest>.*)$", re.DOTALL)
IOS_RE = re.compile(rf"^\[{_DATE},?\s{_TIME}{_AMPM}\]\s(?P<rest>.*)$", re.DOTALL)
INVISIBLE_CHARS = "\u200e\u200f\ufeff\u202a\u202b\u202c\u2068\u2069"
INVISIBLE = dict.fromkeys(map(ord, INVISIBLE_CHARS), None)
SPACES = dict.fromkeys(map(ord, "\u202f\u00a0\u2009"), " ")

MEDIA_RE = re.compile(
    r"^(?:<media omitted>|<multimedia omitido>|<archivo omitido>|<medien ausgeschlossen>|<mídia oculta>"
    r"|<médias omis>|null"
    r"|(?:image|video|audio|sticker|gif|document|contact card|photo) omitted"
    r"|(?:imagen|video|audio|sticker|gif|documento|tarjeta de contacto|foto) omitid[oa]"
    r"|<attached: [^>]*>|<adjunto: [^>]*>"
    r"|.*\((?:file attached|archivo adjunto)\)"
    r"|(?:location|ubicación): https?://\S+)$", re.IGNORECASE | re.DOTALL)
DELETED_RE = re.compile(r"^(?:this message was deleted|you deleted this message|se eliminó este mensaje\.?"
                        r"|eliminaste este mensaje\.?|este mensaje fue eliminado\.?)$", re.IGNORECASE)
EDITED_RE = re.compile(r"\s*<(?:this message was edited|se editó este mensaje\.?)>\s*$", re.IGNORECASE)
SYSTEM_RE = re.compile(
    r"(?:messages and calls are end-to-end encrypted|los mensajes y las llamadas están cifrados"
    r"|created group|creó el grupo|changed the subject|cambió el asunto|changed this group's icon"
    r"|cambió el ícono|cambió la imagen del grupo|your security code with|tu código de seguridad"
    r"|joined using this group's invite link|se unió usando el enlace|missed (?:voice|video) call"
    r"|llamada (?:de voz|de video|perdida))", re.IGNORECASE)
# membership lines ("Ana added Bea", "Bea left"): only trusted when WhatsApp marked the line (iOS prefixes U+200E)
MEMBERSHIP_RE = re.compile(r"^\S+(?: \S+)? (?:added|añadió|removed|eliminó a|left|salió del grupo|salió)\b", re.IGNORECASE)


@dataclass
class ChatMessage:
    at: datetime
    author: str
    text: str
    line: int


@dataclass
class ParsedChat:
    messages: list[ChatMessage]
    system_lines: int
    problems: list[tuple[int, str]]
    date_order: str


def _clean(line: str) -> str:
    """Odd spaces made plain, and the invisible direction marks at the start of a line removed (those inside
    stay: they tell system lines apart)."""
    return line.translate(SPACES).rstrip("\r").lstrip(INVISIBLE_CHARS)


def _split_date(date: str) -> tuple[int, int, int] | None:
    parts = re.split(r"[./-]", date)
    return tuple(int(p) for p in parts) if len(parts) == 3 else None  # type: ignore[return-value]


def detect_date_order(dates: list[tuple[int, int, int]], english_ampm: bool) -> str:
    """'ymd', 'dmy' or 'mdy' for a whole file (see the module docstring)."""
    if any(a > 31 for a, _, _ in dates):
        return "ymd"
    if any(a > 12 for a, _, _ in dates):
        return "dmy"
    if any(b > 12 for _, b, _ in dates):
        return "mdy"
    return "mdy" if english_ampm else "dmy"


def _to_datetime(date: tuple[int, int, int], time: str, ampm: str | None, order: str) -> datetime | None:
    a, b, c = date
    year, month, day = {"ymd": (a, b, c), "dmy": (c, b, a), "mdy": (c, a, b)}[order]
    if year < 100:
        year += 2000
    parts = [int(p) for p in re.split(r"[:.]", time)]
    hour, minute, second = parts[0], parts[1], parts[2] if len(parts) > 2 else 0
    if ampm:
        pm = ampm.lower().startswith("p")
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if pm else 0)
    try:
        return datetime(year, month, day, hour, minute, second)
    except ValueError:
        return None


def parse_whatsapp(text: str, *, date_order: str = "auto") -> ParsedChat:
    """Messages of an export, oldest first. Never raises: lines it cannot use are listed in `problems`."""
    headers: list[tuple[int, re.Match]] = []
    lines = text.splitlines()
    body: dict[int, list[str]] = {}
    problems: list[tuple[int, str]] = []
    current = None
    for number, raw in enumerate(lines, start=1):
        line = _clean(raw)
        m = ANDROID_RE.match(line) or IOS_RE.match(line)
        if m and _split_date(m.group("date")):
            headers.append((number, m))
            current = number
            body[number] = [m.group("rest")]
        elif current is not None:
            body[current].append(line)
        elif line.strip():
            problems.append((number, "not a WhatsApp message line (and no message before it to continue)"))
    dates = [_split_date(m.group("date")) for _, m in headers]
    english = any(re.fullmatch(r"[AaPp][Mm]", m.group("ampm") or "") for _, m in headers)
    order = detect_date_order(dates, english) if date_order == "auto" else date_order
    messages: list[ChatMessage] = []
    system = 0
    for (number, m), date in zip(headers, dates):
        at = _to_datetime(date, m.group("time"), m.group("ampm"), order)
        if at is None:
            problems.append((number, (f"invalid date or time {m.group('date')} {m.group('time')} "
                                      f"(read as {order})")))
            continue
        rest = "\n".join(body[number])
        author, sep, content = rest.partition(": ")
        if not sep or not author.strip() or len(author) > 100:
            system += 1
            continue
        messages.append(ChatMessage(at, author.strip(), content, number))
    return ParsedChat(messages, system, problems, order)


def _classify(text: str) -> tuple[str | None, str]:
    """(drop reason or None, cleaned text)."""
    marked = text.lstrip(" ").startswith("\u200e")
    text = EDITED_RE.sub("", text.translate(INVISIBLE)).strip()
    if not text:
        return "empty", text
    if MEDIA_RE.match(text):
        return "media", text
    if DELETED_RE.match(text):
        return "deleted", text
    if len(text) < 200 and "\n" not in text and (SYSTEM_RE.search(text) or (marked and MEMBERSHIP_RE.match(text))):
        return "system", text
    return None, text


@dataclass
class Turn:
    role: str
    author: str
    start: datetime
    end: datetime
    parts: list[str]


def chat_examples(messages: list[ChatMessage], author: str, *, merge_minutes: float = 10, gap_minutes: float = 60,
                  max_turns: int = 12, separator: str = "\n", report: ImportReport | None = None
                  ) -> list[tuple[datetime, list[dict]]]:
    """(conversation start, messages) examples: the author's turns are the assistant's, everyone else's the user's.

    Consecutive messages of one author within `merge_minutes` become one turn (joined by `separator`); a silence
    longer than `gap_minutes`, or the same side writing again after the merge window, starts a new conversation;
    conversations longer than `max_turns` are cut into several examples. Every example starts with a user turn
    and ends with an assistant turn."""
    group = len({m.author for m in messages}) > 2
    conversations: list[list[Turn]] = []
    last: Turn | None = None
    for m in messages:
        reason, text = _classify(m.text)
        if reason:
            if report:
                report.drop(reason)
            continue
        role = "assistant" if m.author == author else "user"
        content = f"{m.author}: {text}" if group and role == "user" else text
        if last and m.at - last.end <= timedelta(minutes=gap_minutes) and m.at >= last.end:
            if last.role == role and (m.at - last.end <= timedelta(minutes=merge_minutes)):
                last.parts.append(content)
                last.end = m.at
                continue
            if last.role != role:
                last = Turn(role, m.author, m.at, m.at, [content])
                conversations[-1].append(last)
                continue
        last = Turn(role, m.author, m.at, m.at, [content])
        conversations.append([last])
    examples = []
    for turns in conversations:
        while turns and turns[0].role != "user":
            turns = turns[1:]
        if not turns:
            continue
        started = turns[0].start
        for start in range(0, len(turns), max_turns):
            chunk = turns[start:start + max_turns]
            while chunk and chunk[-1].role != "assistant":
                chunk = chunk[:-1]
            while chunk and chunk[0].role != "user":
                chunk = chunk[1:]
            if len(chunk) < 2:
                if report and turns[start:start + max_turns]:
                    report.drop("no_reply_from_author")
                continue
            examples.append((started, [{"role": t.role, "content": separator.join(t.parts)} for t in chunk]))
    return examples


def import_whatsapp(path: str | Path, *, persona: str, author: str, merge_minutes: float = 10,
                    gap_minutes: float = 60, max_turns: int = 12, separator: str = "\n", date_order: str = "auto",
                    validation_fraction: float = 0.1) -> tuple[ImportReport, list[tuple[str, str, dict]]]:
    """Parse and group a chat export; returns the report and the (kind, split, data) examples to store."""
    p = Path(path)
    if date_order not in ("auto", "dmy", "mdy", "ymd"):
        raise ImportFileError(f"date order {date_order!r}: expected auto, dmy, mdy or ymd")
    if max_turns < 2:
        raise ImportFileError(f"max turns {max_turns}: need at least 2 (a user turn and a reply)")
    report = ImportReport("whatsapp", p, persona, unit="messages")
    parsed = parse_whatsapp(open_text(p), date_order=date_order)
    if not parsed.messages:
        first = parsed.problems[0][0] if parsed.problems else 1
        raise ImportFileError(f"{p}:{first}: no WhatsApp messages found (expected lines like "
                              "'31/12/23, 21:41 - Name: text' or '[31/12/23, 21:41:05] Name: text')")
    for number, problem in parsed.problems:
        report.drop("unreadable_line", f"{p}:{number}: {problem}")
    report.read = len(parsed.messages) + parsed.system_lines
    if parsed.system_lines:
        report.dropped["system"] += parsed.system_lines
    authors = sorted({m.author for m in parsed.messages})
    if author not in authors:
        raise ImportFileError(f"{p}: author {author!r} does not appear in the chat; authors: {', '.join(authors)}")
    examples = chat_examples(parsed.messages, author, merge_minutes=merge_minutes, gap_minutes=gap_minutes,
                             max_turns=max_turns, separator=separator, report=report)
    out = []
    for started, msgs in examples:
        split = validation_split(f"whatsapp:{p.name}:{author}:{started.isoformat()}", validation_fraction)
        report.validation += split == "validation"
        out.append(("sft", split, {"messages": msgs}))
    report.kept = len(out)
    if not out:
        raise ImportFileError(f"{p}: no conversation where {author!r} answers someone; nothing to import")
    return report, out
