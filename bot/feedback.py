"""Button presses: 👍/👎 votes (pressing the same again withdraws), 🔄 retries, arena picks, /forget confirmation."""

from __future__ import annotations

from contextlib import aclosing
from typing import TYPE_CHECKING

from loopbot.bot import buttons
from loopbot.bot.messages import Press, PressOutcome
from loopbot.storage import crud

if TYPE_CHECKING:
    from loopbot.bot.chat import ChatService

EXPIRED = "This button has expired."
PICK_THANKS = {"a": "Thanks! A is kept.", "b": "Thanks! B is kept.", "tie": "Thanks! Noted as a tie.",
               "both_bad": "Thanks! Noted: neither was good."}


async def handle_press(service: ChatService, press: Press) -> PressOutcome:
    action = buttons.parse(press.data)
    if action is None:
        return PressOutcome(EXPIRED)
    engine = service.engine
    user, chat = service.user_and_chat(press)
    if chat.type == "private" and not crud.user_in_chat(engine, user_id=user.id, chat_id=chat.id):
        return PressOutcome(EXPIRED)
    if action.kind == "forget":
        return _forget(service, user, action)
    if action.kind == "pick":
        return _pick(service, chat, action)
    gen = crud.get_generation(engine, generation_id=action.id)
    if gen is None or gen.chat_id != chat.id:
        return PressOutcome(EXPIRED)
    if action.kind == "vote":
        return _vote(service, gen, user, int(action.arg))
    return _retry(service, press, chat, gen)


def _vote(service: ChatService, gen, user, value: int) -> PressOutcome:
    engine = service.engine
    if gen.status not in ("ok", "cut_off"):
        return PressOutcome("There is nothing to rate in this reply.")
    if crud.get_vote(engine, generation_id=gen.id, user_id=user.id) == value:
        crud.withdraw_vote(engine, generation_id=gen.id, user_id=user.id)
        answer = "Vote withdrawn."
    else:
        crud.upsert_vote(engine, generation_id=gen.id, user_id=user.id, value=value, source="button")
        answer = "Thanks! 👍 noted." if value > 0 else "Thanks! 👎 noted: I'll try to do better."
    up, down = crud.vote_tally(engine, generation_id=gen.id)
    return PressOutcome(answer, buttons=buttons.vote_buttons(gen.id, up, down))


def _retry(service: ChatService, press: Press, chat, gen) -> PressOutcome:
    key = f"{press.platform}:{press.user_id}"
    refusal = service.limiter.refusal(key)
    if refusal:
        return PressOutcome(refusal)
    return PressOutcome("Trying again…", replies=retry_stream(service, chat, gen, key))


async def retry_stream(service: ChatService, chat, gen, limiter_key: str | None = None):
    """Another answer to the prompt of `gen`, stored as its retry; the new answer replaces it in the history."""
    try:
        conversation_id = (crud.get_message(service.engine, message_id=gen.message_id).conversation_id
                           if gen.message_id else chat.conversation_id)
        crud.set_in_history(service.engine, generation_id=gen.id, in_history=False)
        async with aclosing(service.generate(chat, gen.persona, gen.prompt, prompt_message_id=gen.prompt_message_id,
                                             conversation_id=conversation_id, retry_of_id=gen.id)) as replies:
            async for reply in replies:
                if reply.final and reply.plain:  # the retry failed: the first answer stays in the history
                    crud.set_in_history(service.engine, generation_id=gen.id,
                                        in_history=gen.status in ("ok", "cut_off"))
                yield reply
    finally:
        if limiter_key:
            service.limiter.done(limiter_key)


def _pick(service: ChatService, chat, action) -> PressOutcome:
    engine = service.engine
    cmp = crud.get_comparison(engine, comparison_id=action.id)
    gen_a = crud.get_generation(engine, generation_id=cmp.generation_a_id) if cmp else None
    if cmp is None or gen_a is None or gen_a.chat_id != chat.id:
        return PressOutcome(EXPIRED)
    crud.record_pick(engine, comparison_id=cmp.id, pick=action.arg)
    kept = cmp.generation_b_id if action.arg == "b" else cmp.generation_a_id
    return PressOutcome(PICK_THANKS[action.arg], buttons=buttons.vote_buttons(kept))


def _forget(service: ChatService, user, action) -> PressOutcome:
    if action.id != user.id:
        return PressOutcome("Only the person who asked can confirm this.")
    if action.arg == "n":
        return PressOutcome("Cancelled.", buttons=[], edit_text="Nothing was deleted.")
    counts = crud.forget_user(service.engine, user_id=user.id)
    service.changed(user_id=user.id)
    text = (f"Done: deleted {counts['messages']} messages (yours and my {counts['generations']} replies to them), "
            f"{counts['votes']} votes and {counts['comparisons']} comparisons.")
    return PressOutcome("Deleted.", buttons=[], edit_text=text)

