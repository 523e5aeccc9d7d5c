"""Small inline SVG charts (no JavaScript, no image files): ratings with intervals, 👍 rate over time."""

from __future__ import annotations

from datetime import date

from markupsafe import Markup, escape

from loopbot.web.ratings import Rating


def ratings_svg(ratings: list[Rating], *, width: int = 640) -> Markup:
    """One row per version: the 95% interval as a bar, the rating as a dot."""
    if not ratings:
        return Markup("")
    row_h, label_w, pad = 28, 140, 16
    height = row_h * len(ratings) + 2 * pad + 14
    lo = min(r.lower for r in ratings)
    hi = max(r.upper for r in ratings)
    span = max(hi - lo, 40.0)
    lo, hi = lo - span * 0.08, hi + span * 0.08
    plot_w = width - label_w - pad * 2

    def x(v: float) -> float:
        return label_w + pad + (v - lo) / (hi - lo) * plot_w

    parts = [(f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" aria-label="ratings with 95% intervals">')]
    for tick in _ticks(lo, hi):
        parts.append(f'<line x1="{x(tick):.1f}" x2="{x(tick):.1f}" y1="{pad}" y2="{height - pad - 10}" '
                     f'class="grid"/><text x="{x(tick):.1f}" y="{height - 4}" class="tick">{tick:.0f}</text>')
    for i, r in enumerate(ratings):
        y = pad + i * row_h + row_h / 2
        parts.append(f'<text x="{label_w}" y="{y + 4:.1f}" class="label" text-anchor="end">{escape(r.player)}</text>')
        parts.append(f'<line x1="{x(r.lower):.1f}" x2="{x(r.upper):.1f}" y1="{y:.1f}" y2="{y:.1f}" class="ci"/>')
        parts.append(f'<circle cx="{x(r.rating):.1f}" cy="{y:.1f}" r="5" class="dot">'
                     f'<title>{escape(r.player)}: {r.rating:.0f} ({r.lower:.0f} to {r.upper:.0f})</title></circle>')
    parts.append("</svg>")
    return Markup("".join(parts))


def rate_svg(days: dict[date, tuple[int, int]], *, width: int = 640, height: int = 180) -> Markup:
    """Daily 👍 share of votes as a line, with a dot per day sized by its vote count."""
    if not days:
        return Markup('<p class="muted">No votes yet.</p>')
    pad, left = 20, 36
    items = sorted(days.items())
    n = len(items)
    most = max(up + down for _, (up, down) in items)

    def x(i: int) -> float:
        return left + ((i / (n - 1)) if n > 1 else 0.5) * (width - left - pad)

    def y(rate: float) -> float:
        return pad + (1 - rate) * (height - 2 * pad)

    parts = [(f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" aria-label="thumbs-up rate per day">')]
    for level in (0, 0.5, 1):
        parts.append(f'<line x1="{left}" x2="{width - pad}" y1="{y(level):.1f}" y2="{y(level):.1f}" class="grid"/>'
                     f'<text x="{left - 4}" y="{y(level) + 4:.1f}" class="tick" text-anchor="end">'
                     f'{int(level * 100)}%</text>')
    points = []
    for i, (day, (up, down)) in enumerate(items):
        rate = up / (up + down)
        points.append(f"{x(i):.1f},{y(rate):.1f}")
        radius = 2 + 4 * ((up + down) / most) ** 0.5
        parts.append(f'<circle cx="{x(i):.1f}" cy="{y(rate):.1f}" r="{radius:.1f}" class="dot">'
                     f'<title>{day.isoformat()}: {up} 👍 / {down} 👎</title></circle>')
    parts.insert(1 + 3, f'<polyline points="{" ".join(points)}" class="line"/>')
    parts.append(f'<text x="{left}" y="{height - 2}" class="tick">{items[0][0].isoformat()}</text>'
                 f'<text x="{width - pad}" y="{height - 2}" class="tick" text-anchor="end">'
                 f'{items[-1][0].isoformat()}</text></svg>')
    return Markup("".join(parts))


def _ticks(lo: float, hi: float) -> list[float]:
    step = next(s for s in (10, 25, 50, 100, 200, 500, 1000) if (hi - lo) / s <= 8)
    first = (int(lo // step) + 1) * step
    return [float(v) for v in range(int(first), int(hi), step)]
