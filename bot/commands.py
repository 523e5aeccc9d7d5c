"""The chat commands, the same on every platform: /start /help /persona /new /retry /consent /arena /forget /stats,
and for admins /train /adapters /rollback. Handlers over the ChatCore (bot/core.py); chat.py dispatches to them."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import aclosing

from loopbot.base.errors import LoopbotError
from loopbot.bot import buttons
from loopbot.bot.core import ChatCore
from loopbot.bot.messages import Incoming, Reply
from loopbot.storage import crud

log = logging.getLogger(__name__)

COMMANDS: dict[str, tuple[str, bool]] = {  # name -> (description, admin only)
    "start": ("what this bot is and how to rate it", False),
    "help": ("what this bot is and how to rate it", False),
    "persona": ("list the personas, or switch: /persona NAME", False),
    "new": ("start a fresh conversation", False),
    "retry": ("another answer to your last message", False),
    "consent": ("may your chats train the bot: /consent on|off", False),
    "arena": ("may your messages be shown in the public web arena: /arena on|off", False),
    "forget": ("delete your messages, replies and votes", False),
    "stats": ("replies, 👍 rate and the live version", False),
    "train": ("admin: start a training cycle now: /train [persona]", True),
    "adapters": ("admin: list the adapter versions", True),
    "rollback": ("admin: go back to the previous version: /rollback PERSONA", True),
}

HELP = """Hi! I'm {display} ({persona}): {description}

Just write to me and I'll answer.{group_note}
Rate every answer with 👍 or 👎, or press 🔄 for another one.
Sometimes I show two answers, A and B: pick the better one.
Your votes train me: every night the ratings become a better version of me.

What is stored: your messages, my answers and your votes, to answer in context and to train me.{consent}
/consent off keeps your chats out of training; /forget deletes everything of yours.
Your messages appear in the public web arena only if you say /arena on (with phone numbers and e-mail addresses
masked).{arena}

