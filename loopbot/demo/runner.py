"""The demo, end to end: seed the coach, measure the base model, then N rounds of votes -> training cycle -> measure.

Every reply comes from the real chat core and serving stack; every cycle is the scheduler's own job
(trainer.pipeline.run_cycle: dataset build -> train -> evaluate -> gate -> hot swap). The simulated users' taste is
never shown to the trainer: it only sees their votes, retries, arena picks and follow-up messages, as it would in
production. By default they give feedback like people (loopbot.demo.behaviour): sparse, noisy, mostly unpaired.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from loopbot.app import Loopbot
from loopbot.base.settings import Settings
from loopbot.bot.chat import ChatService
from loopbot.demo import questions as Q
from loopbot.demo.behaviour import IDEAL, REALISTIC, Behaviour
from loopbot.demo.measure import Band, Measurement, measure
from loopbot.demo.mixture import load_population
from loopbot.demo.population import BUILTIN
from loopbot.demo.progress import DemoProgress
from loopbot.demo.report import CycleSummary, Verdict, markdown, plot, verdict
from loopbot.demo.setup import FULL, PERSONA, QUICK, Plan, demo_settings, prepare_model
from loopbot.demo.traffic import Traffic, Turn
from loopbot.storage import crud
from loopbot.trainer.importers import import_sources
from loopbot.trainer.pipeline import run_cycle
from loopbot.training_control import LoopbotTraining

BASE_RATE_BAND = (0.15, 0.50)


@dataclass
class DemoOptions:
    quick: bool = False
    cycles: int = 2
    users: str | None = None  # taste[:weight],...; None = the default population
    feedback: str = "realistic"  # the behaviour's name, for the report
    behaviour: Behaviour = REALISTIC
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


def round_summary(turns: list[Turn]) -> str:
    """What the users read and did in a round: replies liked by their true taste, and the feedback they gave."""
    answers = [a for t in turns for a in [*t.answers, *t.follow_ups]]
    votes = [a for a in answers if a.vote is not None]
    flipped = sum(1 for a in votes if (a.vote > 0) != a.liked)
    retries = sum(len(t.answers) - 1 for t in turns if t.answers and not t.arena)
    return (f"{len(turns)} questions, {len(answers)} replies read ({sum(a.liked for a in answers)} liked by their "
            f"taste); {sum(a.vote > 0 for a in votes)} 👍 / {sum(a.vote < 0 for a in votes)} 👎 votes "
            f"({flipped} flipped), {retries} 🔄 retries, {sum(len(t.follow_ups) for t in turns)} follow-ups, "
            f"{sum(1 for t in turns if t.arena_pick)} arena picks in {sum(1 for t in turns if t.arena)} arena rounds")


def _seed_coach(loopbot) -> str:
    """Import the coach's configured corpus (examples/coach_qa.jsonl), as `loopbot import` does."""
    return "; ".join(r.summary() for r in import_sources(loopbot.engine, loopbot.settings, PERSONA))


def _summarise_cycle(engine, n: int, result, seconds: float, live_after: str | None) -> CycleSummary:
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
    for key, name in (("votes", "held-out votes AUC"), ("signals", "held-out signals AUC")):
        auc = (metrics.get(key) or {}).get("auc")
        if auc is not None:
            ev[name] = auc
    gate = []
    for step in run.steps or []:
        if step.get("step") == "gate":
            gate = [f"{c['name']} {'ok' if c['passed'] else 'FAILED'}: {c['detail']}" for c in step.get("checks", [])]
    if not gate and result.reason:
        gate = [result.reason]
    candidate = f"{PERSONA}-v{result.version}" if result.version else None
    return CycleSummary(n, result.status, candidate, live_after, sizes, loss, ev, gate, seconds)


