"""Dataset build from N generated feedback rows (SQLite and PostgreSQL) vs a plain SQL export of the same rows.

    python bench/bench_datasets.py [--rows 1000000] [--no-postgres]

Each build and export runs in its own forked process, so its peak memory (ru_maxrss) is its own.
Goals (issue 5): the build takes at most 3x the plain export's time, and stays under 2 GB of memory.
`run(rows=None)` reads LOOPBOT_BENCH_DATASET_ROWS (default 1,000,000)."""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import resource
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PERSONA = "coach"
WORDS = ("run easy pace long tempo interval rest recovery marathon race gel water carb sleep shoes hill stride "  # noqa: SIM905
         "cadence taper mile kilometre heart rate zone strength core calf hip knee stretch warm cool fuel "
         "breakfast dinner protein iron salt heat cold rain wind trail track road week plan goal split finish "
         "start wall cramp blister chafe coffee banana rice pasta bread honey oats legs lungs mind focus breathe "
         "relax smooth strong steady slow fast faster slower build base volume easy-day long-run").split()


def _text(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choices(WORDS, k=rng.randint(lo, hi))) + f" {rng.randrange(10**6)}."


def generate(engine, rows: int, *, seed: int = 0, batch: int = 20_000) -> dict:
    """Insert about `rows` feedback rows (2 votes per reply) with their users, chats, messages, replies, retries
    and arena picks, in bulk. Returns the row counts."""
    from loopbot.storage.models import Chat, Comparison, Feedback, Generation, Message, User

    rng = random.Random(seed)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    n_users = max(50, rows // 1000)
    users = [{"id": i + 1, "platform": "telegram", "platform_user_id": str(i + 1), "display_name": f"u{i + 1}",
              "consent": rng.random() > 0.1, "is_admin": False, "created_at": now} for i in range(n_users)]
    chats = [{"id": u["id"], "platform": "telegram", "platform_chat_id": str(u["id"]), "type": "private",
              "persona": PERSONA, "conversation_id": uuid.UUID(int=u["id"]).hex, "created_at": now} for u in users]
    buffers = {"messages": [], "generations": [], "feedback": [], "comparisons": []}
    tables = {"messages": Message.__table__, "generations": Generation.__table__, "feedback": Feedback.__table__,
              "comparisons": Comparison.__table__}
    counts = dict.fromkeys(buffers, 0)
    system = {"role": "system", "content": "You are an experienced marathon coach."}

    def flush(conn, force=False):
        if not force and max(map(len, buffers.values())) < batch:
            return
        for name in ("messages", "generations", "feedback", "comparisons"):  # parents before children
            if buffers[name]:
                _bulk_insert(conn, tables[name], buffers[name])
                counts[name] += len(buffers[name])
                buffers[name] = []

    with engine.begin() as conn:
        _bulk_insert(conn, User.__table__, users)
        _bulk_insert(conn, Chat.__table__, chats)
    msg_id = gen_id = fb_id = cmp_id = 0
    target_gens = rows // 2
    conn_ctx = engine.begin()
    conn = conn_ctx.__enter__()
    try:
        while gen_id < target_gens:
            owner = rng.choice(users)
            conv = uuid.UUID(int=rng.getrandbits(128)).hex  # reproducible runs
            history: list[dict] = []
            at = now + timedelta(seconds=gen_id)
            previous = None
            for _turn in range(rng.randint(2, 8)):
                if gen_id >= target_gens:
                    break
                retry = previous is not None and rng.random() < 0.1
                if not retry:
                    msg_id += 1
                    question = _text(rng, 4, 14)
                    buffers["messages"].append({"id": msg_id, "chat_id": owner["id"], "user_id": owner["id"],
                                                "role": "user", "text": question, "persona": PERSONA,
                                                "conversation_id": conv, "reply_to_id": None, "created_at": at})
                    history.append({"role": "user", "content": question})
                    prompt_msg = msg_id
                    prompt = [system, *history[-5:]]
                msg_id += 1
                gen_id += 1
                answer = _text(rng, 8, 40)
                roll = rng.random()
                status, finish = ("error", None) if roll < 0.03 else ("cut_off", "length") if roll < 0.07 \
                    else ("ok", "stop")
                buffers["messages"].append({"id": msg_id, "chat_id": owner["id"], "user_id": None,
                                            "role": "assistant", "text": answer, "persona": PERSONA,
                                            "conversation_id": conv, "reply_to_id": prompt_msg, "created_at": at})
                buffers["generations"].append({
                    "id": gen_id, "message_id": msg_id, "prompt_message_id": prompt_msg, "chat_id": owner["id"],
                    "persona": PERSONA, "adapter_version": None, "backend": "bench", "sampling": {},
                    "prompt": prompt, "status": status, "finish_reason": finish,
                    "retry_of_id": previous if retry else None, "in_history": True, "created_at": at})
                other = rng.choice(users)
                while other["id"] == owner["id"]:
                    other = rng.choice(users)
                for voter in (owner, other):
                    fb_id += 1
                    buffers["feedback"].append({"id": fb_id, "generation_id": gen_id, "user_id": voter["id"],
                                                "value": 1 if rng.random() < 0.6 else -1, "source": "button",
                                                "created_at": at, "updated_at": at})
                if retry and rng.random() < 0.2:
                    cmp_id += 1
                    buffers["comparisons"].append({
                        "id": cmp_id, "persona": PERSONA, "generation_a_id": previous, "generation_b_id": gen_id,
                        "user_id": owner["id"], "pick": rng.choice("ab"), "source": "chat", "created_at": at,
                        "picked_at": at})
                if not retry:
                    history.append({"role": "assistant", "content": answer})
                previous = gen_id
            flush(conn)
        flush(conn, force=True)
    finally:
        conn_ctx.__exit__(None, None, None)
    if engine.dialect.name == "postgresql":
        from sqlalchemy import text

        with engine.begin() as c:
            for table in ("users", "chats", "messages", "generations", "feedback", "comparisons"):
                c.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                               f"(SELECT COALESCE(MAX(id), 1) FROM {table}))"))
                c.execute(text(f"ANALYZE {table}"))
    return {"users": n_users, **counts}


