"""Bradley-Terry and Elo on synthetic comparisons drawn from known strengths."""

from __future__ import annotations

import numpy as np

from loopbot.web.ratings import CENTER, SCALE, Match, matches_from_picks, online_elo, rate

TRUE = {"base": -0.6, "v1": 0.0, "v2": 0.4, "v3": 0.9}  # log-strengths


def simulate(n: int, rng: np.random.Generator, *, tie_rate: float = 0.0) -> list[Match]:
    names = list(TRUE)
    out = []
    for _ in range(n):
        i, j = rng.choice(len(names), 2, replace=False)
        a, b = names[i], names[j]
        if rng.random() < tie_rate:
            out.append(Match(a, b, 0.5))
            continue
        p = 1 / (1 + np.exp(-(TRUE[a] - TRUE[b])))
        out.append(Match(a, b, float(rng.random() < p)))
    return out


def true_rating(name: str) -> float:
    mean = np.mean(list(TRUE.values()))
    return CENTER + SCALE * (TRUE[name] - mean)


def test_fitted_order_matches_the_true_order():
    ratings = rate(simulate(3000, np.random.default_rng(7)), rounds=50)
    assert [r.player for r in ratings] == ["v3", "v2", "v1", "base"]
    for r in ratings:
        assert abs(r.rating - true_rating(r.player)) < 40
        assert r.lower < r.rating < r.upper


def test_intervals_cover_the_truth_at_about_the_stated_rate():
    rng = np.random.default_rng(11)
    covered = total = 0
    for trial in range(30):
        for r in rate(simulate(600, rng), rounds=120, seed=trial):
            covered += r.lower <= true_rating(r.player) <= r.upper
            total += 1
    coverage = covered / total
    assert 0.85 <= coverage <= 0.995, f"95% intervals covered the truth {coverage:.0%} of the time"


def test_intervals_narrow_with_more_picks():
    rng = np.random.default_rng(3)
    few = {r.player: r.upper - r.lower for r in rate(simulate(150, rng), rounds=100)}
    many = {r.player: r.upper - r.lower for r in rate(simulate(2400, rng), rounds=100)}
    assert all(many[p] < few[p] / 2 for p in TRUE)


def test_ties_and_both_bad_count_half_and_self_matches_are_ignored():
    rows = [("v1", "v2", "a"), ("v1", "v2", "b"), ("v1", "v2", "tie"), ("v1", "v2", "both_bad"),
            ("v1", "v1", "a"), ("v1", "v2", None)]
    matches = matches_from_picks(rows)
    assert [m.outcome for m in matches] == [1.0, 0.0, 0.5, 0.5]
    ratings = {r.player: r for r in rate(matches, rounds=20)}
    assert abs(ratings["v1"].rating - ratings["v2"].rating) < 1e-6
    assert ratings["v1"].games == 4 and ratings["v1"].wins == 2


def test_a_version_that_won_every_pick_gets_a_finite_rating():
    ratings = rate([Match("v2", "v1", 1.0)] * 5, rounds=20)
    assert ratings[0].player == "v2" and CENTER < ratings[0].rating < CENTER + 400


def test_elo_moves_towards_the_winner_in_order():
    elo = online_elo([Match("a", "b", 1.0)] * 10)
    assert elo["a"] > CENTER > elo["b"] and abs((elo["a"] - CENTER) - (CENTER - elo["b"])) < 1e-9
    assert online_elo([Match("a", "b", 1.0), Match("a", "b", 0.0)])["a"] < CENTER  # the later loss weighs more


def test_no_picks_no_ratings():
    assert rate([]) == []
