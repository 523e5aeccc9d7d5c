"""WhatsApp exports: Android and iOS lines, 12/24 h, date orders, multi-line messages, media and system lines."""

from __future__ import annotations

import itertools
from datetime import datetime
from pathlib import Path

import pytest

from loopbot.trainer.importers import ImportFileError, run_import
from loopbot.trainer.importers.whatsapp import chat_examples, import_whatsapp, parse_whatsapp

SAMPLES = Path(__file__).parent / "samples"


def _examples(name, **kw):
    report, examples = import_whatsapp(SAMPLES / name, persona="clone", author=kw.pop("author", "Ana"),
                                       validation_fraction=0.0, **kw)
    return report, [data["messages"] for _kind, _split, data in examples]


@pytest.mark.parametrize("name, order, first", [
    ("android_24h_dmy_es.txt", "dmy", datetime(2024, 2, 14, 9, 6)),
    ("android_12h_mdy_en.txt", "mdy", datetime(2023, 12, 24, 20, 16)),
    ("ios_24h_dmy_es.txt", "dmy", datetime(2024, 1, 3, 18, 4, 11)),
    ("ios_12h_mdy_en.txt", "mdy", datetime(2024, 1, 15, 9, 41, 5)),
    ("android_es_ampm.txt", "dmy", datetime(2024, 3, 5, 19, 30)),
    ("android_iso_dates.txt", "ymd", datetime(2024, 3, 5, 19, 30)),
    ("android_dot_dates_group.txt", "dmy", datetime(2023, 12, 31, 23, 51)),
])
def test_every_line_format_is_read_with_the_right_date(name, order, first):
    parsed = parse_whatsapp((SAMPLES / name).read_text(encoding="utf-8"))
    assert parsed.date_order == order
    assert parsed.problems == []
    assert parsed.messages[0].at == first


def test_twelve_hour_times_become_24_hour():
    parsed = parse_whatsapp((SAMPLES / "android_12h_mdy_en.txt").read_text())
    by_text = {m.text: m.at for m in parsed.messages}
    assert by_text["thanks, my mom did it"] == datetime(2023, 12, 24, 23, 58)
    assert by_text["night!"] == datetime(2023, 12, 25, 0, 3)  # 12:03 AM is just after midnight


def test_author_turns_are_merged_and_keep_their_line_breaks():
    report, examples = _examples("android_24h_dmy_es.txt")
    assert examples[0] == [
        {"role": "user", "content": "hola Ana!"},
        {"role": "assistant", "content": "holaa\ncómo estái?"},
        {"role": "user", "content": "bien, te mando la lista"},
        {"role": "assistant", "content": "ya, la reviso\ny te digo al tiro\nlo que falta"},
        {"role": "user", "content": "gracias!"},
        {"role": "assistant", "content": "de nada"},  # the "edited" marker is removed
    ]
    assert report.dropped == {"media": 1, "deleted": 1, "system": 1}
    # a silence of more than an hour starts another conversation
    assert examples[1] == [{"role": "user", "content": "estái?"}, {"role": "assistant", "content": "sí, aquí"}]


def test_a_custom_separator_joins_merged_messages():
    _, examples = _examples("android_es_ampm.txt", separator=" <sep> ")
    assert examples[0][1]["content"] == "ya po <sep> a qué hora?"


def test_media_and_system_lines_in_english_and_ios_are_dropped():
    report, examples = _examples("ios_24h_dmy_es.txt")
    text = str(examples)
    assert "omitted" not in text and "encrypted" not in text
    assert report.dropped == {"media": 1, "system": 1}
    assert examples[0][2] == {"role": "user", "content": "qué lindo\nse ve el mar"}  # an iOS multi-line message
    report, _ = _examples("android_12h_mdy_en.txt")
    assert report.dropped == {"media": 1, "deleted": 1, "system": 1}


def test_group_chats_name_the_other_speakers():
    report, examples = _examples("android_dot_dates_group.txt")
    assert examples[0][0] == {"role": "user", "content": "Bea: feliz año!!\nCami: feliz año a todas"}
    assert report.dropped["system"] == 2  # "created group" and "added" lines


def test_long_conversations_are_cut_into_examples_that_start_with_the_user_and_end_with_the_author():
    from loopbot.trainer.importers.whatsapp import ChatMessage

    t0 = datetime(2024, 1, 1, 10, 0)
    from datetime import timedelta

    msgs = [ChatMessage(t0 + timedelta(minutes=i), "Ana" if i % 2 else "Bo", f"m{i}", i) for i in range(20)]
    examples = chat_examples(msgs, "Ana", max_turns=6)
    assert [len(m) for _, m in examples] == [6, 6, 6, 2]
    for _, messages in examples:
        assert messages[0]["role"] == "user" and messages[-1]["role"] == "assistant"
        assert all(a["role"] != b["role"] for a, b in itertools.pairwise(messages))