def _bulk_insert(conn, table, rows: list[dict]) -> None:
    if conn.dialect.name != "postgresql":
        conn.execute(table.insert(), rows)
        return
    names = sorted({k for r in rows for k in r})
    raw = conn.connection.dbapi_connection
    with raw.cursor() as cur, cur.copy(f"COPY {table.name} ({', '.join(names)}) FROM STDIN") as copy:
        for r in rows:
            copy.write_row([json.dumps(r[n]) if isinstance(r.get(n), (dict, list)) else r.get(n) for n in names])


def plain_export(url: str, out: Path) -> int:
    """The baseline: every feedback row of the persona with its reply and prompt, one JSON line each."""
    from sqlalchemy import select

    from loopbot.storage.db import make_engine
    from loopbot.storage.models import Feedback, Generation, Message

    engine = make_engine(url)
    q = (select(Feedback.id, Feedback.value, Feedback.user_id, Generation.prompt, Message.text)
         .join(Generation, Generation.id == Feedback.generation_id)
         .join(Message, Message.id == Generation.message_id)
         .where(Generation.persona == PERSONA).order_by(Feedback.id))
    n = 0
    with engine.connect() as c, open(out, "w", encoding="utf-8") as f:
        for part in c.execution_options(stream_results=True, yield_per=5000).execute(q).partitions(5000):
            for row in part:
                f.write(json.dumps(list(row), ensure_ascii=False) + "\n")
                n += 1
    engine.dispose()
    return n


def build(url: str, out: Path) -> dict:
    from loopbot.base.config import load_settings
    from loopbot.storage.db import make_engine
    from loopbot.trainer.datasets import build_datasets

    settings = load_settings(ROOT / "config.toml", env={}, overrides={"data_dir": str(out)})
    engine = make_engine(url)
    result = build_datasets(engine, settings, PERSONA)
    engine.dispose()
    return result.counts


def _child(fn, args, queue) -> None:
    start = time.perf_counter()
    result = fn(*args)
    queue.put((time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, result))


def timed_in_child(fn, *args) -> tuple[float, float, object]:
    """(seconds, peak RSS in MB, result) of fn(*args) run in a forked process."""
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(fn, args, queue))
    proc.start()
    seconds, peak_mb, result = queue.get()
    proc.join()
    return seconds, peak_mb, result


def measure(label: str, url: str, rows: int, work: Path) -> list[dict]:
    from loopbot.storage.db import make_engine, upgrade

    engine = make_engine(url)
    upgrade(engine)
    t0 = time.perf_counter()
    counts = generate(engine, rows)
    gen_s = time.perf_counter() - t0
    engine.dispose()
    exp_s, exp_mb, exported = timed_in_child(plain_export, url, work / f"{label}-export.jsonl")
    build_s, build_mb, built = timed_in_child(build, url, work / f"{label}-build")
    print(f"{label}: generated {counts} in {gen_s:.0f} s; export {exported} rows in {exp_s:.1f} s "
          f"({exp_mb:.0f} MB); build {built} in {build_s:.1f} s ({build_mb:.0f} MB)", file=sys.stderr)
    n = counts["feedback"]
    return [
        {"name": f"dataset build, {n:,} votes, {label}: seconds (baseline: plain SQL export)", "figure": build_s,
         "baseline": exp_s, "unit": "s", "goal": "ratio <= 3"},
        {"name": f"dataset build, {n:,} votes, {label}: votes/s (baseline: plain SQL export)",
         "figure": n / build_s, "baseline": n / exp_s, "unit": "rows/s"},
        {"name": f"dataset build, {n:,} votes, {label}: peak memory MB (baseline: 2 GB limit)",
         "figure": build_mb, "baseline": 2048.0, "unit": "MB", "goal": "ratio <= 1"},
    ]


def run(rows: int | None = None, postgres: bool = True) -> list[dict]:
    from bench.scratch_postgres import create_scratch_database, drop_scratch_database

    rows = rows or int(os.environ.get("LOOPBOT_BENCH_DATASET_ROWS", "1000000"))
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-datasets-") as tmp:
        work = Path(tmp)
        results += measure("SQLite", f"sqlite:///{work}/bench.db", rows, work)
        url = create_scratch_database(quiet_reason="skipped") if postgres else None
        if url:
            try:
                results += measure("PostgreSQL", url, rows, work)
            finally:
                drop_scratch_database(url)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=None, help="feedback rows to generate (default 1,000,000)")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    for r in run(args.rows, postgres=not args.no_postgres):
        ratio = r["figure"] / r["baseline"]
        goal = r.get("goal", "")
        print(f"{r['name']}: {r['figure']:.3g} {r.get('unit', '')} vs {r['baseline']:.3g} -> {ratio:.2f}x"
              + (f" (goal {goal})" if goal else ""))


if __name__ == "__main__":
    main()
