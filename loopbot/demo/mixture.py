"""A population of simulated users: a mixture of tastes with weights; each user draws one taste and keeps it.

    --users "mentions_recovery:0.7,punchy_opening:0.3"    # 70% of users like recovery advice, 30% short openings
    --users mypackage.tastes:likes                        # one taste for everyone (weight 1)
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from loopbot.base.errors import UsageError
from loopbot.demo.population import Preference, load_preference


@dataclass(frozen=True)
class Taste:
    name: str  # module:function
    likes: Preference
    weight: float

    @property
    def short(self) -> str:
        return self.name.rpartition(":")[2]


@dataclass(frozen=True)
class Population:
    tastes: tuple[Taste, ...]

    @property
    def spec(self) -> str:
        if len(self.tastes) == 1:
            return self.tastes[0].name
        return ",".join(f"{t.name}:{t.weight:g}" for t in self.tastes)

    @property
    def label(self) -> str:
        """Short, for titles: `mentions_recovery 0.7 + punchy_opening 0.3`."""
        if len(self.tastes) == 1:
            return self.tastes[0].short
        return " + ".join(f"{t.short} {t.weight:g}" for t in self.tastes)

    def assign(self, users: int, seed: int) -> list[Taste]:
        """Each of `users` simulated users draws one taste by weight (seeded: the same people in every round)."""
        rng = random.Random(f"tastes:{seed}")
        weights = [t.weight for t in self.tastes]
        return [rng.choices(self.tastes, weights)[0] for _ in range(users)]


def _split_weight(item: str) -> tuple[str, float]:
    head, sep, tail = item.rpartition(":")
    if sep:
        try:
            return head, float(tail)
        except ValueError:
            pass
    return item, 1.0


def load_population(spec: str | None) -> Population:
    """`taste[:weight],taste[:weight],...` (each taste as `--users` takes it) -> a Population; clear errors."""
    if not spec:
        name, likes = load_preference(None)
        return Population((Taste(name, likes, 1.0),))
    tastes = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            raise UsageError(f"--users {spec!r}: an empty taste between commas")
        taste, weight = _split_weight(item)
        if weight <= 0:
            raise UsageError(f"--users {spec!r}: the weight of {taste!r} must be above 0, got {weight:g}")
        name, likes = load_preference(taste)
        tastes.append(Taste(name, likes, weight))
    if len({t.name for t in tastes}) < len(tastes):
        raise UsageError(f"--users {spec!r}: a taste is named twice")
    total = sum(t.weight for t in tastes)
    return Population(tuple(Taste(t.name, t.likes, t.weight / total) for t in tastes))
