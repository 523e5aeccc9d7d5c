"""WhatsApp chat exports (.txt, Android and iOS) -> multi-turn SFT examples where one author is the assistant.

Lines look like (Android)  `31/12/23, 21:41 - Ana: hola`, `12/31/23, 9:41 PM - Ana: hi`,
`31/12/2023 21:41 - Ana: hola`, `2023-12-31 21:41 - Ana: hola`, `31/12/23, 9:41 p. m. - Ana: hola`
or (iOS)  `[31/12/23, 21:41:05] Ana: hola`, `[12/31/23, 9:41:05 PM] Ana: hi`.
Lines without a header continue the previous message. The date order (day/month, month/day, year first) is the
one under which most message lines of the file are valid dates; when orders tie (no line has a day above 12),
12-hour English times (AM/PM) mean month first and anything else day first. A line that is not a valid date in
the chosen order (one pasted from another phone) is reported with its line number and skipped.

A file is read twice, one line at a time (first the dates and authors, then the messages, grouped into
conversations as they come), so a large export never sits in memory whole."""

from __future__ import annotations

import functools
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

from loopbot.trainer.importers.common import ImportFileError, ImportReport, iter_lines, validation_split

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
# Android writes them without a final period, iOS with one ("This message was deleted.")
DELETED_RE = re.compile(r"^(?:this message was deleted|you deleted this message|se eliminó este mensaje"
                        r"|eliminaste este mensaje|este mensaje fue eliminado)\.?$", re.IGNORECASE)
EDITED_RE = re.compile(r"\s*<(?:this message was edited|se editó este mensaje\.?)>\s*$", re.IGNORECASE)
SYSTEM_RE = re.compile(
    r"(?:messages and calls are end-to-end encrypted|los mensajes y las llamadas están cifrados"
    r"|created group|creó el grupo|changed the subject|cambió el asunto|changed this group's icon"
    r"|cambió el ícono|cambió la imagen del grupo|your security code with|tu código de seguridad"
    r"|joined using this group's invite link|se unió usando el enlace|missed (?:voice|video) call"
    r"|llamada (?:de voz|de video|perdida))", re.IGNORECASE)
# membership lines ("Ana added Bea", "Bea left"): only trusted when WhatsApp marked the line (iOS prefixes U+200E)
MEMBERSHIP_RE = re.compile(r"^\S+(?: \S+)? (?:added|añadió|removed|eliminó a|left|salió del grupo|salió)\b",
                           re.IGNORECASE)


@dataclass(slots=True)
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


@dataclass
class Survey:
    """What a first pass over an export found: how often each date string occurs, whether times are English
    AM/PM, who writes, and where the first line that is not a message is."""

    dates: Counter = field(default_factory=Counter)
    english_ampm: bool = False
    authors: set[str] = field(default_factory=set)
    headers: int = 0
    first_stray_line: int | None = None

    def date_order(self) -> str:
        return detect_date_order(self.dates, self.english_ampm)


Lines = Iterable[tuple[int, str]]


def _clean(line: str) -> str:
    """Odd spaces made plain, and the invisible direction marks at the start of a line removed (those inside
    stay: they tell system lines apart)."""
    return line.translate(SPACES).rstrip("\r").lstrip(INVISIBLE_CHARS)


def _header(line: str) -> re.Match | None:
    return ANDROID_RE.match(line) or IOS_RE.match(line)


def _author(rest: str) -> tuple[str, str] | None:
    """(author, first line of the text) of a header's rest, or None for a system line ('Ana added Bea')."""
    author, sep, text = rest.partition(": ")
    author = author.strip()
    return (author, text) if sep and author and len(author) <= 100 else None