def test_the_example_corpus_imports(engine, settings):
    report = run_import(engine, settings, "clone", "whatsapp", Path("examples/whatsapp_chat.txt"), author="Ana")
    assert report.kept >= 30 and report.added == report.kept and report.dropped["media"] >= 1
    again = run_import(engine, settings, "clone", "whatsapp", Path("examples/whatsapp_chat.txt"), author="Ana")
    assert again.added == 0 and again.already_present == report.kept


def test_an_unknown_author_is_a_clear_error():
    with pytest.raises(ImportFileError, match=r"author 'Zoe' does not appear in the chat; authors: Ana, Pedro"):
        import_whatsapp(SAMPLES / "android_24h_dmy_es.txt", persona="clone", author="Zoe")


def test_a_file_that_is_not_a_chat_names_the_file_and_line():
    with pytest.raises(ImportFileError, match=r"not_a_chat\.txt:1: no WhatsApp messages found"):
        import_whatsapp(SAMPLES / "not_a_chat.txt", persona="clone", author="Ana")


def test_an_impossible_date_is_reported_with_its_line(tmp_path):
    chat = tmp_path / "chat.txt"
    chat.write_text("01/02/24, 10:00 - Bo: hi\n01/02/24, 10:01 - Ana: hey\n31/02/24, 10:02 - Bo: ??\n")
    report, _ = import_whatsapp(chat, persona="clone", author="Ana")
    assert report.dropped["unreadable_line"] == 1
    assert report.problems == [f"{chat}:3: invalid date or time 31/02/24 10:02 (read as dmy)"]


def test_ios_and_spanish_deleted_messages_are_dropped_with_or_without_the_period():
    report, examples = _examples("ios_deleted_en_es.txt")
    text = str(examples).lower()
    assert "deleted" not in text and "elimin" not in text
    assert report.dropped == {"deleted": 8}
    assert examples == [
        [{"role": "user", "content": "hi Ana"}, {"role": "assistant", "content": "morning!"},
         {"role": "user", "content": "coffee later?"}, {"role": "assistant", "content": "sure, at 11"}],
        [{"role": "user", "content": "hola otra vez"}, {"role": "assistant", "content": "hola!"}],
    ]


def _month_first_chat(odd_line: str) -> str:
    """An English 12-hour export (month first: 1/15/24) with one line written day first in the middle."""
    lines = []
    for day in range(13, 19):
        lines += [f"1/{day}/24, 9:0{i} AM - {who}: {what} {day}" for i, (who, what) in
                  enumerate([("Tom", "morning"), ("Ana", "hey"), ("Tom", "run today?"), ("Ana", "yes, 10 km")])]
    lines.insert(9, odd_line)
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("odd", ["13/01/24, 10:00 - Tom: pasted from another phone",
                                 "2024-01-14 10:00 - Tom: pasted from a third phone"])
def test_one_odd_date_line_is_reported_and_does_not_flip_the_date_order(tmp_path, odd):
    chat = tmp_path / "chat.txt"
    chat.write_text(_month_first_chat(odd), encoding="utf-8")
    parsed = parse_whatsapp(chat.read_text(encoding="utf-8"))
    assert parsed.date_order == "mdy"
    assert [number for number, _ in parsed.problems] == [10]
    assert parsed.messages[0].at == datetime(2024, 1, 13, 9, 0)
    assert parsed.messages[-1].at == datetime(2024, 1, 18, 9, 3)
    assert len(parsed.messages) == 24
    report, examples = import_whatsapp(chat, persona="clone", author="Ana", validation_fraction=0.0)
    date = odd.split(",")[0].split(" ")[0]
    assert report.problems == [f"{chat}:10: invalid date or time {date} 10:00 (read as mdy)"]
    assert report.dropped == {"unreadable_line": 1} and len(examples) == 6


def test_the_day_first_majority_wins_over_one_year_first_line(tmp_path):
    chat = tmp_path / "chat.txt"
    chat.write_text("03/02/24, 10:00 - Bo: hi\n03/02/24, 10:01 - Ana: hey\n2024-02-03 10:02 - Bo: ??\n"
                    "03/02/24, 10:03 - Bo: still there?\n03/02/24, 10:04 - Ana: yes\n", encoding="utf-8")
    report, examples = import_whatsapp(chat, persona="clone", author="Ana", validation_fraction=0.0)
    assert report.problems == [f"{chat}:3: invalid date or time 2024-02-03 10:02 (read as dmy)"]
    assert [m["content"] for m in examples[0][2]["messages"]] == ["hi", "hey", "still there?", "yes"]
