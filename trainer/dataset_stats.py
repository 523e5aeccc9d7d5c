"""What the data looks like: counts per source, 👍 rate over time, new votes and new feedback events (votes plus
the implicit signals that train) since the last run or build: what triggers a cycle."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy.engine import Engine

from loopbot.storage import crud
from loopbot.trainer.datasets import BUILD_EVENT, build_datasets, unusable_reason
from loopbot.trainer.implicit_signals import implicit_replies, sampled, usable_text
from loopbot.trainer.splits import conversation_key, is_heldout

TRAINED_RUN_STATUSES = ("succeeded", "promoted", "rejected")


def last_build(engine: Engine, persona: str) -> dict | None:
    """The newest recorded dataset build of the persona: {build_id, path, counts, feedback_id_max, ...}."""
    event = crud.latest_event(engine, kind=BUILD_EVENT, persona=persona)
    return {**event.data, "created_at": event.created_at.isoformat()} if event else None


def last_trained_feedback_id(engine: Engine, persona: str) -> int:
    """The highest feedback id a finished training run of the persona used (0 if none).

    Read from `Adapter.dataset_manifest["feedback_id_max"]` and `TrainingRun.dataset_sizes["feedback_id_max"]`
    of runs that trained (succeeded, promoted or rejected by the gate); skipped and failed runs do not count."""
    return crud.highest_trained_feedback_id(engine, persona=persona, run_statuses=TRAINED_RUN_STATUSES)


def new_votes_since_last_run(engine: Engine, persona: str) -> int:
    """Consented votes on the persona's replies that no finished training run has used yet."""
    return crud.consented_vote_count(engine, persona=persona,
                                     after_feedback_id=last_trained_feedback_id(engine, persona))


def last_trained_generation_id(engine: Engine, persona: str) -> int:
    """The highest generation id a finished training run's dataset build covered (0 if none): replies after it are
    new to training (`generation_id_max` of the adapters' manifests and of the runs' dataset sizes)."""
    return crud.highest_trained_id(engine, persona=persona, run_statuses=TRAINED_RUN_STATUSES,
                                   key="generation_id_max")


def new_implicit_signals(engine: Engine, persona: str, signals, *, after_generation_id: int = 0,
                         heldout_fraction: float = 0.0, trim_cut_off: bool = True) -> dict[str, int]:
    """{retried_unvoted, follow_up}: unvoted replies newer than `after_generation_id` that a dataset build would
    now turn into training rows (trainer.implicit_signals, with the same switches, consent, usability, held-out
    and follow-up sampling rules)."""
    out = {"retried_unvoted": 0, "follow_up": 0}
    excluded = None
    # ended conversations are not counted: every reply ends or goes on, so they would trigger cycles on traffic alone
    for kind, (gid, _prompt, status, finish, chat_id, text, conv, _r, _f) in \
            implicit_replies(engine, persona, signals, generation_id_min=after_generation_id, with_ended=False):
        if excluded is None:
            excluded = crud.unconsented_conversations(engine)
        if (chat_id, conv) in excluded or usable_text(kind, status, finish, text, trim=trim_cut_off,
                                                      unusable=unusable_reason)[1]:
            continue
        if is_heldout(conversation_key(chat_id=chat_id, conversation_id=conv), heldout_fraction):
            continue
        if not sampled(kind, gid, signals):
            continue
        out[kind] += 1
    return out


def new_feedback_since_last_run(engine: Engine, persona: str, settings) -> dict:
    """What triggers a cycle: {votes, retried_unvoted, follow_up, weight, total} since the last trained run.
    `total` = votes + `trainer.implicit_trigger_weight` x (retried unvoted + followed-up replies a build would
    train on); it is compared with `trainer.min_new_votes` and `schedule.votes_trigger`. Weight 0 = votes only
    (and the implicit replies are not even counted)."""
    votes = new_votes_since_last_run(engine, persona)
    weight = settings.trainer.implicit_trigger_weight
    implicit = {"retried_unvoted": 0, "follow_up": 0}
    if weight > 0:
        implicit = new_implicit_signals(engine, persona, settings.trainer.signals,
                                        after_generation_id=last_trained_generation_id(engine, persona),
                                        heldout_fraction=settings.trainer.dataset.heldout_fraction,
                                        trim_cut_off=settings.trainer.dataset.trim_cut_off_liked)
    total = votes + weight * (implicit["retried_unvoted"] + implicit["follow_up"])
    return {"votes": votes, **implicit, "weight": weight, "total": round(total, 3)}


def describe_new_feedback(new: dict) -> str:
    """"12 new feedback events (5 votes, 4 retried unvoted replies, 3 follow-ups)"."""
    total = new["total"]
    shown = f"{total:g}"
    parts = [f"{new['votes']} votes"]
    if new.get("weight"):
        parts += [f"{new['retried_unvoted']} retried unvoted replies", f"{new['follow_up']} follow-ups"]
        if new["weight"] != 1:
            parts[-1] += f"; implicit ones weighted {new['weight']:g}"
    return f"{shown} new feedback events ({', '.join(parts)})"


def new_votes_since_last_build(engine: Engine, persona: str) -> int:
    build = last_build(engine, persona)
    return crud.consented_vote_count(engine, persona=persona,
                                     after_feedback_id=int(build["feedback_id_max"]) if build else 0)


def thumbs_up_by_week(engine: Engine, persona: str) -> list[dict]:
    """[{week: 'YYYY-MM-DD' (Monday), up, down, rate}] over consented votes, oldest first."""
    return [{"week": week.isoformat(), "up": up, "down": down, "rate": round(up / (up + down), 3)}
            for week, up, down in crud.consented_votes_by_week(engine, persona=persona)]


def dataset_stats(engine: Engine, persona: str, settings=None) -> dict:
    """Counts per source, votes, 👍 rate by week, new votes since the last build and run, and (given settings)
    what a build now would hold."""
    seeds: dict[str, dict] = defaultdict(dict)
    for source, kind, split, n in crud.seed_example_counts(engine, persona=persona):
        seeds[source][f"{kind}/{split}"] = n
    up, down = crud.vote_counts(engine, persona=persona)
    consented = crud.consented_vote_count(engine, persona=persona)
    stats = {
        "persona": persona,
        "seed_examples": dict(seeds),
        "votes": {"up": up, "down": down, "consented": consented, "not_consented": up + down - consented},
        "thumbs_up_by_week": thumbs_up_by_week(engine, persona),
        "last_build": last_build(engine, persona),
        "new_votes_since_last_build": new_votes_since_last_build(engine, persona),
        "new_votes_since_last_run": new_votes_since_last_run(engine, persona),
    }
    if settings is not None:
        stats["new_feedback_since_last_run"] = new_feedback_since_last_run(engine, persona, settings)
        preview = build_datasets(engine, settings, persona, write=False)
        stats["next_run"] = {"counts": preview.counts, "kto_balance": preview.manifest["kto_balance"],
                             "dropped": preview.manifest["dropped"]}
    return stats
