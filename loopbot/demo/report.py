"""The demo's report: Markdown (the numbers, the bar, the verdicts) and a PNG plot of the 👍 rate per cycle."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

from loopbot.demo.measure import Band, Measurement, difference_interval


@dataclass
class CycleSummary:
    """What one training cycle did, as the pipeline reported it."""

    cycle: int
    status: str  # promoted | rejected | skipped | failed
    candidate: str | None = None
    live_after: str | None = None
    dataset: dict = field(default_factory=dict)
    train_loss: float | None = None
    eval: dict = field(default_factory=dict)
    gate: list[str] = field(default_factory=list)  # the gate's reasons / checks, one line each
    seconds: float = 0.0


@dataclass
class Verdict:
    improved: bool  # the last measurement's interval lies wholly above the base measurement's
    no_worse_promotion: bool  # no promoted version was measured significantly worse than the one before it
    within_band: bool
    lines: list[str]


def verdict(measurements: list[Measurement], cycles: list[CycleSummary], band: Band) -> Verdict:
    base, last = measurements[0], measurements[-1]
    lines = []
    improved = last.low > base.high
    lines.append(f"👍 rate {base.rate:.2f} [{base.low:.2f}-{base.high:.2f}] -> {last.rate:.2f} "
                 f"[{last.low:.2f}-{last.high:.2f}]: " + ("better beyond both 95% intervals" if improved else
                                                          "NOT better beyond the 95% intervals"))
    diff, low, high = difference_interval(base, last)
    lines.append(f"change {diff:+.2f} [95% CI {low:+.2f} to {high:+.2f}] (Newcombe): "
                 + ("more than sampling noise" if low > 0 else "worse than sampling noise" if high < 0 else
                    "within sampling noise"))
    no_worse = True
    for c, (before, after) in zip(cycles, itertools.pairwise(measurements), strict=False):
        if c.status == "promoted" and after.high < before.low:
            no_worse = False
            lines.append(f"cycle {c.cycle} promoted {c.candidate}, and the next measurement found it worse "
                         f"({after.rate:.2f} vs {before.rate:.2f})")
    if no_worse:
        lines.append("no promoted version was measured worse than the version before it")
    within = True
    for m in measurements[1:]:
        if m.served == base.served:
            continue  # the same model measured again: sampling noise, not degeneracy
        reasons = band.violations(base, m)
        if reasons:
            within = False
            lines.append(f"{m.label}: degeneracy outside the band: {'; '.join(reasons)}")
    if within:
        lines.append(f"degeneracy stayed within the band ({band.describe()})")
    return Verdict(improved, no_worse, within, lines)


def _fmt(x, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def markdown(*, title: str, facts: list[tuple[str, str]], measurements: list[Measurement],
             cycles: list[CycleSummary], band: Band, judgement: Verdict, samples: list[tuple[str, str, str]],
             plot_name: str | None) -> str:
    out = [f"# {title}", ""]
    out += [f"- **{k}**: {v}" for k, v in facts]
    out += ["", "## The bar", ""] + [f"- {line}" for line in judgement.lines]
    out += ["", "## Live 👍 rate on held-out questions", "",
            "| measured | served | 👍 rate | 95% interval | votes | words/reply | cut off | repetition "
            "| symbols/word |",
            "|---|---|---|---|---|---|---|---|---|"]
    for m in measurements:
        out.append(f"| {m.label} | {m.served} | {m.rate:.2f} | {m.low:.2f}-{m.high:.2f} | {m.votes} | "
                   f"{m.words_per_reply:.1f} | {m.cut_off_rate:.0%} | {m.repetition:.3f} | {m.symbols_per_word:.3f} |")
    if plot_name:
        out += ["", f"![👍 rate per cycle]({plot_name})"]
    out += ["", "## Training cycles", "",
            "| cycle | decision | candidate | live after | dataset | train loss | eval | gate | seconds |",
            "|---|---|---|---|---|---|---|---|---|"]
    for c in cycles:
        data = ", ".join(f"{k} {v}" for k, v in c.dataset.items()) or "-"
        ev = ", ".join(f"{k} {v}" for k, v in c.eval.items()) or "-"
        gate = "; ".join(c.gate).replace("|", "/") or "-"
        out.append(f"| {c.cycle} | {c.status} | {c.candidate or '-'} | {c.live_after or 'base'} | {data} | "
                   f"{_fmt(c.train_loss, '.3f')} | {ev} | {gate} | {c.seconds:.0f} |")
    if samples:
        out += ["", "## Sample replies (held-out questions)", ""]
        for question, before, after in samples:
            out += [f"**Q:** {question}", "", f"- base: {before.strip()[:400]}", f"- last: {after.strip()[:400]}", ""]
    return "\n".join(out).rstrip() + "\n"


def plot(measurements: list[Measurement], path: Path, title: str) -> Path:
    """👍 rate with its 95% interval per measurement, labelled by the version that served it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = list(range(len(measurements)))
    rates = [m.rate for m in measurements]
    err = [[m.rate - m.low for m in measurements], [m.high - m.rate for m in measurements]]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    ax.errorbar(xs, rates, yerr=err, fmt="o-", capsize=6, color="#2b6cb0")
    ax.axhspan(measurements[0].low, measurements[0].high, color="#cbd5e0", alpha=0.5, label="base model, 95% CI")
    ax.set_xticks(xs, [f"{m.label}\n{m.served}" for m in measurements])
    ax.set_ylim(0, 1)
    ax.set_ylabel("live 👍 rate (held-out questions)".replace("👍", "thumbs-up"))
    ax.set_title(title)
    ax.legend(loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
