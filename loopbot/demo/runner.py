"""The demo, end to end: seed the coach, measure the base model, then N rounds of votes -> training cycle -> measure.

Every reply comes from the real chat core and serving stack; every cycle is the scheduler's own job
(trainer.pipeline.run_cycle: dataset build -> train -> evaluate -> gate -> hot swap). The simulated users' taste is
never shown to the trainer: it only sees their votes, retries and arena picks, as it would in production.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from loopbot.demo import questions as Q
from loopbot.demo.measure import Band, Measurement, measure
from loopbot.demo.population import BUILTIN, load_preference
from loopbot.demo.progress import DemoProgress
from loopbot.demo.report import CycleSummary, Verdict, markdown, plot, verdict
from loopbot.demo.setup import FULL, PERSONA, QUICK, Plan, demo_settings, prepare_model
from loopbot.demo.traffic import Traffic, Turn
from loopbot.settings import Settings

BASE_RATE_BAND = (0.15, 0.50)


@dataclass
class DemoOptions:
    quick: bool = False
    cycles: int = 2
    users: str | None = None  # module:function; None = the default population
    data_dir: Path | None = None
    seed: int = 0
    plan: Plan | None = None  # None = FULL or QUICK


@dataclass
class DemoResult:
    data_dir: Path
    report: Path
    plot: Path
    population: str
    measurements: list[Measurement]
    cycles: list[CycleSummary]
    verdict: Verdict
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _first_answers(turns: list[Turn]) -> list[tuple[str, bool, bool]]:
    return [(t.first.text, t.first.cut_off, t.first.liked) for t in turns if t.first is not None]


def _seed_coach(loopbot) -> str:
    """Import the coach's configured corpus (examples/coach_qa.jsonl), as `loopbot import` does."""
    from trainer.importers import import_sources

    return "; ".join(r.summary() for r in import_sources(loopbot.engine, loopbot.settings, PERSONA))


def _summarise_cycle(engine, n: int, result, seconds: float, live_after: str | None) -> CycleSummary:
    from storage import crud

    if result is None:
        return CycleSummary(n, "skipped", gate=["another cycle held the lock"], seconds=seconds)
    run = crud.get_training_run(engine, run_id=result.run_id)
    counts = run.dataset_sizes or next((st.get("counts") for st in run.steps or [] if st.get("step") == "build"), {})
    sizes = {k: v for k, v in (counts or {}).items() if k in ("sft", "dpo", "kto", "heldout_dpo")}
    loss = None
    for step in run.steps or []:
        for stage in step.get("stages") or []:
            if stage.get("train_loss") is not None:
                loss = stage["train_loss"]
    ev = {}
    metrics = run.metrics or {}
    for label in ("live", "candidate"):
        acc = (metrics.get(label) or {}).get("preference_accuracy")
        if acc is not None:
            ev[f"{label} pref. acc."] = acc
    gate = []
    for step in run.steps or []:
        if step.get("step") == "gate":
            gate = [f"{c['name']} {'ok' if c['passed'] else 'FAILED'}: {c['detail']}" for c in step.get("checks", [])]
    if not gate and result.reason:
        gate = [result.reason]
    candidate = f"{PERSONA}-v{result.version}" if result.version else None
    return CycleSummary(n, result.status, candidate, live_after, sizes, loss, ev, gate, seconds)


