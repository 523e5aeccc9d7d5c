"""Ratings from pairwise picks: Bradley-Terry with 95% bootstrap intervals (as Chatbot Arena does), and online Elo."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

SCALE = 400 / math.log(10)  # Elo points per unit of log-strength
CENTER = 1000.0

# outcome of one comparison for player A: 1 = A won, 0 = B won, 0.5 = tie (a tie or "both bad")
OUTCOME_BY_PICK = {"a": 1.0, "b": 0.0, "tie": 0.5, "both_bad": 0.5}


@dataclass(frozen=True)
class Match:
    a: str
    b: str
    outcome: float  # for a: 1, 0.5 or 0


@dataclass(frozen=True)
class Rating:
    player: str
    rating: float
    lower: float
    upper: float
    elo: float
    games: int
    wins: float


def matches_from_picks(rows: Iterable[tuple[str, str, str]]) -> list[Match]:
    """(version_a, version_b, pick) rows -> matches; a version against itself carries no information."""
    out = []
    for a, b, pick in rows:
        if pick in OUTCOME_BY_PICK and a != b:
            out.append(Match(a, b, OUTCOME_BY_PICK[pick]))
    return out


def _tally(matches: Sequence[Match], index: dict[str, int]) -> np.ndarray:
    """wins[i, j] = how often i beat j (a tie counts half to each)."""
    k = len(index)
    wins = np.zeros((k, k))
    for m in matches:
        i, j = index[m.a], index[m.b]
        wins[i, j] += m.outcome
        wins[j, i] += 1 - m.outcome
    return wins


def fit_bradley_terry(wins: np.ndarray, *, prior_ties: float = 1.0, iters: int = 100) -> np.ndarray:
    """Log-strengths (mean 0) maximising the Bradley-Terry likelihood of a win matrix, by Newton's method.

    `prior_ties` virtual tied games between every two versions keep a version that won (or lost) every
    game finite and connect versions that never met; against hundreds of real picks they weigh nothing.
    """
    k = wins.shape[0]
    wins = wins + (np.ones((k, k)) - np.eye(k)) * prior_ties / 2
    l2 = 1e-6
    theta = np.zeros(k)
    games = wins + wins.T
    for _ in range(iters):
        diff = theta[:, None] - theta[None, :]
        p = 1 / (1 + np.exp(-diff))  # p[i, j] = P(i beats j)
        grad = (wins - games * p).sum(axis=1) - l2 * theta
        w = games * p * (1 - p)
        hess = -np.diag(w.sum(axis=1)) + w - l2 * np.eye(k)
        # the likelihood ignores a common shift: fix it with the mean-zero constraint (add a rank-one term)
        step = np.linalg.solve(hess - np.ones((k, k)) / k, grad)
        theta = theta - step
        theta -= theta.mean()
        if np.max(np.abs(step)) < 1e-9:
            break
    return theta


def online_elo(matches: Sequence[Match], *, k_factor: float = 16.0) -> dict[str, float]:
    """Elo updated match by match, in the order given (oldest first)."""
    elo: dict[str, float] = {}
    for m in matches:
        ra, rb = elo.setdefault(m.a, CENTER), elo.setdefault(m.b, CENTER)
        expected_a = 1 / (1 + 10 ** ((rb - ra) / 400))
        elo[m.a] = ra + k_factor * (m.outcome - expected_a)
        elo[m.b] = rb - k_factor * (m.outcome - expected_a)
    return elo


def rate(matches: Sequence[Match], *, players: Iterable[str] = (), rounds: int = 200, seed: int = 0,
         confidence: float = 0.95) -> list[Rating]:
    """Every player's Bradley-Terry rating (Elo scale, mean 1000) with a percentile bootstrap interval, best first.

    Each bootstrap round resamples the comparisons with replacement and refits.
    """
    names = sorted({*players, *(m.a for m in matches), *(m.b for m in matches)})
    if not names:
        return []
    index = {n: i for i, n in enumerate(names)}
    wins = _tally(matches, index)
    point = CENTER + SCALE * fit_bradley_terry(wins)
    lower, upper = point.copy(), point.copy()
    if matches and rounds > 0:
        rng = np.random.default_rng(seed)
        pairs = np.array([(index[m.a], index[m.b]) for m in matches])
        outcomes = np.array([m.outcome for m in matches])
        samples = np.empty((rounds, len(names)))
        k = len(names)
        for r in range(rounds):
            pick = rng.integers(0, len(matches), len(matches))
            w = np.zeros((k, k))
            np.add.at(w, (pairs[pick, 0], pairs[pick, 1]), outcomes[pick])
            np.add.at(w, (pairs[pick, 1], pairs[pick, 0]), 1 - outcomes[pick])
            samples[r] = CENTER + SCALE * fit_bradley_terry(w)
        tail = (1 - confidence) / 2 * 100
        lower, upper = np.percentile(samples, tail, axis=0), np.percentile(samples, 100 - tail, axis=0)
    elo = online_elo(matches)
    games = (wins + wins.T).sum(axis=1)
    ratings = [Rating(player=n, rating=float(point[i]), lower=float(lower[i]), upper=float(upper[i]),
                      elo=float(elo.get(n, CENTER)), games=round(games[i]), wins=float(wins[i].sum()))
               for n, i in index.items()]
    return sorted(ratings, key=lambda r: -r.rating)
