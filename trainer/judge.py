"""An LLM judge: which of two replies better fits the persona's rubric, asked in both orders to cancel position bias.

Speaks the chat-completions protocol that OpenAI-compatible servers (vLLM, llama.cpp, ...) and Mistral's API share:
POST {url}/chat/completions with a bearer key. `trainer.judge.url` includes the version prefix (".../v1").
"""

from __future__ import annotations

import logging
import os
import re

from loopbot.base.errors import UsageError
from loopbot.base.settings import JudgeSettings

log = logging.getLogger(__name__)
VERDICT = re.compile(r"\b(A|B|TIE)\b", re.IGNORECASE)

INSTRUCTIONS = """You compare two replies written by a chat persona and pick the better one.
Rubric: {rubric}
Answer with one word: A if reply A is better, B if reply B is better, TIE if they are equally good."""


def _render(messages: list[dict]) -> str:
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages if m["role"] != "system")


class PairwiseJudge:
    def __init__(self, settings: JudgeSettings, rubric: str, *, timeout_s: float = 60.0):
        if not settings.url:
            raise UsageError("trainer.judge.url is not set")
        self.url = settings.url.rstrip("/") + "/chat/completions"
        self.model = settings.model
        self.rubric = rubric or "Helpful, correct, natural replies that fit the persona."
        key = os.environ.get(settings.api_key_env) if settings.api_key_env else None
        if settings.api_key_env and not key:
            raise UsageError(f"trainer.judge.api_key_env = {settings.api_key_env!r}: that variable is not set")
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.timeout_s = timeout_s

    def verdict(self, client, prompt: list[dict], reply_a: str, reply_b: str) -> str:
        """'a', 'b' or 'tie' (an answer the judge did not phrase as one of those counts as a tie)."""
        body = {"model": self.model, "temperature": 0, "max_tokens": 8, "messages": [
            {"role": "system", "content": INSTRUCTIONS.format(rubric=self.rubric)},
            {"role": "user", "content": f"Conversation:\n{_render(prompt)}\n\nReply A:\n{reply_a}\n\n"
                                        f"Reply B:\n{reply_b}\n\nWhich reply is better: A, B or TIE?"}]}
        resp = client.post(self.url, json=body, headers=self.headers, timeout=self.timeout_s)
        resp.raise_for_status()
        text = resp.json()["choices"][0]["message"]["content"] or ""
        m = VERDICT.search(text)
        return m.group(1).lower() if m else "tie"

    def win_rate(self, prompts: list[list[dict]], candidate: list[str], live: list[str]) -> dict:
        """The candidate's share of wins (ties count half) over every prompt judged in both orders."""
        import httpx

        wins = ties = losses = 0
        with httpx.Client() as client:
            for prompt, cand, old in zip(prompts, candidate, live, strict=True):
                for order in ("candidate_first", "live_first"):
                    a, b = (cand, old) if order == "candidate_first" else (old, cand)
                    v = self.verdict(client, prompt, a, b)
                    if v == "tie":
                        ties += 1
                    elif (v == "a") == (order == "candidate_first"):
                        wins += 1
                    else:
                        losses += 1
        total = wins + ties + losses
        return {"win_rate": round((wins + ties / 2) / total, 4) if total else None, "wins": wins, "ties": ties,
                "losses": losses, "judgements": total}