async def run_demo(base: Settings, options: DemoOptions, ui: DemoProgress | None = None) -> DemoResult:
    """Run the whole demo and write its report; returns the figures."""
    import tempfile

    from bot.chat import ChatService
    from loopbot.app import Loopbot
    from trainer.pipeline import run_cycle

    started = time.monotonic()
    plan = options.plan or (QUICK if options.quick else FULL)
    population, likes = load_preference(options.users)
    data_dir = Path(options.data_dir or tempfile.mkdtemp(prefix="loopbot-demo-")).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    ui = ui or DemoProgress(enabled=False)
    ui.plan(plan, options.cycles, quick=options.quick)
    warnings: list[str] = []

    with ui.phase("model", "preparing the base model"):
        model_name, model_dir = prepare_model(options.quick, data_dir, base, progress=ui.say)
    settings = demo_settings(base, data_dir=data_dir, model_dir=model_dir, plan=plan, model_name=model_name)
    loopbot = Loopbot(settings)
    engine = loopbot.engine
    ui.say(f"data directory: {data_dir}")
    ui.say(f"population: {population}")
    with ui.phase("seed", "seeding the coach persona"):
        ui.say(f"seeded the coach: {_seed_coach(loopbot)}")
    router = loopbot.router  # the app's own: run_cycle's promotion hot-swaps into it
    rng = random.Random(options.seed)
    service = ChatService(engine, settings, router, loopbot=loopbot, rng=rng)
    # the measuring panel: held-out questions, first answers only, no arena, and opted out of training
    panel_settings = settings.model_copy(deep=True)
    panel_settings.feedback.arena_rate = 0.0
    panel_settings.feedback.consent_default = False
    panel = ChatService(engine, panel_settings, router, loopbot=loopbot, rng=random.Random(options.seed + 1))
    heldout, train = Q.heldout_questions(), Q.train_questions()
    band = Band.from_gate(settings.trainer.gate)
    measurements: list[Measurement] = []
    cycles: list[CycleSummary] = []
    first_turns: dict[str, list[Turn]] = {}
    base_rates: dict[str, float] = {}

    async def measure_live(label: str) -> Measurement:
        served = router.route(PERSONA) or "base"
        questions = Q.sample(heldout, plan.measure_questions, seed=options.seed + 7)  # the same questions each time
        traffic = Traffic(panel, likes, tag=f"panel-{label.replace(' ', '')}", seed=options.seed, users=plan.users,
                          max_retries=0)
        with ui.phase("measure", f"measuring the live 👍 rate ({served})", total=len(questions)) as tick:
            turns = await traffic.run(questions, on_turn=lambda _t: tick())
        first_turns[label] = turns
        m = measure(label, served, _first_answers(turns))
        errors = sum(1 for t in turns if t.error)
        ui.say(f"{label}: live 👍 rate {m.rate:.2f} [95% CI {m.low:.2f}-{m.high:.2f}] on {m.votes} held-out replies "
               f"from {served}; words/reply {m.words_per_reply:.0f}, cut off {m.cut_off_rate:.0%}, "
               f"repetition {m.repetition:.3f}, symbols/word {m.symbols_per_word:.3f}"
               + (f"; {errors} errors" if errors else ""))
        measurements.append(m)
        return m

    async def user_traffic(round_no: int) -> None:
        questions = Q.sample(train, plan.traffic_questions, seed=options.seed + 100 + round_no)
        traffic = Traffic(service, likes, tag=f"users-r{round_no}", seed=options.seed + round_no, users=plan.users,
                          max_retries=plan.max_retries)
        with ui.phase("traffic", f"round {round_no}: users ask, vote, retry and pick",
                      total=len(questions)) as tick:
            turns = await traffic.run(questions, on_turn=lambda _t: tick())
        answers = [a for t in turns for a in t.answers]
        arena = sum(1 for t in turns if t.arena_pick)
        ui.say(f"round {round_no}: {len(turns)} questions, {len(answers)} replies read, "
               f"{sum(a.liked for a in answers)} 👍 / {sum(not a.liked for a in answers)} 👎, "
               f"{sum(max(0, len(t.answers) - 1) for t in turns if not t.arena_pick)} 🔄 retries, "
               f"{arena} arena rounds")

    try:
        base_m = await measure_live("base")
        base_rates = {f.__name__: sum(f(t.question, t.first.text) for t in first_turns["base"] if t.first)
                      / max(1, len(first_turns["base"])) for f in BUILTIN}
        ui.say("base model's rate with each built-in population: "
               + ", ".join(f"{name} {rate:.2f}" for name, rate in base_rates.items()))
        low, high = BASE_RATE_BAND
        if not low <= base_m.rate <= high:
            warnings.append(f"the base model pleases this population {base_m.rate:.0%} of the time, outside "
                            f"{low:.0%}-{high:.0%}: expect little to learn (too few liked or disliked replies)")
            ui.warn(warnings[-1])
        for n in range(1, options.cycles + 1):
            await user_traffic(n)
            t0 = time.monotonic()
            with ui.phase("cycle", f"cycle {n}: dataset build -> train -> evaluate -> gate -> hot swap"):
                result = await run_cycle(loopbot, PERSONA, trigger="demo")
            summary = _summarise_cycle(engine, n, result, time.monotonic() - t0, router.route(PERSONA))
            cycles.append(summary)
            ui.say(f"cycle {n}: {summary.status}" + (f" {summary.candidate}" if summary.candidate else "")
                   + f"; dataset {summary.dataset}; train loss {summary.train_loss}; eval {summary.eval}")
            for line in summary.gate:
                ui.say(f"  gate: {line}")
            await measure_live(f"cycle {n}")
    finally:
        await _close(router)

    judgement = verdict(measurements, cycles, band)
    for line in judgement.lines:
        ui.say(line)
    reports = settings.reports_dir
    reports.mkdir(parents=True, exist_ok=True)
    png = plot(measurements, reports / "demo.png", f"loopbot demo: {population.split(':')[-1]}")
    samples = []
    if len(first_turns) > 1:
        last = list(first_turns.values())[-1]
        for before, after in list(zip(first_turns["base"], last))[:3]:
            if before.first and after.first:
                samples.append((before.question, before.first.text, after.first.text))
    facts = [("population", population), ("model", f"{model_name} ({model_dir})"), ("cycles", str(options.cycles)),
             ("mode", "quick" if options.quick else "full"), ("data directory", str(data_dir)),
             ("held-out questions per measurement", str(plan.measure_questions)),
             ("training questions per round", str(plan.traffic_questions)),
             ("seconds", f"{time.monotonic() - started:.0f}"),
             ("base model's rate with each built-in population",
              ", ".join(f"{name} {rate:.2f}" for name, rate in base_rates.items()))]
    facts += [("warning", w) for w in warnings]
    md = reports / "demo.md"
    md.write_text(markdown(title="loopbot demo: does the bot get better from its users?", facts=facts,
                           measurements=measurements, cycles=cycles, band=band, judgement=judgement,
                           samples=samples, plot_name=png.name), encoding="utf-8")
    return DemoResult(data_dir, md, png, population, measurements, cycles, judgement, warnings,
                      time.monotonic() - started)


async def _close(router) -> None:
    close = getattr(router, "aclose", None)
    if close:
        await close()
    backend = getattr(router, "backend", None)
    if backend is not None and getattr(backend, "aclose", None):
        await backend.aclose()
