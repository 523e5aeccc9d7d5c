"""How simulated users give feedback: like people (sparse, noisy, mostly unpaired) or ideally (every reply).

Real users vote on few replies, sometimes press the wrong button, rarely ask for another answer, and show what they
think mostly by going on talking or not. `realistic` (the demo's default) simulates that; `ideal` is the old demo:
a vote on every reply, never wrong, 🔄 on every reply they dislike, no follow-ups.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from loopbot.base.errors import UsageError

MODES = ("realistic", "ideal")


@dataclass(frozen=True)
class Behaviour:
    vote_share: float = 0.2  # share of the replies a user reads that it votes on (and of arena rounds it picks in)
    flip_share: float = 0.1  # share of its votes (and picks) that say the opposite of what it thinks
    retry_share: float = 0.15  # share of the replies it dislikes that it presses 🔄 on
    follow_up_liked: float = 0.5  # chance it asks a follow-up question after a reply it liked ...
    follow_up_disliked: float = 0.15  # ... and after one it disliked

    def describe(self) -> str:
        return (f"votes on {self.vote_share:.0%} of replies, {self.flip_share:.0%} of votes flipped, 🔄 on "
                f"{self.retry_share:.0%} of disliked replies, follows up after {self.follow_up_liked:.0%} of liked "
                f"/ {self.follow_up_disliked:.0%} of disliked replies")


REALISTIC = Behaviour()
IDEAL = Behaviour(vote_share=1.0, flip_share=0.0, retry_share=1.0, follow_up_liked=0.0, follow_up_disliked=0.0)

OPTION_NAMES = {"vote_share": "--vote-share", "flip_share": "--flip-share", "retry_share": "--retry-share",
                "follow_up_liked": "--follow-up-liked", "follow_up_disliked": "--follow-up-disliked"}


def resolve(mode: str, **overrides: float | None) -> Behaviour:
    """The mode's behaviour with the options a user gave (None = the mode's value); each a share in [0, 1]."""
    if mode not in MODES:
        raise UsageError(f"--feedback {mode!r}: expected one of {', '.join(MODES)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    for key, value in given.items():
        if key not in OPTION_NAMES:
            raise TypeError(f"unknown behaviour {key!r}")
        if not 0.0 <= value <= 1.0:
            raise UsageError(f"{OPTION_NAMES[key]} {value:g}: a share between 0 and 1")
    return replace(REALISTIC if mode == "realistic" else IDEAL, **given)