class DemoRun:
    """One demo run's parts and figures; `run()` does the whole thing."""

    def __init__(self, base: Settings, options: DemoOptions, ui: DemoProgress | None = None):
        import tempfile

        self.base, self.options = base, options
        self.plan = options.plan or (QUICK if options.quick else FULL)
        self.mixture = load_population(options.users)
        self.population = self.mixture.spec
        self.tastes = self.mixture.assign(self.plan.users, options.seed)  # the same people measure and vote
        self.data_dir = Path(options.data_dir or tempfile.mkdtemp(prefix="loopbot-demo-")).resolve()
        self.ui = ui or DemoProgress(enabled=False)
        self.measurements: list[Measurement] = []
        self.cycles: list[CycleSummary] = []
        self.first_turns: dict[str, list[Turn]] = {}
        self.base_rates: dict[str, float] = {}
        self.warnings: list[str] = []
        self.heldout, self.train = Q.heldout_questions(), Q.train_questions()

    def _setup(self) -> None:
        """Model, settings, database, seed corpus, and two chat services over the app's router."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.ui.phase("model", "preparing the base model"):
            self.model_name, self.model_dir = prepare_model(self.options.quick, self.data_dir, self.base,
                                                            progress=self.ui.say)
        self.settings = demo_settings(self.base, data_dir=self.data_dir, model_dir=self.model_dir, plan=self.plan,
                                      model_name=self.model_name, vote_share=self.options.behaviour.vote_share)
        self.loopbot = Loopbot(self.settings)
        self.ui.say(f"data directory: {self.data_dir}")
        self.ui.say(f"population: {self.population}; users' tastes: {self.taste_counts()}")
        self.ui.say(f"feedback: {self.options.feedback} ({self.options.behaviour.describe()})")
        with self.ui.phase("seed", "seeding the coach persona"):
            self.ui.say(f"seeded the coach: {_seed_coach(self.loopbot)}")
        self.router = self.loopbot.router  # the app's own: run_cycle's promotion hot-swaps into it
        engine, seed = self.loopbot.engine, self.options.seed
        self.service = ChatService(engine, self.settings, self.router, training=LoopbotTraining(self.loopbot),
                                   rng=random.Random(seed))
        # the measuring panel: held-out questions, first answers only, no arena, and opted out of training
        panel_settings = self.settings.model_copy(deep=True)
        panel_settings.feedback.arena_rate = 0.0
        panel_settings.feedback.consent_default = False
        self.panel = ChatService(engine, panel_settings, self.router, training=LoopbotTraining(self.loopbot),
                                 rng=random.Random(seed + 1))
        self.band = Band.from_gate(self.settings.trainer.gate)

    def taste_counts(self) -> str:
        counts = {t.short: 0 for t in self.mixture.tastes}
        for t in self.tastes:
            counts[t.short] += 1
        return ", ".join(f"{n} {name}" for name, n in counts.items())

    async def measure_live(self, label: str) -> Measurement:
        """The live version answers the same held-out questions; the panel votes on each first answer."""
        served = self.router.route(PERSONA) or "base"
        questions = Q.sample(self.heldout, self.plan.measure_questions, seed=self.options.seed + 7)
        # each panel user judges every first answer by its TRUE taste (the panel's votes never train the bot)
        traffic = Traffic(self.panel, [t.likes for t in self.tastes], tag=f"panel-{label.replace(' ', '')}",
                          seed=self.options.seed, users=self.plan.users, max_retries=0, behaviour=IDEAL)
        with self.ui.phase("measure", f"measuring the live 👍 rate ({served})", total=len(questions)) as tick:
            turns = await traffic.run(questions, on_turn=lambda _t: tick())
        self.first_turns[label] = turns
        m = measure(label, served, _first_answers(turns))
        errors = sum(1 for t in turns if t.error)
        self.ui.say(f"{label}: live 👍 rate {m.rate:.2f} [95% CI {m.low:.2f}-{m.high:.2f}] on {m.votes} held-out "
                    f"replies from {served}; words/reply {m.words_per_reply:.0f}, cut off {m.cut_off_rate:.0%}, "
                    f"repetition {m.repetition:.3f}, symbols/word {m.symbols_per_word:.3f}"
                    + (f"; {errors} errors" if errors else ""))
        self.measurements.append(m)
        return m

    def check_base_rate(self, base: Measurement) -> None:
        """Print the base model's rate for every built-in population; warn when ours is outside the band."""
        turns = [t for t in self.first_turns["base"] if t.first]
        self.base_rates = {f.__name__: sum(f(t.question, t.first.text) for t in turns) / max(1, len(turns))
                           for f in BUILTIN}
        self.ui.say("base model's rate with each built-in population: "
                    + ", ".join(f"{name} {rate:.2f}" for name, rate in self.base_rates.items()))
        low, high = BASE_RATE_BAND
        if not low <= base.rate <= high:
            self.warnings.append(f"the base model pleases this population {base.rate:.0%} of the time, outside "
                                 f"{low:.0%}-{high:.0%}: expect little to learn (too few liked or disliked replies)")
            self.ui.warn(self.warnings[-1])

    async def user_traffic(self, round_no: int) -> None:
        """Users ask training questions and, as their behaviour says, vote, retry what they dislike, pick in arena
        rounds and ask follow-up questions."""
        questions = Q.sample(self.train, self.plan.traffic_questions, seed=self.options.seed + 100 + round_no)
        traffic = Traffic(self.service, [t.likes for t in self.tastes], tag=f"users-r{round_no}",
                          seed=self.options.seed + round_no, users=self.plan.users, max_retries=self.plan.max_retries,
                          behaviour=self.options.behaviour, follow_ups=Q.follow_up_questions())
        with self.ui.phase("traffic", f"round {round_no}: users ask, vote, retry and pick",
                           total=len(questions)) as tick:
            turns = await traffic.run(questions, on_turn=lambda _t: tick())
        self.ui.say(f"round {round_no}: {round_summary(turns)}")

    async def cycle(self, n: int) -> CycleSummary:
        """The scheduler's job, once: dataset build -> train -> evaluate -> gate -> hot swap."""
        t0 = time.monotonic()
        with self.ui.phase("cycle", f"cycle {n}: dataset build -> train -> evaluate -> gate -> hot swap"):
            result = await run_cycle(self.loopbot, PERSONA, trigger="demo")
        summary = _summarise_cycle(self.loopbot.engine, n, result, time.monotonic() - t0, self.router.route(PERSONA))
        self.cycles.append(summary)
        self.ui.say(f"cycle {n}: {summary.status}" + (f" {summary.candidate}" if summary.candidate else "")
                    + f"; dataset {summary.dataset}; train loss {summary.train_loss}; eval {summary.eval}")
        for line in summary.gate:
            self.ui.say(f"  gate: {line}")
        return summary

    def write_report(self, seconds: float) -> tuple[Path, Path, Verdict]:
        judgement = verdict(self.measurements, self.cycles, self.band)
        for line in judgement.lines:
            self.ui.say(line)
        reports = self.settings.reports_dir
        reports.mkdir(parents=True, exist_ok=True)
        png = plot(self.measurements, reports / "demo.png", f"loopbot demo: {self.mixture.label}")
        samples = []
        last = list(self.first_turns.values())[-1]
        pairs = list(zip(self.first_turns["base"], last, strict=False))[:3] if len(self.first_turns) > 1 else []
        for before, after in pairs:
            if before.first and after.first:
                samples.append((before.question, before.first.text, after.first.text))
        plan = self.plan
        facts = [("population", self.population), ("users' tastes", self.taste_counts()),
                 ("feedback", f"{self.options.feedback}: {self.options.behaviour.describe()}"),
                 ("model", f"{self.model_name} ({self.model_dir})"),
                 ("cycles", str(self.options.cycles)), ("mode", "quick" if self.options.quick else "full"),
                 ("data directory", str(self.data_dir)),
                 ("held-out questions per measurement", str(plan.measure_questions)),
                 ("training questions per round", str(plan.traffic_questions)), ("seconds", f"{seconds:.0f}"),
                 ("base model's rate with each built-in population",
                  ", ".join(f"{name} {rate:.2f}" for name, rate in self.base_rates.items()))]
        facts += [("warning", w) for w in self.warnings]
        md = reports / "demo.md"
        md.write_text(markdown(title="loopbot demo: does the bot get better from its users?", facts=facts,
                               measurements=self.measurements, cycles=self.cycles, band=self.band,
                               judgement=judgement, samples=samples, plot_name=png.name), encoding="utf-8")
        return md, png, judgement

    async def run(self) -> DemoResult:
        started = time.monotonic()
        self.ui.plan(self.plan, self.options.cycles, quick=self.options.quick)
        self._setup()
        try:
            self.check_base_rate(await self.measure_live("base"))
            for n in range(1, self.options.cycles + 1):
                await self.user_traffic(n)
                await self.cycle(n)
                await self.measure_live(f"cycle {n}")
        finally:
            await _close(self.router)
        seconds = time.monotonic() - started
        md, png, judgement = self.write_report(seconds)
        return DemoResult(self.data_dir, md, png, self.population, self.measurements, self.cycles, judgement,
                          self.warnings, seconds)


async def run_demo(base: Settings, options: DemoOptions, ui: DemoProgress | None = None) -> DemoResult:
    """Run the whole demo and write its report; returns the figures."""
    return await DemoRun(base, options, ui).run()


async def _close(router) -> None:
    close = getattr(router, "aclose", None)
    if close:
        await close()
    backend = getattr(router, "backend", None)
    if backend is not None and getattr(backend, "aclose", None):
        await backend.aclose()
