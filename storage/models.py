"""SQLModel tables: everything loopbot stores, and nothing it computes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, Column, Index, UniqueConstraint, event, text
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


def _json(**kw: Any) -> Any:
    return Field(default_factory=dict, sa_column=Column(JSON, nullable=False), **kw)


class User(SQLModel, table=True):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("platform", "platform_user_id"),)

    id: int | None = Field(default=None, primary_key=True)
    platform: str = Field(max_length=32)
    platform_user_id: str = Field(max_length=128)
    display_name: str = Field(default="", max_length=256)
    consent: bool = Field(default=True, description="may this user's data be used for training")
    arena_consent: bool = Field(default=False, description="may this user's chat messages appear in the public "
                                                           "web arena (/arena on); separate from `consent`")
    is_admin: bool = False
    created_at: datetime = Field(default_factory=utcnow)


class Chat(SQLModel, table=True):
    __tablename__ = "chats"
    __table_args__ = (UniqueConstraint("platform", "bot", "platform_chat_id", name="uq_chats_platform_bot_chat"),)

    id: int | None = Field(default=None, primary_key=True)
    platform: str = Field(max_length=32)
    bot: str = Field(default="", max_length=64, sa_column_kwargs={"server_default": ""},
                     description="the bot of the platform this chat is with ([[telegram.bots]] name; \"\" = the "
                                 "one-bot form): a group with two bots holds two chats")
    platform_chat_id: str = Field(max_length=128)
    type: str = Field(default="private", max_length=16, description="private | group")
    persona: str | None = Field(default=None, max_length=64)
    conversation_id: str = Field(default="", max_length=64, description="current conversation; /new starts another")
    created_at: datetime = Field(default_factory=utcnow)


ARENA_PROMPT_KEY = "substr(ltrim(rtrim(text)), 1, 64)"  # the arena finds replies to the same prompt text by this prefix


class Message(SQLModel, table=True):
    __tablename__ = "messages"
    __table_args__ = (
        # user messages by the first 64 characters of their trimmed text: the arena's partner lookup
        Index("ix_messages_arena_prompt", text(ARENA_PROMPT_KEY), "id", sqlite_where=text("role = 'user'"),
              postgresql_where=text("role = 'user'")),
    )

    id: int | None = Field(default=None, primary_key=True)
    chat_id: int = Field(foreign_key="chats.id", index=True)
    user_id: int | None = Field(default=None, foreign_key="users.id", index=True)
    role: str = Field(max_length=16, description="user | assistant")
    text: str
    persona: str | None = Field(default=None, max_length=64)
    conversation_id: str = Field(default="", max_length=64, index=True)
    platform_message_id: str | None = Field(default=None, max_length=64, index=True)
    reply_to_id: int | None = Field(default=None, foreign_key="messages.id")
    created_at: datetime = Field(default_factory=utcnow, index=True)


class Generation(SQLModel, table=True):
    """One model answer: the assistant message plus how it was produced."""

    __tablename__ = "generations"
    __table_args__ = (
        # (persona, id): a persona's replies in id order, for the arena's sampled window; (prompt_message_id, id):
        # the replies to one message in id order, for the arena's partner lookup
        Index("ix_generations_persona_id", "persona", "id"),
        Index("ix_generations_prompt_message_id_id", "prompt_message_id", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    message_id: int = Field(foreign_key="messages.id", unique=True)
    prompt_message_id: int | None = Field(default=None, foreign_key="messages.id")
    chat_id: int = Field(foreign_key="chats.id", index=True)
    persona: str = Field(max_length=64)
    adapter_version: str | None = Field(default=None, max_length=128, description="served name, None = base")
    backend: str = Field(default="", max_length=32)
    sampling: dict = _json()
    prompt: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    status: str = Field(default="pending", max_length=16, description="pending | ok | cut_off | error")
    finish_reason: str | None = Field(default=None, max_length=32)
    error: str | None = None
    latency_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    retry_of_id: int | None = Field(default=None, foreign_key="generations.id", index=True)
    in_history: bool = Field(default=True, description="False for the arena candidate that was not picked")
    created_at: datetime = Field(default_factory=utcnow, index=True)
    finished_at: datetime | None = None


class Feedback(SQLModel, table=True):
    """A 👍/👎 vote: one row per user per generation; a changed vote updates it."""

    __tablename__ = "feedback"
    __table_args__ = (UniqueConstraint("generation_id", "user_id"),)

    id: int | None = Field(default=None, primary_key=True)
    generation_id: int = Field(foreign_key="generations.id", index=True)
    user_id: int = Field(foreign_key="users.id", index=True)
    value: int = Field(description="+1 or -1")
    source: str = Field(default="button", max_length=16, description="button | reaction | web | import")
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow, index=True)


PAIR_ORDER_CHECK = ("pair_low = CASE WHEN generation_a_id < generation_b_id THEN generation_a_id "
                    "ELSE generation_b_id END AND pair_high = CASE WHEN generation_a_id < generation_b_id "
                    "THEN generation_b_id ELSE generation_a_id END")


class Comparison(SQLModel, table=True):
    """Two generations shown side by side and the pick between them."""

    __tablename__ = "comparisons"
    __table_args__ = (
        UniqueConstraint("generation_a_id", "generation_b_id", "user_id"),
        # one pick per web visitor per pair in either order; pair_low / pair_high are the pair's ids in order
        UniqueConstraint("visitor_id", "pair_low", "pair_high", name="uq_comparisons_visitor_pair"),
        CheckConstraint(PAIR_ORDER_CHECK, name="ck_comparisons_pair_order"),
    )

    id: int | None = Field(default=None, primary_key=True)
    persona: str = Field(max_length=64, index=True)
    generation_a_id: int = Field(foreign_key="generations.id", index=True)
    generation_b_id: int = Field(foreign_key="generations.id", index=True)
    user_id: int | None = Field(default=None, foreign_key="users.id")
    visitor_id: str | None = Field(default=None, max_length=64, description="anonymous web visitor")
    pick: str | None = Field(default=None, max_length=16, description="a | b | tie | both_bad; None = not yet picked")
    source: str = Field(default="chat", max_length=16, description="chat | web")
    created_at: datetime = Field(default_factory=utcnow)
    picked_at: datetime | None = None
    pair_low: int | None = Field(default=None, nullable=False, description="min(generation_a_id, generation_b_id)")
    pair_high: int | None = Field(default=None, nullable=False, description="max(generation_a_id, generation_b_id)")


@event.listens_for(Comparison, "before_insert")
def _unordered_pair(_mapper, _connection, row: Comparison) -> None:
    """Fill the pair columns from the two generations (the database checks they agree)."""
    row.pair_low = min(row.generation_a_id, row.generation_b_id)
    row.pair_high = max(row.generation_a_id, row.generation_b_id)


class Adapter(SQLModel, table=True):
    """One trained LoRA version of a persona."""

    __tablename__ = "adapters"
    __table_args__ = (
        UniqueConstraint("persona", "version"),
        Index("one_active_adapter_per_persona", "persona", unique=True,
              sqlite_where=text("status = 'active'"), postgresql_where=text("status = 'active'")),
    )

    id: int | None = Field(default=None, primary_key=True)
    persona: str = Field(max_length=64, index=True)
    version: int
    name: str = Field(max_length=128, unique=True, description="served name, e.g. coach-v8")
    base_model: str = Field(max_length=512)
    path: str = Field(default="", max_length=1024, description="adapter directory; empty for a hosted model")
    remote_model_id: str | None = Field(default=None, max_length=256, description="e.g. a Mistral ft: id")
    artifact_uri: str | None = Field(default=None, max_length=1024, description="where the artifact store holds it "
                                     "(docs/artifacts.md); None = only `path` (versions from before the store)")
    artifact_sha256: str | None = Field(default=None, max_length=64, description="the artifact's content hash")
    parent_version: int | None = None
    status: str = Field(default="candidate", max_length=16,
                        description="candidate | active | retired | failed | rolled_back")
    status_reason: str | None = None
    metrics: dict = _json()
    dataset_manifest: dict = _json()
    training_run_id: int | None = Field(default=None, foreign_key="training_runs.id")
    created_at: datetime = Field(default_factory=utcnow)
    promoted_at: datetime | None = None


class TrainingRun(SQLModel, table=True):
    __tablename__ = "training_runs"

    id: int | None = Field(default=None, primary_key=True)
    persona: str = Field(max_length=64, index=True)
    status: str = Field(default="running", max_length=16,
                        description="running | succeeded | promoted | rejected | skipped | failed")
    trigger: str = Field(default="manual", max_length=16, description="manual | cron | votes | demo")
    method: str = Field(default="", max_length=32)
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
    heartbeat_at: datetime | None = None
    candidate_version: int | None = None
    dataset_sizes: dict = _json()
    metrics: dict = _json()
    steps: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    error: str | None = None


class SeedExample(SQLModel, table=True):
    """An imported training example (WhatsApp, jokes, Q&A, preference files), with its source."""

    __tablename__ = "seed_examples"
    __table_args__ = (UniqueConstraint("persona", "kind", "content_hash"),)

    id: int | None = Field(default=None, primary_key=True)
    persona: str = Field(max_length=64, index=True)
    kind: str = Field(max_length=8, description="sft | dpo | kto")
    split: str = Field(default="train", max_length=16, description="train | validation")
    source: str = Field(max_length=512, description="importer:file name")
    data: dict = _json()
    content_hash: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow)


class RunLock(SQLModel, table=True):
    """A database lock: at most one training cycle per persona across every loopbot process."""

    __tablename__ = "run_locks"

    persona: str = Field(primary_key=True, max_length=64)
    holder: str = Field(max_length=128)
    acquired_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime


class Event(SQLModel, table=True):
    """An audit line: consent changes, forgets, swaps, rollbacks."""

    __tablename__ = "events"

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=32, index=True)
    persona: str | None = Field(default=None, max_length=64)
    data: dict = _json()
    created_at: datetime = Field(default_factory=utcnow, index=True)


class AdminSession(SQLModel, table=True):
    """A logged-in admin dashboard session; the cookie carries its id, and logging out deletes the row, so a copy of
    the cookie is refused afterwards by every process."""

    __tablename__ = "admin_sessions"

    id: str = Field(primary_key=True, max_length=64, description="sha256 of the session id in the cookie")
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime = Field(index=True)


class AdminNonce(SQLModel, table=True):
    """A one-time confirmation of one admin action (e.g. promote coach v3), consumed when the action is posted."""

    __tablename__ = "admin_nonces"

    id: str = Field(primary_key=True, max_length=64, description="sha256 of the nonce in the confirmation form")
    action: str = Field(max_length=256, description="what it confirms: session, persona, action, version")
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime = Field(index=True)
    used_at: datetime | None = None
