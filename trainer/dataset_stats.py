"""What the data looks like: counts per source, 👍 rate over time, new votes since the last run or build."""

from __future__ import annotations

from collections import defaultdict
from datetime import date

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from loopbot.storage.models import Adapter, Event, Feedback, Generation, SeedExample, TrainingRun, User
from loopbot.trainer.feedback_rows import consented_vote_count

TRAINED_RUN_STATUSES = ("succeeded", "promoted", "rejected")


def last_build(engine: Engine, persona: str) -> dict | None:
    """The newest recorded dataset build of the persona: {build_id, path, counts, feedback_id_max, ...}."""
    from loopbot.trainer.datasets import BUILD_EVENT

    with engine.connect() as c:
        row = c.execute(select(Event.data, Event.created_at)
                        .where(Event.kind == BUILD_EVENT, Event.persona == persona)
                        .order_by(Event.id.desc()).limit(1)).first()
    return {**row[0], "created_at": row[1].isoformat()} if row else None


def last_trained_feedback_id(engine: Engine, persona: str) -> int:
    """The highest feedback id a finished training run of the persona used (0 if none).

    Read from `Adapter.dataset_manifest["feedback_id_max"]` and `TrainingRun.dataset_sizes["feedback_id_max"]`
    of runs that trained (succeeded, promoted or rejected by the gate); skipped and failed runs do not count."""
    best = 0
    with engine.connect() as c:
        for (manifest,) in c.execute(select(Adapter.dataset_manifest).where(Adapter.persona == persona)):
            best = max(best, int((manifest or {}).get("feedback_id_max") or 0))
        for (sizes,) in c.execute(select(TrainingRun.dataset_sizes).where(
                TrainingRun.persona == persona, TrainingRun.status.in_(TRAINED_RUN_STATUSES))):
            best = max(best, int((sizes or {}).get("feedback_id_max") or 0))
    return best


def new_votes_since_last_run(engine: Engine, persona: str) -> int:
    """Consented votes on the persona's replies that no finished training run has used yet."""
    return consented_vote_count(engine, persona, after_feedback_id=last_trained_feedback_id(engine, persona))


def new_votes_since_last_build(engine: Engine, persona: str) -> int:
    build = last_build(engine, persona)
    return consented_vote_count(engine, persona, after_feedback_id=int(build["feedback_id_max"]) if build else 0)


def thumbs_up_by_week(engine: Engine, persona: str) -> list[dict]:
    """[{week: 'YYYY-MM-DD' (Monday), up, down, rate}] over consented votes, oldest first."""
    weeks: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    q = (select(Feedback.value, Feedback.updated_at)
         .join(Generation, Generation.id == Feedback.generation_id)
         .join(User, User.id == Feedback.user_id)
         .where(Generation.persona == persona, User.consent.is_(True)))
    with engine.connect() as c:
        for value, at in c.execution_options(stream_results=True, yield_per=5000).execute(q):
            key = date.fromordinal(at.date().toordinal() - at.weekday()).isoformat()
            weeks[key][0 if value > 0 else 1] += 1
    return [{"week": k, "up": u, "down": d, "rate": round(u / (u + d), 3)} for k, (u, d) in sorted(weeks.items())]


def dataset_stats(engine: Engine, persona: str, settings=None) -> dict:
    """Counts per source, votes, 👍 rate by week, new votes since the last build and run, and (given settings)
    what a build now would hold."""
    from loopbot.storage import crud

    seeds: dict[str, dict] = defaultdict(dict)
    with engine.connect() as c:
        for source, kind, split, n in c.execute(
                select(SeedExample.source, SeedExample.kind, SeedExample.split, func.count())
                .where(SeedExample.persona == persona)
                .group_by(SeedExample.source, SeedExample.kind, SeedExample.split)):
            seeds[source][f"{kind}/{split}"] = n
    up, down = crud.vote_counts(engine, persona=persona)
    consented = consented_vote_count(engine, persona)
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
        from loopbot.trainer.datasets import build_datasets

        preview = build_datasets(engine, settings, persona, write=False)
        stats["next_run"] = {"counts": preview.counts, "kto_balance": preview.manifest["kto_balance"],
                             "dropped": preview.manifest["dropped"]}
    return stats
