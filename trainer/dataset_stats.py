"""What the data looks like: counts per source, 👍 rate over time, new votes since the last run or build."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy.engine import Engine

from loopbot.storage import crud
from loopbot.trainer.datasets import BUILD_EVENT, build_datasets

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
        preview = build_datasets(engine, settings, persona, write=False)
        stats["next_run"] = {"counts": preview.counts, "kto_balance": preview.manifest["kto_balance"],
                             "dropped": preview.manifest["dropped"]}
    return stats
