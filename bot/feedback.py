"""Button presses: 👍/👎 votes (pressing the same again withdraws), 🔄 retries, arena picks, /forget confirmation;
and 👍/👎 reactions, which count as votes. Handlers over the ChatCore (bot/core.py); chat.py dispatches to them."""

from __future__ import annotations

import asyncio

from loopbot.bot import buttons
from loopbot.bot.access import PRIVATE
from loopbot.bot.core import ChatCore
from loopbot.bot.messages import Press, PressOutcome, Reaction
from loopbot.storage import crud
from loopbot.storage.forget_files import forget_in_files

EXPIRED = "This button has expired."
PICK_THANKS = {"a": "Thanks! A is kept.", "b": "Thanks! B is kept.", "tie": "Thanks! Noted as a tie.",
               "both_bad": "Thanks! Noted: neither was good."}
REACTION_VALUES = {"👍": 1, "👎": -1}


async def handle_press(core: ChatCore, press: Press) -> PressOutcome:
    """What a press does; only for an allowed user in an allowed chat (else the private-bot answer, before
    anything is stored or generated), for a row of the chat it was pressed in, by someone in that chat."""
    if not core.access.allows(press.platform, press.user_id, press.chat_id):
        return PressOutcome(PRIVATE)
    action = buttons.parse(press.data)
    if action is None:
        return PressOutcome(EXPIRED)
    user, chat = await core.user_and_chat(press)
    if chat.type == "private" and not await core.db.run(crud.user_in_chat, user_id=user.id, chat_id=chat.id):
        return PressOutcome(EXPIRED)
    if action.kind == "forget":
        return await _forget(core, user, action)
    if action.kind == "pick":
        return await _pick(core, chat, action)
    gen = await core.db.run(crud.get_generation, generation_id=action.id)
    if gen is None or gen.chat_id != chat.id:
        return PressOutcome(EXPIRED)
    if action.kind == "vote":
        return await _vote(core, gen, user, int(action.arg))
    return await _retry(core, press, chat, gen)


async def handle_reaction(core: ChatCore, reaction: Reaction) -> int | None:
    """Record the vote a reaction means: the vote now recorded (None = none), or None if not one of our replies."""
    if not core.settings.feedback.reactions or not core.access.allows(reaction.platform, reaction.user_id,
                                                                      reaction.chat_id):
        return None
    values = [REACTION_VALUES[e] for e in reaction.emoji if e in REACTION_VALUES]
    async with core.reactions_in_order:  # a reaction and its removal right after land in the order they came
        await core.db.settle()  # the platform ids of replies just delivered
        return await core.db.run(_react, reaction=reaction, value=values[-1] if values else None,
                                 default_consent=core.settings.feedback.consent_default)


def _react(engine, *, reaction: Reaction, value: int | None, default_consent: bool) -> int | None:
    """In the database threads: find the reply reacted to, then record or withdraw the user's vote on it."""
    _, chat = crud.user_and_chat(engine, platform=reaction.platform, platform_user_id=None,
                                 platform_chat_id=reaction.chat_id, bot=reaction.bot)
    msg = crud.find_message_by_platform_id(engine, chat_id=chat.id, platform_message_id=reaction.message_id)
    gen = crud.generation_for_message(engine, message_id=msg.id) if msg else None
    if gen is None:
        return None
    user, _ = crud.user_and_chat(engine, platform=reaction.platform, platform_user_id=reaction.user_id,
                                 platform_chat_id=None, display_name=reaction.user_name,
                                 default_consent=default_consent)
    if value is None:
        crud.withdraw_vote(engine, generation_id=gen.id, user_id=user.id)
        return None
    crud.upsert_vote(engine, generation_id=gen.id, user_id=user.id, value=value, source="reaction")
    return value


