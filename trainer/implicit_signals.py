"""Implicit feedback as KTO rows, and how many rows each feedback signal gave a build (the manifest's `signals`).

Most replies get no vote. Two things people do anyway say something about a reply nobody voted on:
  - 🔄 replaced it: the user wanted another answer -> an undesirable KTO row (`retried_unvoted`);
  - the user wrote again in the same conversation after it -> a desirable KTO row (`follow_up`), a weaker signal
    (people also keep talking after a poor answer), kept for `follow_up_weight` of such replies.
Implicit rows train only: in a held-out conversation they are skipped, so the gate's held-out votes stay votes.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.engine import Engine

from loopbot.storage.crud.signals import unvoted_implicit_replies
from loopbot.trainer.splits import conversation_key, heldout_score, is_heldout

# manifest key -> the builder's row sources that count for it ("vote_pairs" etc. are DPO rows, the rest KTO rows)
PAIR_SIGNALS = {"vote_pairs": ("opposite_votes",), "retry_pairs": ("retry_vote", "retry_kept"),
                "arena_pairs": ("arena",), "reward_pairs": ("reward_model",)}
KTO_SIGNALS = {"votes": ("feedback", "feedback_cut_off"), "retried_unvoted": ("retried_unvoted",),
               "follow_up": ("follow_up",), "reward_labels": ("reward_label",)}


def keep_follow_up(generation_id: int, weight: float) -> bool:
    """Whether this reply's follow-up row is kept: a stable draw per reply, true for about `weight` of them."""
    return heldout_score(f"follow_up:{generation_id}") < weight


def add_implicit_rows(engine: Engine, persona: str, snap, signals, sink, excluded: set[tuple[int, str]], *,
                      fraction: float, unusable: Callable[[str, str | None, str | None], str | None]) -> None:
    """Write a KTO row for every unvoted reply that was retried (undesirable) or followed up (desirable), as the
    `signals` settings allow. `unusable(status, finish_reason, text)` says why a reply can never be trained on."""
    if not (signals.retried_unvoted or signals.follow_up):
        return
    rows = unvoted_implicit_replies(engine, persona, generation_id_min=snap.generation_id_min,
                                    generation_id_max=snap.generation_id_max or None,
                                    feedback_id_max=snap.feedback_id_max)
    for gid, prompt, status, finish, chat_id, text, conv, retried, followed in rows:
        kind = "retried_unvoted" if retried else "follow_up"
        if not (signals.retried_unvoted if retried else signals.follow_up):
            continue
        if (chat_id, conv) in excluded:
            sink.drop(f"{kind}_not_consented")
            continue
        reason = unusable(status, finish, text)
        if reason and not (retried and reason == "cut_off" and (text or "").strip()):
            sink.drop(f"{kind}_{reason}")  # a cut-off reply the user replaced is still one they did not want
            continue
        if is_heldout(conversation_key(chat_id=chat_id, conversation_id=conv), fraction):
            sink.note(f"{kind}_heldout_skipped")
            continue
        if followed and not keep_follow_up(gid, signals.follow_up_weight):
            sink.note("follow_up_not_sampled")
            continue
        sink.add_kto(prompt, [{"role": "assistant", "content": text}], not retried, False, kind)


def signal_counts(sink) -> dict[str, int]:
    """Rows (training and held-out) each feedback signal gave: DPO pairs from opposite votes on one message, from
    🔄 retries and from arena picks; KTO rows from votes, of which `votes_unpaired` are replies in no pair (what
    DPO alone would not see); KTO rows from unvoted retried and followed-up replies."""
    def total(kind: str, sources: tuple[str, ...]) -> int:
        return sum(sink.sources.get(name, {}).get(src, 0) for name in (kind, f"heldout_{kind}") for src in sources)

    out = {key: total("dpo", sources) for key, sources in PAIR_SIGNALS.items()}
    out.update({key: total("kto", sources) for key, sources in KTO_SIGNALS.items()})
    out["votes_unpaired"] = len(sink.voted_rows - sink.paired)
    return out
