"""/forget takes the user's text out of everything it was copied into: other replies' stored prompts (a reply
chain in a group), the user's display name, the dataset builds and the evaluation reports. On SQLite and
PostgreSQL, a search of every column of every table and of the data directory finds nothing after it."""

from __future__ import annotations

import json

from sqlalchemy import Text, cast, select
from sqlmodel import SQLModel

from loopbot.base.tokens import estimate_tokens
from loopbot.bot.messages import Incoming
from loopbot.storage import crud
from loopbot.storage.db import session_scope
from loopbot.storage.models import Feedback, Generation, Message, User
from loopbot.trainer.datasets import build_datasets
from tests.bot.conftest import final, make_service, press

MARKER = "zqx7marker"


def say(text, user, chat, **kw) -> Incoming:
    return Incoming(platform="telegram", chat_id=chat, user_id=user, text=text,
                    chat_type="private" if chat == user else "group", **kw)


def found_in_database(engine, needle: str) -> list[str]:
    """table.column of every value that contains `needle`, every column of every table cast to text."""
    hits = []
    with session_scope(engine) as s:
        for table in SQLModel.metadata.sorted_tables:
            for column in table.columns:
                if s.execute(select(column).where(cast(column, Text).contains(needle)).limit(1)).first():
                    hits.append(f"{table.name}.{column.name}")
    return hits


def found_in_files(root, needle: str) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and needle in p.read_text("utf-8", errors="replace")]


async def test_forget_takes_the_text_out_of_other_replies_datasets_reports_and_the_name(engine, settings):
    settings.trainer.dataset.heldout_fraction = 0.0
    service = make_service(engine, settings)
    # someone else's DM, voted, built into a dataset before the forgetful user ever wrote: that build stays
    other = (await final(service, say("How do I pace a marathon?", "2", "2", user_name="bea")))[0]
    await service.press(press(f"v:{other.generation_ids[0]}:+1", user="2"))
    kept_build = build_datasets(engine, settings, "coach").out_dir

    name = f"Ana {MARKER}"
    secret = f"@bot my plan {MARKER}: call me at 612 34 56 78 or ana.{MARKER}@example.com"
    asked = (await final(service, say(secret, "1", "-100", user_name=name, message_id="1")))[0]
    await service.delivered(asked, "2")
    # bea answers the bot's reply to ana in the group: her reply's prompt carries ana's message and its answer
    follow = (await final(service, say("and what about hills?", "2", "-100", user_name="bea", message_id="3",
                                       reply_to_message_id="2")))[0]
    await service.delivered(follow, "4")
    bea_gen = follow.generation_ids[0]
    with session_scope(engine) as s:
        assert MARKER in json.dumps(s.get(Generation, bea_gen).prompt)
    await service.press(press(f"v:{bea_gen}:+1", user="2", chat="-100", chat_type="group"))
    await service.press(press(f"v:{bea_gen}:+1", user="1", chat="-100", chat_type="group"))
    await service.press(press(f"v:{asked.generation_ids[0]}:+1", user="1", chat="-100", chat_type="group"))
    mine = (await final(service, say(f"a DM about {MARKER} too", "1", "1", user_name=name)))[0]
    await service.press(press(f"v:{mine.generation_ids[0]}:-1", user="1"))
    built = build_datasets(engine, settings, "coach").out_dir
    sft = (built / "sft.jsonl").read_text("utf-8")
    assert "[phone]" in sft and "[email]" in sft and MARKER in sft  # scrubbed, yet still ana's text
    reports = settings.reports_dir / "coach"
    reports.mkdir(parents=True)
    report = {"samples": [{"prompt": "and what about hills?", "candidate": "x", "live": "y"},
                          {"prompt": secret.replace("612 34 56 78", "[phone]"), "candidate": "a", "live": "b"}]}
    (reports / "v1-20260101T000000Z.json").write_text(json.dumps(report), "utf-8")
    assert found_in_database(engine, MARKER) and found_in_files(settings.data_dir, MARKER)

    ask = (await final(service, say("/forget", "1", "1", user_name=name)))[0]
    done = await service.press(press(ask.buttons[0][0].data, user="1"))
    assert found_in_database(engine, MARKER) == []
    assert found_in_files(settings.data_dir, MARKER) == []
    assert done.edit_text.startswith("Done: deleted 4 messages")
    assert "out of the context of 1 other reply" in done.edit_text and "1 training dataset build " in done.edit_text
    assert kept_build.is_dir() and not built.exists()  # only the build that held ana's texts is gone
    kept_report = json.loads((reports / "v1-20260101T000000Z.json").read_text("utf-8"))
    assert [r["prompt"] for r in kept_report["samples"]] == ["and what about hills?"]
    # bea keeps her messages, her reply and her vote; her reply's prompt keeps her own turn
    with session_scope(engine) as s:
        prompt = s.get(Generation, bea_gen).prompt
        assert [m["role"] for m in prompt] == ["system", "user"] and prompt[-1]["content"] == "and what about hills?"
        assert {m.text for m in s.execute(select(Message).where(Message.role == "user")).scalars()} == {
            "How do I pace a marathon?", "and what about hills?"}
        assert [(f.generation_id, f.value) for f in s.execute(select(Feedback).order_by(Feedback.id)).scalars()] \
            == [(other.generation_ids[0], 1), (bea_gen, 1)]
        ana = s.execute(select(User).where(User.platform_user_id == "1")).scalar_one()
        assert ana.display_name == "" and ana.consent is True


async def test_a_build_reading_the_database_while_a_user_is_forgotten_is_made_again_without_them(engine, settings):
    settings.trainer.dataset.heldout_fraction = 0.0
    service = make_service(engine, settings)
    for user, text in (("1", f"my secret {MARKER}"), ("2", "How do I pace a marathon?")):
        reply = (await final(service, say(text, user, user)))[0]
        await service.press(press(f"v:{reply.generation_ids[0]}:+1", user=user))
    ana = crud.get_or_create_user(engine, platform="telegram", platform_user_id="1")
    forgotten = []

    def count(text: str) -> int:  # the first row being counted: the user is forgotten meanwhile
        if not forgotten:
            forgotten.append(crud.forget_user(engine, user_id=ana.id))
        return estimate_tokens(text)

    build = build_datasets(engine, settings, "coach", count_tokens=count)
    assert forgotten and MARKER not in (build.out_dir / "sft.jsonl").read_text("utf-8")
    assert build.counts["sft"] == 1 and found_in_files(settings.datasets_dir, MARKER) == []
    assert [p.name for p in (settings.datasets_dir / "coach").iterdir()] == [build.out_dir.name]  # no staging left