async def _vote(core: ChatCore, gen, user, value: int) -> PressOutcome:
    if gen.status not in ("ok", "cut_off"):
        return PressOutcome("There is nothing to rate in this reply.")
    withdrawn, up, down = await core.db.run(_toggle_vote, generation_id=gen.id, user_id=user.id, value=value)
    if withdrawn:
        answer = "Vote withdrawn."
    else:
        answer = "Thanks! 👍 noted." if value > 0 else "Thanks! 👎 noted: I'll try to do better."
    return PressOutcome(answer, buttons=buttons.vote_buttons(gen.id, up, down))


def _toggle_vote(engine, *, generation_id: int, user_id: int, value: int) -> tuple[bool, int, int]:
    """In the database threads: the same vote again withdraws it, another one replaces it; then the tally."""
    withdrawn = crud.get_vote(engine, generation_id=generation_id, user_id=user_id) == value
    if withdrawn:
        crud.withdraw_vote(engine, generation_id=generation_id, user_id=user_id)
    else:
        crud.upsert_vote(engine, generation_id=generation_id, user_id=user_id, value=value, source="button")
    return (withdrawn, *crud.vote_tally(engine, generation_id=generation_id))


async def _retry(core: ChatCore, press: Press, chat, gen) -> PressOutcome:
    key = f"{press.platform}:{press.user_id}"
    refusal = await core.limiter.refusal(key)
    if refusal:
        return PressOutcome(refusal)
    return PressOutcome("Trying again…", replies=core.retry(chat, gen, key))


async def _pick(core: ChatCore, chat, action) -> PressOutcome:
    cmp = await core.db.run(crud.get_comparison, comparison_id=action.id)
    gen_a = await core.db.run(crud.get_generation, generation_id=cmp.generation_a_id) if cmp else None
    if cmp is None or gen_a is None or gen_a.chat_id != chat.id:
        return PressOutcome(EXPIRED)
    await core.db.run(crud.record_pick, comparison_id=cmp.id, pick=action.arg)
    kept = cmp.generation_b_id if action.arg == "b" else cmp.generation_a_id
    return PressOutcome(PICK_THANKS[action.arg], buttons=buttons.vote_buttons(kept))


async def _forget(core: ChatCore, user, action) -> PressOutcome:
    if action.id != user.id:
        return PressOutcome("Only the person who asked can confirm this.")
    if action.arg == "n":
        return PressOutcome("Cancelled.", buttons=[], edit_text="Nothing was deleted.")
    db, settings = core.db, core.settings
    # the files first: the texts that find them are gone once the rows are (a failure here deletes no row, so
    # the user can confirm again)
    texts = await db.run(crud.forgotten_texts, user_id=user.id)
    files = await asyncio.to_thread(forget_in_files, texts, datasets_dir=settings.datasets_dir,
                                    reports_dir=settings.reports_dir,
                                    build_dirs=await db.run(crud.dataset_build_paths))
    counts = await db.run(crud.forget_user, user_id=user.id, files=files)
    # once more: a build that finished during the first look (one that starts reading later sees the forget event)
    again = await asyncio.to_thread(forget_in_files, texts, datasets_dir=settings.datasets_dir,
                                    reports_dir=settings.reports_dir,
                                    build_dirs=await db.run(crud.dataset_build_paths))
    if any(again.values()):
        await db.run(crud.record_event, kind="forget_files", data={"user_id": user.id, **again})
    files = {k: files[k] + again[k] for k in files}
    core.changed(user_id=user.id)
    prompts, builds = counts["prompts"], len(files["dataset_builds"])
    text = (f"Done: deleted {counts['messages']} messages (yours and my {counts['generations']} replies to them), "
            f"{counts['votes']} votes and {counts['comparisons']} comparisons"
            + (f"; took your messages out of the context of {prompts} other {_plural(prompts, 'reply', 'replies')}"
               if prompts else "")
            + (f"; deleted {builds} training dataset {_plural(builds, 'build', 'builds')} that contained them"
               if builds else "") + ".")
    return PressOutcome("Deleted.", buttons=[], edit_text=text)


def _plural(n: int, one: str, many: str) -> str:
    return one if n == 1 else many
