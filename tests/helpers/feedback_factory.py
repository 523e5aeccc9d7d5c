"""Make realistic chat + vote rows through storage.crud: users, conversations, replies, votes, retries, arena picks.

    f = FeedbackFactory(engine, persona="coach")
    ana = f.user("ana")                                   # consenting; f.user("bob", consent=False)
    g = f.exchange(ana, "How do I pace?", "Start slow.")   # a user message + an ok reply in ana's conversation
    f.vote(g, ana, +1)
    r = f.retry(g, "Run even splits.")                     # a retry of g (same prompt)
    f.arena(ana, "Best shoes?", "Tested ones.", "New ones.", pick="a")
    f.say(ana, bob, "hi all")                              # bob writes in ana's chat (a group chat)
    f.population(seed=1, users=5, exchanges=40)            # random rows of every kind (for property tests)
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from loopbot.storage import crud
from loopbot.storage.models import Generation, User


@dataclass
class Conversation:
    user: User
    chat_id: int
    conversation_id: str
    history: list[dict] = field(default_factory=list)


class FeedbackFactory:
    def __init__(self, engine, *, persona: str = "coach", system_prompt: str = "You are a coach.",
                 platform: str = "telegram"):
        self.engine, self.persona, self.system_prompt, self.platform = engine, persona, system_prompt, platform
        self.conversations: dict[int, Conversation] = {}
        self._counter = 0

    def user(self, name: str, *, consent: bool = True) -> User:
        user = crud.get_or_create_user(self.engine, platform=self.platform, platform_user_id=name, display_name=name)
        if user.consent != consent:
            crud.set_consent(self.engine, user_id=user.id, consent=consent)
            user.consent = consent
        return user

    def conversation(self, user: User, *, new: bool = False) -> Conversation:
        """The user's current conversation (a private chat); new=True starts another one."""
        conv = self.conversations.get(user.id)
        if conv is None:
            chat = crud.get_or_create_chat(self.engine, platform=self.platform,
                                           platform_chat_id=f"chat-{user.platform_user_id}", persona=self.persona)
            conv = Conversation(user, chat.id, chat.conversation_id)
            self.conversations[user.id] = conv
        elif new:
            conv = Conversation(user, conv.chat_id, crud.new_conversation(self.engine, chat_id=conv.chat_id))
            self.conversations[user.id] = conv
        return conv

    def exchange(self, user: User, text: str, reply: str, *, status: str = "ok", finish_reason: str | None = "stop",
                 new_conversation: bool = False, in_history: bool = True) -> Generation:
        """The user says `text`, the persona answers `reply` (the prompt holds the conversation so far)."""
        conv = self.conversation(user, new=new_conversation)
        msg = crud.record_message(self.engine, chat_id=conv.chat_id, user_id=user.id, role="user", text=text,
                                  persona=self.persona, conversation_id=conv.conversation_id)
        conv.history.append({"role": "user", "content": text})
        prompt = [{"role": "system", "content": self.system_prompt}, *conv.history]
        gen = self._generate(conv, prompt, msg.id, reply, status, finish_reason, in_history=in_history)
        if status == "ok" and in_history:
            conv.history.append({"role": "assistant", "content": reply})
        return gen

    def say(self, owner: User, speaker: User, text: str) -> None:
        """`speaker` writes in `owner`'s chat (as in a group chat): the words join the next prompts there."""
        conv = self.conversation(owner)
        crud.record_message(self.engine, chat_id=conv.chat_id, user_id=speaker.id, role="user", text=text,
                            persona=self.persona, conversation_id=conv.conversation_id)
        conv.history.append({"role": "user", "content": text})

    def retry(self, original: Generation, reply: str, *, status: str = "ok",
              finish_reason: str | None = "stop") -> Generation:
        """A 🔄 of `original`: the same prompt answered again; the new reply replaces the old one in history."""
        conv = next(c for c in self.conversations.values() if c.chat_id == original.chat_id)
        crud.set_in_history(self.engine, generation_id=original.id, in_history=False)
        old_text = crud.get_message(self.engine, message_id=original.message_id).text
        if conv.history and conv.history[-1] == {"role": "assistant", "content": old_text}:
            conv.history.pop()
        gen = self._generate(conv, original.prompt, original.prompt_message_id, reply, status, finish_reason,
                             retry_of_id=original.id)
        if status == "ok":
            conv.history.append({"role": "assistant", "content": reply})
        return gen

    def vote(self, generation: Generation, user: User, value: int) -> None:
        crud.upsert_vote(self.engine, generation_id=generation.id, user_id=user.id, value=value)

    def arena(self, user: User, text: str, reply_a: str, reply_b: str, *, pick: str | None,
              picker: User | None = None, visitor_id: str | None = None) -> tuple[Generation, Generation]:
        """Two candidate replies to one message, and the pick between them (by `picker`, default the user)."""
        conv = self.conversation(user)
        msg = crud.record_message(self.engine, chat_id=conv.chat_id, user_id=user.id, role="user", text=text,
                                  persona=self.persona, conversation_id=conv.conversation_id)
        conv.history.append({"role": "user", "content": text})
        prompt = [{"role": "system", "content": self.system_prompt}, *conv.history]
        a = self._generate(conv, prompt, msg.id, reply_a, "ok", "stop")
        b = self._generate(conv, prompt, msg.id, reply_b, "ok", "stop")
        who = None if visitor_id else (picker or user).id
        comp = crud.create_comparison(self.engine, persona=self.persona, generation_a_id=a.id, generation_b_id=b.id,
                                      user_id=who, visitor_id=visitor_id, source="web" if visitor_id else "chat")
        if pick:
            crud.record_pick(self.engine, comparison_id=comp.id, pick=pick)
        conv.history.append({"role": "assistant", "content": reply_b if pick == "b" else reply_a})
        return a, b

    def _generate(self, conv: Conversation, prompt: list[dict], prompt_message_id: int | None, reply: str,
                  status: str, finish_reason: str | None, *, retry_of_id: int | None = None,
                  in_history: bool = True) -> Generation:
        gen = crud.start_generation(self.engine, chat_id=conv.chat_id, persona=self.persona, prompt=prompt,
                                    prompt_message_id=prompt_message_id, conversation_id=conv.conversation_id,
                                    adapter_version=None, backend="test", sampling={}, retry_of_id=retry_of_id,
                                    in_history=in_history)
        return crud.finish_generation(self.engine, generation_id=gen.id, text=reply, status=status,
                                      finish_reason=finish_reason, error="boom" if status == "error" else None)

    def population(self, *, seed: int = 0, users: int = 4, exchanges: int = 30, consent_rate: float = 0.7) -> dict:
        """Random conversations with every kind of feedback; returns {users, generations} for checks."""
        rng = random.Random(seed)
        people = [self.user(f"p{seed}-{i}", consent=rng.random() < consent_rate) for i in range(users)]
        gens: list[Generation] = []
        for _ in range(exchanges):
            self._counter += 1
            n = self._counter
            who = rng.choice(people)
            kind = rng.random()
            question = f"question {n} about {rng.choice(['pacing', 'shoes', 'food', 'sleep', 'hills'])} {n * 7}"
            answer = f"answer {n}: {rng.choice(['run easy', 'eat carbs', 'rest more', 'go slower'])} {n * 13}"
            status, finish = rng.choice([("ok", "stop")] * 6 + [("error", None), ("cut_off", "length")])
            if kind < 0.15:
                a, b = self.arena(who, question, answer, answer + " (second take)",
                                  pick=rng.choice(["a", "b", "tie", "both_bad", None]))
                gens += [a, b]
                continue
            g = self.exchange(who, question, answer, status=status, finish_reason=finish,
                              new_conversation=rng.random() < 0.2)
            gens.append(g)
            if rng.random() < 0.25:
                r = self.retry(g, answer + " (retried)", status="ok", finish_reason="stop")
                gens.append(r)
            for voter in rng.sample(people, k=rng.randint(0, min(3, len(people)))):
                target = rng.choice(gens[-2:])
                self.vote(target, voter, rng.choice([1, 1, -1]))
        return {"users": people, "generations": gens}