def text_lines(text: str) -> Lines:
    """(line number, line) of a text, split like a file is read (at \\n only)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return enumerate(lines, start=1)


def survey(lines: Lines) -> Survey:
    """First pass: date strings, AM/PM, authors (the message lines only; nothing else is kept)."""
    found = Survey()
    for number, raw in lines:
        line = _clean(raw)
        m = _header(line)
        if m is None:
            if found.headers == 0 and found.first_stray_line is None and line.strip():
                found.first_stray_line = number
            continue
        found.headers += 1
        found.dates[m.group("date")] += 1
        if not found.english_ampm and m.group("ampm") and re.fullmatch(r"[AaPp][Mm]", m.group("ampm")):
            found.english_ampm = True
        who = _author(m.group("rest"))
        if who:
            found.authors.add(who[0])
    return found


@functools.lru_cache(maxsize=8192)
def _date(text: str, order: str) -> date | None:
    """The calendar date of a header's date string read in `order`, or None if it is not a valid date."""
    parts = re.split(r"[./-]", text)
    if len(parts) != 3:
        return None
    a, b, c = (int(p) for p in parts)
    if order == "ymd" and len(parts[0]) < 3 and a <= 31:  # "03/02/24" is not 2003: year first has 4 digits
        return None
    year, month, day = {"ymd": (a, b, c), "dmy": (c, b, a), "mdy": (c, a, b)}[order]
    if year < 100:
        year += 2000
    try:
        return date(year, month, day)
    except ValueError:
        return None


def detect_date_order(dates: Counter | dict[str, int], english_ampm: bool) -> str:
    """'ymd', 'dmy' or 'mdy': the order under which most lines (date string -> count) are valid dates (year
    first only where the first field is a year: 4 digits, or above 31); ties go to month first for English AM/PM
    times, else day first (see the module docstring)."""
    preference = ("mdy", "dmy", "ymd") if english_ampm else ("dmy", "mdy", "ymd")
    valid = {order: sum(n for text, n in dates.items() if _date(text, order)) for order in preference}
    return max(preference, key=lambda order: (valid[order], -preference.index(order)))


def _to_datetime(day: date | None, time: str, ampm: str | None) -> datetime | None:
    if day is None:
        return None
    parts = [int(p) for p in re.split(r"[:.]", time)]
    hour, minute, second = parts[0], parts[1], parts[2] if len(parts) > 2 else 0
    if ampm:
        pm = ampm.lower().startswith("p")
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if pm else 0)
    try:
        return datetime(day.year, day.month, day.day, hour, minute, second)
    except ValueError:
        return None


class MessageReader:
    """Second pass: the messages of an export in file order, as they are read. Lines it cannot use go to
    `problem(line, why)`; system lines (no author) are counted in `system_lines`."""

    def __init__(self, order: str, problem: Callable[[int, str], None]):
        self.order = order
        self.problem = problem
        self.system_lines = 0

    def messages(self, lines: Lines) -> Iterator[ChatMessage]:
        header: tuple[int, re.Match] | None = None
        body: list[str] = []
        for number, raw in lines:
            line = _clean(raw)
            m = _header(line)
            if m is not None:
                if header is not None:
                    message = self._message(*header, body)
                    if message is not None:
                        yield message
                header, body = (number, m), []
            elif header is not None:
                body.append(line)
            elif line.strip():
                self.problem(number, "not a WhatsApp message line (and no message before it to continue)")
        if header is not None:
            message = self._message(*header, body)
            if message is not None:
                yield message

    def _message(self, number: int, m: re.Match, more: list[str]) -> ChatMessage | None:
        at = _to_datetime(_date(m.group("date"), self.order), m.group("time"), m.group("ampm"))
        if at is None:
            self.problem(number, f"invalid date or time {m.group('date')} {m.group('time')} (read as {self.order})")
            return None
        who = _author(m.group("rest"))
        if who is None:
            self.system_lines += 1
            return None
        author, first = who
        return ChatMessage(at, author, "\n".join([first, *more]) if more else first, number)


def parse_whatsapp(text: str, *, date_order: str = "auto") -> ParsedChat:
    """Messages of an export, oldest first. Never raises: lines it cannot use are listed in `problems`."""
    order = survey(text_lines(text)).date_order() if date_order == "auto" else date_order
    problems: list[tuple[int, str]] = []
    reader = MessageReader(order, lambda number, why: problems.append((number, why)))
    messages = list(reader.messages(text_lines(text)))
    return ParsedChat(messages, reader.system_lines, problems, order)


