"""The 👍 rate's confidence interval and the degeneracy figures the demo reports beside it."""

import pytest

from loopbot.demo.measure import Band, Measurement, difference_interval, measure, wilson_interval


def test_wilson_interval_matches_known_values():
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-3)
    low, high = wilson_interval(0, 10)
    assert low == 0 and high == pytest.approx(0.2775, abs=1e-3)
    assert wilson_interval(30, 100) == pytest.approx((0.2189, 0.3958), abs=1e-3)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def _rate(likes: int, votes: int) -> Measurement:
    low, high = wilson_interval(likes, votes)
    return Measurement("m", "base", likes, votes, low, high, 0.0, 0.0, 0.0, 0.0)


def test_the_difference_interval_matches_newcombes_worked_example():
    # Newcombe (1998), Statistics in Medicine 17:873, example (a), method 10: 56/70 - 48/80 = 0.200 [0.0524, 0.3339]
    diff, low, high = difference_interval(_rate(48, 80), _rate(56, 70))
    assert (diff, low, high) == pytest.approx((0.2, 0.0524, 0.3339), abs=1e-3)
    # two overlapping intervals can still hold a change beyond sampling noise; equal rates never do
    assert _rate(39, 80).high > _rate(54, 80).low and difference_interval(_rate(39, 80), _rate(54, 80))[1] > 0
    _, low, high = difference_interval(_rate(40, 80), _rate(40, 80))
    assert low < 0 < high


def test_degeneracy_figures_catch_digit_cramming_loops_and_cut_offs():
    base = measure("base", "base", [("Run easy and keep your long run slow.", False, False),
                                    ("You should sleep well and eat carbs.", False, True)])
    assert base.rate == 0.5 and base.words_per_reply == pytest.approx(7.5)
    assert Band().violations(base, base) == []
    gamed = measure("v1", "coach-v1", [("5 10 15 20 km, 5 10 15 20 km! 5 10 15 20 km", True, True)] * 2)
    reasons = " ".join(Band().violations(base, gamed))
    assert "cut off 100%" in reasons and "repetition" in reasons and "symbols per word" in reasons
