"""What the web arena and the leaderboard read: replies to compare, the pairs a visitor judged, and the picks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

from sqlalchemy import Float, Integer, String, bindparam, case, cast, exists, func, literal_column, select, union_all
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import aliased

from loopbot.storage.crud.arena_consent import shown_on_arena
from loopbot.storage.crud.feedback import create_comparison, record_pick
from loopbot.storage.db import DB, session_scope, transaction
from loopbot.storage.models import Comparison, Generation, Message, User

__all__ = ["ArenaReply", "arena_pair", "arena_replies", "pick_versions", "picks_stamp",
           "record_web_pick", "voted_pairs"]

ARENA_WINDOW = 2000  # arena_replies: the persona's newest finished replies, at most this many
ARENA_STATUSES = ("ok", "cut_off")  # finished replies
_MESSAGES = Message.__table__


@dataclass(frozen=True)
class ArenaReply:
    """A reply the arena may show: its version key ("" = base), its text, and its prompt (trimmed) and message."""

    generation_id: int
    version: str
    text: str
    prompt: str
    prompt_message_id: int


def _prompt_key(value):
    """The arena index's expression (models.ARENA_PROMPT_KEY) on a column or a value, its constants written inline so
    that SQLite and PostgreSQL (generic plans included) match it to the index."""
    return func.substr(func.ltrim(func.rtrim(value)), literal_column("1"), literal_column("64"))


def _shown(gen, reply, asked, user, *, platform: bool, persona_indexed: bool = True) -> list:
    """The conditions on one reply row (Core columns of the generation, its message, its prompt message and the
    prompt's author, joined by the caller) for the arena: the persona's finished, non-empty reply to a non-empty
    user message by a consenting user (and only by users of the `platform` parameter if `platform`).
    `persona_indexed=False` writes the persona test so that no index can serve it: where the replies are reached
    from their prompt (the partner lookups), a planner without statistics (SQLite; loopbot never runs ANALYZE) would
    otherwise walk all the persona's replies through (persona, id)."""
    persona = bindparam("persona", type_=String)
    conds = [gen.persona == persona if persona_indexed else func.coalesce(gen.persona, "") == persona,
             gen.status.in_(ARENA_STATUSES), reply.text != "", asked.role == literal_column("'user'"),
             func.trim(asked.text) != "", user.consent.is_(True), shown_on_arena(user)]
    if platform:
        conds.append(user.platform == bindparam("platform", type_=String))
    return conds


def _replies(persona: str, platform: str | None):
    """(generation id, version key, reply text, prompt text) of the persona's replies the arena may show."""
    g, reply, asked, user = Generation.__table__, _MESSAGES.alias("reply"), _MESSAGES.alias("asked"), User.__table__
    return (select(g.c.id.label("gid"), func.coalesce(g.c.adapter_version, "").label("version"),
                   reply.c.text.label("reply"), func.trim(asked.c.text).label("prompt"))
            .select_from(g.join(reply, reply.c.id == g.c.message_id).join(asked, asked.c.id == g.c.prompt_message_id)
                         .join(user, user.c.id == asked.c.user_id))
            .where(*_shown(g.c, reply.c, asked.c, user.c, platform=platform is not None))
            .params(persona=persona, **({"platform": platform} if platform is not None else {})))


def arena_replies(db: DB, *, persona: str, limit: int = ARENA_WINDOW,
                  platform: str | None = None) -> list[tuple[int, str | None, str, str]]:
    """(generation id, adapter version, reply, prompt) of the persona's newest finished, non-empty replies to
    prompts by consenting users; `platform` keeps only prompts by users of that platform."""
    q = _replies(persona, platform)
    q = q.order_by(q.selected_columns.gid.desc()).limit(limit)
    with transaction(db) as s:
        return [(gid, version or None, reply, prompt) for gid, version, reply, prompt in s.execute(q).all()]


def _unjudged(x, y):
    """The visitor (parameter `visitor_id`) has no pick on the pair of generation ids x, y (in either order): a
    lookup in the unique key (visitor_id, pair_low, pair_high)."""
    c = Comparison.__table__.c
    low, high = case((x < y, x), else_=y), case((x < y, y), else_=x)
    return ~exists().where(c.visitor_id == bindparam("visitor_id", type_=String), c.pair_low == low,
                           c.pair_high == high).correlate_except(Comparison.__table__)


def _partner_rows(*, platform: bool, gen_id, version, prompt):
    """(select of generation id, version key, reply text; the generation and prompt message aliases) for replies to
    the same prompt text as the reply `gen_id` (version key `version`, trimmed prompt `prompt`: columns or
    parameters) by another version, shown on the arena and not judged by the visitor. The prompt's messages are
    found through the index on user messages' text, their replies through (prompt_message_id, id)."""
    g2, reply2, asked2 = Generation.__table__.alias("g2"), _MESSAGES.alias("reply2"), _MESSAGES.alias("asked2")
    user2 = User.__table__.alias("user2")
    version2 = func.coalesce(g2.c.adapter_version, "")
    q = (select(g2.c.id.label("gid"), version2.label("version"), reply2.c.text.label("reply"))
         .select_from(asked2.join(g2, g2.c.prompt_message_id == asked2.c.id)
                      .join(reply2, reply2.c.id == g2.c.message_id).join(user2, user2.c.id == asked2.c.user_id))
         .where(_prompt_key(asked2.c.text) == _prompt_key(prompt), func.trim(asked2.c.text) == prompt,
                version2 != version, _unjudged(gen_id, g2.c.id),
                *_shown(g2.c, reply2.c, asked2.c, user2.c, platform=platform, persona_indexed=False)))
    return q, g2, asked2


@cache
def _anchors_statement(*, newest: bool, platform: bool, batch: int):
    g = Generation.__table__
    persona = bindparam("persona", type_=String)
    batch = literal_column(str(int(batch)))  # inline: PostgreSQL's generic plan then knows the window is small
    if newest:
        ids = select(g.c.id.label("id")).where(g.c.persona == persona).order_by(g.c.id.desc()).limit(batch).subquery()
    else:
        lo = select(func.min(g.c.id)).where(g.c.persona == persona).scalar_subquery()
        hi = select(func.max(g.c.id)).where(g.c.persona == persona).scalar_subquery()
        pivot = lo + cast(bindparam("at", type_=Float) * (hi - lo + 1), Integer)
        parts = [select(g.c.id.label("id"), literal_column(str(n)).label("part"))
                 .where(g.c.persona == persona, g.c.id >= pivot if n == 0 else g.c.id < pivot)
                 .order_by(g.c.id).limit(batch).subquery() for n in (0, 1)]
        both = union_all(*(select(p.c.id, p.c.part) for p in parts)).subquery()
        ids = select(both.c.id).order_by(both.c.part, both.c.id).limit(batch).subquery()
    gen, reply, asked, user = g.alias("gen"), _MESSAGES.alias("reply"), _MESSAGES.alias("asked"), User.__table__
    version, prompt = func.coalesce(gen.c.adapter_version, ""), func.trim(asked.c.text)
    partner, _, _ = _partner_rows(platform=platform, gen_id=gen.c.id, version=version, prompt=prompt)
    return (select(gen.c.id, version, reply.c.text, prompt, asked.c.id)
            .select_from(ids.join(gen, gen.c.id == ids.c.id).join(reply, reply.c.id == gen.c.message_id)
                         .join(asked, asked.c.id == gen.c.prompt_message_id)
                         .join(user, user.c.id == asked.c.user_id))
            .where(*_shown(gen.c, reply.c, asked.c, user.c, platform=platform), partner.exists()))


@cache
def _partners_statement(*, platform: bool):
    gid, msg, limit = (bindparam(name, type_=Integer) for name in ("anchor_id", "anchor_msg", "limit"))
    q, g2, asked2 = _partner_rows(platform=platform, gen_id=gid, version=bindparam("anchor_version", type_=String),
                                  prompt=bindparam("anchor_prompt", type_=String))
    parts = [q.where(asked2.c.id == msg, g2.c.id > gid).order_by(g2.c.id).limit(limit),
             q.where(asked2.c.id == msg, g2.c.id < gid).order_by(g2.c.id.desc()).limit(limit),
             q.where(asked2.c.id > msg).limit(limit), q.where(asked2.c.id < msg).limit(limit)]
    subs = [p.subquery() for p in parts]
    return union_all(*(select(sub.c.gid, sub.c.version, sub.c.reply) for sub in subs))


def arena_pair(engine: Engine, *, persona: str, visitor_id: str, windows: list[tuple[float, int, bool]],
               pick: Callable[[list[ArenaReply]], ArenaReply], partners: int = 4,
               platform: str | None = None) -> tuple[ArenaReply, list[ArenaReply]] | None:
    """A reply the arena may show and replies of other versions to its prompt text that this visitor has not
    judged, or None when none of the windows holds such a reply.

    Each window `(at, size, newest)` is `size` consecutive replies of the persona, by id, from the fraction `at` of
    its id range (wrapping around to its first ones), or its newest `size` if `newest`. The first window with
    replies that have such a partner gives them to `pick`; then up to `partners` each of the next and the
    previous partners to the picked reply's own message (by id), and of other messages with the same text after
    and before it, are read. Two statements per window tried, in one transaction (on PostgreSQL, one more that
    asks for generic plans: the statements are built once with the window's size inline, psycopg prepares them
    after a few runs, and PostgreSQL then plans them once per connection instead of at every run).
    Their work is bounded by the window's size and `partners`: the window is read from the index on (persona,
    id); each reply's partner check, and the partners, come through the index on user messages' text and
    (prompt_message_id, id). Only replies of the picked reply's own version to the same message are skipped over
    unread-for-nothing, so a message with thousands of replies by one version and a handful by others costs more."""
    base = {"persona": persona, "visitor_id": visitor_id, **({"platform": platform} if platform is not None else {})}
    # committed, not rolled back: psycopg forgets its prepared statements at every rollback
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":  # planning these joins costs more than running them
            conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
        for at, size, newest in windows:
            anchors = [ArenaReply(*row) for row in conn.execute(
                _anchors_statement(newest=newest, platform=platform is not None, batch=size),
                {**base, "at": float(at)}).all()]
            if not anchors:
                continue
            anchor = pick(anchors)
            rows = conn.execute(_partners_statement(platform=platform is not None), {
                **base, "anchor_id": anchor.generation_id, "anchor_version": anchor.version,
                "anchor_prompt": anchor.prompt, "anchor_msg": anchor.prompt_message_id, "limit": partners}).all()
            if rows:  # else judged in another tab meanwhile
                return anchor, [ArenaReply(gid, version, text, anchor.prompt, anchor.prompt_message_id)
                                for gid, version, text in rows]
    return None


def voted_pairs(db: DB, *, visitor_id: str, among: list[int] | None = None) -> set[tuple[int, int]]:
    """The (smaller, larger) generation id pairs this web visitor has judged, in either order (only pairs of two
    of `among` if given)."""
    q = select(Comparison.pair_low, Comparison.pair_high).where(Comparison.visitor_id == visitor_id)
    if among is not None:
        q = q.where(Comparison.pair_low.in_(among), Comparison.pair_high.in_(among))
    with transaction(db) as s:
        return {(a, b) for a, b in s.execute(q).all()}


def record_web_pick(engine: Engine, *, persona: str, generation_a_id: int, generation_b_id: int, visitor_id: str,
                    pick: str) -> int | None:
    """A web visitor's pick on a pair, stored in the order shown: the comparison and its pick in one transaction.
    Returns its id, or None when the visitor has a pick on this pair already (the database's unique key)."""
    try:
        with session_scope(engine) as s:
            row = create_comparison(s, persona=persona, generation_a_id=generation_a_id,
                                    generation_b_id=generation_b_id, visitor_id=visitor_id, source="web")
            record_pick(s, comparison_id=row.id, pick=pick)
            return row.id
    except IntegrityError:
        return None


def pick_versions(db: DB, *, persona: str) -> list[tuple[str | None, str | None, str]]:
    """Every picked comparison (chat and web) as (adapter version of A, of B, pick), oldest pick first."""
    ga, gb = aliased(Generation), aliased(Generation)
    with transaction(db) as s:
        return [tuple(r) for r in s.execute(select(ga.adapter_version, gb.adapter_version, Comparison.pick)
                                            .join(ga, ga.id == Comparison.generation_a_id)
                                            .join(gb, gb.id == Comparison.generation_b_id)
                                            .where(Comparison.persona == persona, Comparison.pick.is_not(None))
                                            .order_by(Comparison.picked_at, Comparison.id)).all()]


def picks_stamp(db: DB, *, persona: str) -> tuple:
    """Changes whenever a pick is added, changed or deleted (count, newest id, newest pick time)."""
    with transaction(db) as s:
        return tuple(s.execute(select(func.count(), func.max(Comparison.id), func.max(Comparison.picked_at))
                               .where(Comparison.persona == persona, Comparison.pick.is_not(None))).one())