def _classify(text: str) -> tuple[str | None, str]:
    """(drop reason or None, cleaned text)."""
    marked = text.lstrip(" ").startswith("\u200e")
    text = EDITED_RE.sub("", text.translate(INVISIBLE)).strip()
    if not text:
        return "empty", text
    if MEDIA_RE.match(text):
        return "media", text
    if len(text) < 40 and DELETED_RE.match(unicodedata.normalize("NFC", text)):
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
    """(conversation start, messages) examples: the author's turns are the assistant's, everyone else's the user's
    (see iter_chat_examples); a chat with more than two authors is a group chat."""
    return list(iter_chat_examples(messages, author, group=len({m.author for m in messages}) > 2,
                                   merge_minutes=merge_minutes, gap_minutes=gap_minutes, max_turns=max_turns,
                                   separator=separator, report=report))


def iter_chat_examples(messages: Iterable[ChatMessage], author: str, *, group: bool, merge_minutes: float = 10,
                       gap_minutes: float = 60, max_turns: int = 12, separator: str = "\n",
                       report: ImportReport | None = None) -> Iterator[tuple[datetime, list[dict]]]:
    """(conversation start, messages) examples, each conversation's as soon as it ends.

    Consecutive messages of one author within `merge_minutes` become one turn (joined by `separator`); a silence
    longer than `gap_minutes`, or the same side writing again after the merge window, starts a new conversation;
    conversations longer than `max_turns` are cut into several examples. Every example starts with a user turn
    and ends with an assistant turn. In a group chat the users' turns name who wrote each message."""
    conversation: list[Turn] = []
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
                conversation.append(last)
                continue
        yield from _conversation_examples(conversation, max_turns, separator, report)
        last = Turn(role, m.author, m.at, m.at, [content])
        conversation = [last]
    yield from _conversation_examples(conversation, max_turns, separator, report)


def _conversation_examples(turns: list[Turn], max_turns: int, separator: str, report: ImportReport | None
                           ) -> Iterator[tuple[datetime, list[dict]]]:
    start = 0
    while start < len(turns) and turns[start].role != "user":
        start += 1
    turns = turns[start:]
    if not turns:
        return
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
        yield started, [{"role": t.role, "content": separator.join(t.parts)} for t in chunk]


def import_whatsapp(path: str | Path, *, persona: str, author: str, merge_minutes: float = 10,
                    gap_minutes: float = 60, max_turns: int = 12, separator: str = "\n", date_order: str = "auto",
                    validation_fraction: float = 0.1) -> tuple[ImportReport, list[tuple[str, str, dict]]]:
    """Parse and group a chat export; returns the report and the (kind, split, data) examples to store.
    The file is read as a stream, twice (see the module docstring)."""
    p = Path(path)
    if date_order not in ("auto", "dmy", "mdy", "ymd"):
        raise ImportFileError(f"date order {date_order!r}: expected auto, dmy, mdy or ymd")
    if max_turns < 2:
        raise ImportFileError(f"max turns {max_turns}: need at least 2 (a user turn and a reply)")
    report = ImportReport("whatsapp", p, persona, unit="messages")
    found = survey(iter_lines(p))
    if not found.authors:
        raise ImportFileError(f"{p}:{found.first_stray_line or 1}: no WhatsApp messages found (expected lines like "
                              "'31/12/23, 21:41 - Name: text' or '[31/12/23, 21:41:05] Name: text')")
    if author not in found.authors:
        raise ImportFileError(f"{p}: author {author!r} does not appear in the chat; "
                              f"authors: {', '.join(sorted(found.authors))}")
    order = found.date_order() if date_order == "auto" else date_order
    reader = MessageReader(order, lambda number, why: report.drop("unreadable_line", f"{p}:{number}: {why}"))
    messages = 0

    def counted(stream: Iterator[ChatMessage]) -> Iterator[ChatMessage]:
        nonlocal messages
        for message in stream:
            messages += 1
            yield message

    out = []
    for started, msgs in iter_chat_examples(counted(reader.messages(iter_lines(p))), author,
                                            group=len(found.authors) > 2, merge_minutes=merge_minutes,
                                            gap_minutes=gap_minutes, max_turns=max_turns, separator=separator,
                                            report=report):
        split = validation_split(f"whatsapp:{p.name}:{author}:{started.isoformat()}", validation_fraction)
        report.validation += split == "validation"
        out.append(("sft", split, {"messages": msgs}))
    report.read = messages + reader.system_lines
    if reader.system_lines:
        report.dropped["system"] += reader.system_lines
    report.kept = len(out)
    if not out:
        raise ImportFileError(f"{p}: no conversation where {author!r} answers someone; nothing to import")
    return report, out
