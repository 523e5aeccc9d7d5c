"""Implicit feedback as KTO rows, and how many rows each feedback signal gave a build (the manifest's `signals`).

Most replies get no vote. What people do anyway says something about a reply nobody voted on:
  - 🔄 replaced it: the user wanted another answer -> an undesirable KTO row (`retried_unvoted`);
  - the user wrote again in the same conversation after it -> a desirable KTO row (`follow_up`), a weaker signal
    (people also keep talking after a poor answer), kept for `follow_up_weight` of such replies;
  - the user wrote nothing more in that conversation (it ended after this reply) -> an undesirable KTO row
    (`ended`), weaker still (people also leave after a good answer), kept for `ended_weight` of such replies.
    Whether a user goes on talking is the engagement signal the origin role-play project (Chai) trained on.
In a held-out conversation these rows go to the held-out split with their signal as the source: the gate reads them
apart from the held-out votes (`trainer.evaluate`: the held-out signals check), never as votes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine

from loopbot.storage.crud.signals import unvoted_implicit_replies
from loopbot.trainer.cleaning import finished_part
from loopbot.trainer.splits import conversation_key, heldout_score, is_heldout

# manifest key -> the builder's row sources that count for it ("vote_pairs" etc. are DPO rows, the rest KTO rows)
PAIR_SIGNALS = {"vote_pairs": ("opposite_votes",), "retry_pairs": ("retry_vote", "retry_kept"),
                "arena_pairs": ("arena",), "reward_pairs": ("reward_model",)}
KTO_SIGNALS = {"votes": ("feedback", "feedback_cut_off"), "retried_unvoted": ("retried_unvoted",),
               "follow_up": ("follow_up",), "ended": ("ended",), "reward_labels": ("reward_label",)}
IMPLICIT_SOURCES = ("retried_unvoted", "follow_up", "ended")  # held-out KTO rows that are signals, not votes


def implicit_replies(engine: Engine, persona: str, signals, *, generation_id_min: int = 0,
                     generation_id_max: int | None = None, feedback_id_max: int | None = None,
                     with_ended: bool = True, now: datetime | None = None) -> Iterator[tuple[str, tuple]]:
    """(kind, row) for every unvoted reply an enabled signal speaks about; `row` as `unvoted_implicit_replies`."""
    if not (signals.retried_unvoted or signals.follow_up or (with_ended and signals.ended)):
        return
    ended_before = (now or datetime.now(UTC)) - timedelta(seconds=signals.ended_after_s) \
        if with_ended and signals.ended else None
    for row in unvoted_implicit_replies(engine, persona, generation_id_min=generation_id_min,
                                        generation_id_max=generation_id_max, feedback_id_max=feedback_id_max,
                                        ended_before=ended_before):
        retried, followed = row[7], row[8]
        kind = "retried_unvoted" if retried else "follow_up" if followed else "ended"
        if getattr(signals, kind):
            yield kind, row


def usable_text(kind: str, status: str, finish: str | None, text: str | None, *, trim: bool,
                unusable: Callable[[str, str | None, str | None], str | None]) -> tuple[str | None, str | None]:
    """(the reply's text as a row of its signal, None) or (None, why it cannot be one). A reply cut off at the token
    limit trains as its complete sentences (`trim`, as `trim_cut_off_liked` does for liked votes), whichever its
    signal: liked and disliked rows then have the same shape, so the trainer cannot learn "short = liked" from the
    trimming itself (a first cut of this kept disliked cut-off replies whole, and its candidate learned to stop at
    35 words instead of the taste). Without `trim` (or with no complete sentence) a retried or ended cut-off reply
    stands as it is, and a followed-up one is dropped. Errored and empty replies never count."""
    reason = unusable(status, finish, text)
    if reason != "cut_off" or not (text or "").strip():
        return (text, None) if reason is None else (None, reason)
    head = finished_part(text) if trim else None
    if head:
        return head, None
    return (None, reason) if kind == "follow_up" else (text, None)


def sampled(kind: str, generation_id: int, signals) -> bool:
    """Whether a weak signal's row is kept for training: a stable draw per reply, true for about the signal's
    weight of them (`follow_up_weight`, `ended_weight`); 🔄 rows are always kept."""
    weight = {"follow_up": signals.follow_up_weight, "ended": signals.ended_weight}.get(kind)
    return weight is None or heldout_score(f"{kind}:{generation_id}") < weight


def add_implicit_rows(engine: Engine, persona: str, snap, signals, sink, excluded: set[tuple[int, str]], *,
                      fraction: float, unusable: Callable[[str, str | None, str | None], str | None],
                      whole_history: bool = False) -> None:
    """Write a KTO row for every unvoted reply that was retried or ended its conversation (undesirable) or was
    followed up (desirable), as the `signals` settings allow; rows of held-out conversations go to the held-out
    split, every one of them (the sampling only weakens what trains). `whole_history`: every round's held-out
    conversations, for a continuing build (the sink writes only its held-out split then)."""
    rows = implicit_replies(engine, persona, signals,
                            generation_id_min=0 if whole_history else snap.generation_id_min,
                            generation_id_max=snap.generation_id_max or None, feedback_id_max=snap.feedback_id_max)
    for kind, (gid, prompt, status, finish, chat_id, text, conv, _retried, _followed) in rows:
        if (chat_id, conv) in excluded:
            sink.drop(f"{kind}_not_consented")
            continue
        usable, reason = usable_text(kind, status, finish, text, trim=sink.cfg.trim_cut_off_liked, unusable=unusable)
        if reason:
            sink.drop(f"{kind}_{reason}")
            continue
        if usable != text:
            sink.note(f"{kind}_cut_off_trimmed")
        heldout = is_heldout(conversation_key(chat_id=chat_id, conversation_id=conv), fraction)
        if not heldout and not sampled(kind, gid, signals):
            sink.note(f"{kind}_not_sampled")
            continue
        sink.add_kto(prompt, [{"role": "assistant", "content": usable}], kind == "follow_up", heldout, kind)


def signal_counts(sink) -> dict[str, int]:
    """Rows (training and held-out) each feedback signal gave: DPO pairs from opposite votes on one message, from
    🔄 retries and from arena picks; KTO rows from votes, of which `votes_unpaired` are replies in no pair (what
    DPO alone would not see); KTO rows from unvoted retried, followed-up and ended replies."""
    def total(kind: str, sources: tuple[str, ...]) -> int:
        return sum(sink.sources.get(name, {}).get(src, 0) for name in (kind, f"heldout_{kind}") for src in sources)

    out = {key: total("dpo", sources) for key, sources in PAIR_SIGNALS.items()}
    out.update({key: total("kto", sources) for key, sources in KTO_SIGNALS.items()})
    out["votes_unpaired"] = len(sink.voted_rows - sink.paired)
    return out