Commands:
{commands}"""


async def run_command(service: ChatCore, inc: Incoming, text: str) -> AsyncIterator[Reply]:
    """The answer to a slash command (unknown ones and admin-only ones for others get a short refusal)."""
    head, _, rest = text.partition(" ")
    name = head[1:].split("@", 1)[0].lower()
    args = rest.split()
    if name not in COMMANDS:
        shown = head[:40]
        yield _say(f"I don't know the command {shown}. Send /help to see what I can do.")
        return
    user, chat = await service.user_and_chat(inc)
    if COMMANDS[name][1] and not service.is_admin(inc.platform, inc.user_id, user):
        yield _say(f"/{name} is for admins only.")
        return
    handler = _HANDLERS[name]
    async with aclosing(handler(service, inc, user, chat, args)) as replies:
        async for reply in replies:
            yield reply


def _say(text: str, **kw) -> Reply:
    return Reply(0, text, final=True, plain=True, **kw)


async def _help(service, inc, user, chat, args):
    persona = service.persona_of(chat)
    p = service.settings.personas[persona]
    commands = "\n".join(f"/{n}: {d}" for n, (d, admin) in COMMANDS.items()
                         if n != "start" and (not admin or service.is_admin(inc.platform, inc.user_id, user)))
    group_note = " In a group, mention me or reply to one of my messages." if inc.chat_type != "private" else ""
    consent = (" You currently allow training on your chats." if user.consent
               else " You have opted out of training.")
    arena = " You currently allow it." if user.arena_consent else " You currently do not."
    yield _say(HELP.format(display=p.display_name, persona=persona, description=p.description or "",
                           group_note=group_note, consent=consent, arena=arena, commands=commands))


async def _persona(service, inc, user, chat, args):
    personas = service.settings.personas
    current = service.persona_of(chat)
    served = service.served_bot(chat)
    if served is not None and not served.switchable:
        p = personas[current]
        yield _say(f"This bot always talks as {p.display_name} ({current})."
                   + (" It cannot switch persona." if args else ""))
        return
    if not args:
        lines = [f"{'▶' if n == current else '•'} {n}: {p.display_name}. {p.description}".rstrip()
                 for n, p in personas.items()]
        yield _say("Personas (switch with /persona NAME):\n" + "\n".join(lines))
        return
    name = args[0].lower()
    if name not in personas:
        yield _say(f"There is no persona {args[0][:40]!r}. Choose one of: {', '.join(personas)}.")
        return
    await service.db.run(crud.set_chat_persona, chat_id=chat.id, persona=name)
    service.changed(chat_id=chat.id)
    yield _say(f"Now talking as {personas[name].display_name} ({name}). This starts a new conversation.")


async def _new(service, inc, user, chat, args):
    await service.db.run(crud.new_conversation, chat_id=chat.id)
    service.changed(chat_id=chat.id)
    yield _say("New conversation started: I've set the earlier messages aside.")


async def _retry(service, inc, user, chat, args):
    gen = await service.db.run(crud.last_generation, chat_id=chat.id, conversation_id=chat.conversation_id)
    if gen is None:
        yield _say("There is nothing to retry yet: send me a message first.")
        return
    key = f"{inc.platform}:{inc.user_id}"
    refusal = await service.limiter.refusal(key)
    if refusal:
        yield _say(refusal)
        return
    async with aclosing(service.retry(chat, gen, key)) as replies:
        async for reply in replies:
            yield reply


async def _consent(service, inc, user, chat, args):
    choice = args[0].lower() if args else ""
    if choice not in ("on", "off"):
        state = "on: your chats may be used for training" if user.consent else "off: your chats are not used"
        yield _say(f"Consent is {state}. Change it with /consent on or /consent off.")
        return
    await service.db.run(crud.set_consent, user_id=user.id, consent=choice == "on")
    service.changed(user_id=user.id)
    yield _say("Thanks! Your chats and votes may now be used to train me." if choice == "on"
               else "Done: your chats and votes will not be used for training from now on.")


async def _arena(service, inc, user, chat, args):
    choice = args[0].lower() if args else ""
    if choice not in ("on", "off"):
        state = ("on: your messages and my replies to them may be shown in the public web arena" if user.arena_consent
                 else "off: your messages are never shown in the public web arena")
        yield _say(f"Arena sharing is {state}. Change it with /arena on or /arena off.")
        return
    await service.db.run(crud.set_arena_consent, user_id=user.id, consent=choice == "on")
    service.changed(user_id=user.id)
    if choice == "off":
        yield _say("Done: your messages will not be shown in the public web arena any more.")
        return
    note = "" if user.consent else " (Not while you keep your chats out of training: /consent on allows both.)"
    yield _say("Thanks! Your messages and my replies to them may now be shown to visitors of the public web arena, "
               "with phone numbers and e-mail addresses masked." + note)


async def _forget(service, inc, user, chat, args):
    yield _say("Delete all your messages, the replies to them and your votes on this platform, and take your messages "
               "out of everything they were copied into (other replies' context, training datasets)? "
               "This cannot be undone.", buttons=buttons.forget_buttons(user.id))


async def _stats(service, inc, user, chat, args):
    persona = service.persona_of(chat)
    up, down = await service.db.run(crud.vote_counts, persona=persona)
    replies = await service.db.run(crud.count_replies, persona=persona)
    mine = await service.db.run(crud.count_replies, persona=persona, chat_id=chat.id)
    try:
        live = await service.live_version(persona)
    except Exception:
        live = "unknown (serving unreachable)"
    rate = f"{100 * up / (up + down):.0f}% 👍 ({up} 👍, {down} 👎)" if up + down else "no votes yet"
    yield _say(f"{persona}: {replies} replies ({mine} in this chat), {rate}.\nLive version: {live or 'base model'}.")


async def _train(service, inc, user, chat, args):
    persona = args[0].lower() if args else service.persona_of(chat)
    if persona not in service.settings.personas:
        yield _say(f"There is no persona {persona[:40]!r}.")
        return
    yield _say(await _call_trainer(service, "request_cycle", persona, done=f"Training cycle for {persona} requested"))


async def _rollback(service, inc, user, chat, args):
    if not args or args[0].lower() not in service.settings.personas:
        yield _say(f"Usage: /rollback PERSONA (one of: {', '.join(service.settings.personas)}).")
        return
    persona = args[0].lower()
    yield _say(await _call_trainer(service, "rollback", persona, done=f"Rollback of {persona}"))


async def _call_trainer(service, action: str, persona: str, *, done: str) -> str:
    if service.training is None:
        return "Not available: this process does not run training (start it with `loopbot run`)."
    try:
        result = await getattr(service.training, action)(persona)
    except LoopbotError as e:  # a refusal with a message for the admin (e.g. nothing to roll back)
        return f"{done}: not done: {e}"[:1000]
    except Exception as e:  # the admin gets the reason, the bot keeps running
        log.exception("%s of %s failed", action, persona)
        return f"{done}: failed: {type(e).__name__}: {e}"[:1000]
    return f"{done}: {result}"[:3000]


async def _adapters(service, inc, user, chat, args):
    rows = await service.db.run(crud.list_adapters, persona=args[0].lower() if args else None)
    if not rows:
        yield _say("No adapter versions yet: every persona is served by its base model.")
        return
    lines = [f"{a.name}: {a.status}" + (f" ({a.status_reason})" if a.status_reason else "") for a in rows[-30:]]
    yield _say("Adapter versions:\n" + "\n".join(lines))


_HANDLERS = {"start": _help, "help": _help, "persona": _persona, "new": _new, "retry": _retry, "consent": _consent,
             "arena": _arena, "forget": _forget, "stats": _stats, "train": _train, "adapters": _adapters,
             "rollback": _rollback}
