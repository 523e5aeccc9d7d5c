"""Evaluate a candidate adapter against the live one (and the base model) on a dataset's held-out split.

Everything runs in one process on one base model: adapters are switched with `set_adapter` and the base is
reached with `disable_adapter()`. Figures: token-weighted perplexity on held-out liked replies (the reply's tokens
only), preference accuracy on held-out pairs, degeneracy of generated replies, a smoke test, and optionally an
LLM judge's pairwise win rate. `write_report` saves the report as JSON plus a PNG of the figures and curves.
"""

from __future__ import annotations

import json
import logging
import math
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

from loopbot.base.settings import Settings
from loopbot.trainer.base_model import load_with_adapters
from loopbot.trainer.degeneracy import degeneracy_figures
from loopbot.trainer.heldout_feedback import (
    heldout_kto_sources,
    heldout_sources,
    labelled_feedback,
    split_heldout_kto,
)
from loopbot.trainer.judge import PairwiseJudge
from loopbot.trainer.train import dataset_rows

log = logging.getLogger(__name__)
SMOKE_TOKENS = 32


class _Scorer:
    """Log-probabilities and greedy replies from one base model with its adapters."""

    def __init__(self, base_model: Path, adapters: dict[str, str], max_length: int):
        import torch

        self.torch = torch
        self.tok, self.model = load_with_adapters(base_model, adapters)
        self.max_length = max_length

    @contextmanager
    def using(self, adapter: str | None):
        """Run the block with `adapter` active, or with every adapter off (the base model) for None."""
        if adapter is None:
            ctx = self.model.disable_adapter() if hasattr(self.model, "disable_adapter") else nullcontext()
            with ctx:
                yield
        else:
            self.model.set_adapter(adapter)
            yield

    def _ids(self, messages: list[dict], **kw) -> list[int]:
        out = self.tok.apply_chat_template(messages, tokenize=True, return_dict=True, **kw)
        return list(out["input_ids"])

    def completion_logprobs(self, items: list[tuple[list[dict], list[dict]]], batch_size: int = 8
                            ) -> list[tuple[float, int]]:
        """(sum of log-probabilities, tokens) of each completion's tokens given its prompt, `batch_size` sequences
        per forward pass (right-padded: the real tokens keep positions 0..n-1, the padding is masked out)."""
        torch = self.torch
        seqs = []
        for prompt, completion in items:
            start = len(self._ids(prompt, add_generation_prompt=True))
            full = self._ids(prompt + completion)[: self.max_length]
            seqs.append((full, start))
        out: list[tuple[float, int]] = [(0.0, 0)] * len(seqs)
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i][0]))  # similar lengths share a batch
        for b in range(0, len(order), batch_size):
            chunk = order[b:b + batch_size]
            width = max(len(seqs[i][0]) for i in chunk)
            pad = self.tok.pad_token_id
            x = torch.tensor([seqs[i][0] + [pad] * (width - len(seqs[i][0])) for i in chunk])
            mask = torch.tensor([[1] * len(seqs[i][0]) + [0] * (width - len(seqs[i][0])) for i in chunk])
            with torch.no_grad():
                logits = self.model(input_ids=x, attention_mask=mask).logits[:, :-1].float()
                lp = torch.log_softmax(logits, dim=-1).gather(2, x[:, 1:].unsqueeze(2)).squeeze(2)
            for row, i in enumerate(chunk):
                ids, start = seqs[i]
                scored = lp[row, start - 1:len(ids) - 1]
                out[i] = (float(scored.sum()), int(scored.numel()))
        return out

    def completion_logprob(self, prompt: list[dict], completion: list[dict]) -> tuple[float, int]:
        """(sum of log-probabilities, tokens) of the completion's tokens given the prompt."""
        return self.completion_logprobs([(prompt, completion)])[0]

    def reply_nll(self, messages: list[dict]) -> tuple[float, int]:
        """(total NLL, tokens) of the conversation's last (assistant) message given the rest; works with any chat
        template (SmolLM2's has no {% generation %} markers for an assistant-token mask)."""
        logprob, tokens = self.completion_logprob(messages[:-1], messages[-1:])
        return -logprob, tokens

    def generate(self, prompts: list[list[dict]], max_new_tokens: int, batch_size: int = 8, *,
                 sampling=None, seed: int = 0) -> list[tuple[str, str]]:
        """Replies as (text, finish_reason): "stop" when the model ended its turn, "length" if cut off. Greedy, or
        sampled with `sampling` (a persona's SamplingSettings: temperature, top_p, repetition_penalty) from `seed`,
        so that two versions answer with the same random draws."""
        torch = self.torch
        decoding = {"do_sample": False}
        if sampling is not None and sampling.temperature > 0:
            decoding = {"do_sample": True, "temperature": sampling.temperature, "top_p": sampling.top_p,
                        "repetition_penalty": sampling.repetition_penalty}
            torch.manual_seed(seed)
        self.tok.padding_side = "left"
        eos = self.model.generation_config.eos_token_id if hasattr(self.model, "generation_config") else None
        eos_ids = set(eos if isinstance(eos, list) else [eos or self.tok.eos_token_id])
        results: list[tuple[str, str]] = []
        for i in range(0, len(prompts), batch_size):
            texts = [self.tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
                     for p in prompts[i:i + batch_size]]
            enc = self.tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.no_grad():
                out = self.model.generate(**enc, max_new_tokens=max_new_tokens, pad_token_id=self.tok.pad_token_id,
                                          **decoding)
            for row in out[:, enc["input_ids"].shape[1]:].tolist():
                ended = next((j for j, t in enumerate(row) if t in eos_ids), None)
                body = row if ended is None else row[:ended]
                body = [t for t in body if t != self.tok.pad_token_id]
                results.append((self.tok.decode(body, skip_special_tokens=True).strip(),
                                "length" if ended is None else "stop"))
        return results


def _heldout(dataset_dir: Path) -> dict[str, list[dict]]:
    return {k: dataset_rows(dataset_dir / f"heldout_{k}.jsonl") for k in ("sft", "dpo", "kto")}


def source_group(source: str) -> str:
    """"corpus" for the persona's seed corpus (imported examples), "liked" for what users liked."""
    return "corpus" if source.startswith("seed:") else "liked"


def perplexity_by_source(groups: list[str], scores: list[tuple[float, int]]) -> dict[str, dict]:
    """{group: {perplexity, tokens, replies}}: token-weighted perplexity of each source's held-out replies."""
    out: dict[str, dict] = {}
    for group in dict.fromkeys(groups):
        mine = [sc for g, sc in zip(groups, scores, strict=True) if g == group]
        tokens = sum(n for _, n in mine)
        out[group] = {"perplexity": round(math.exp(-sum(lp for lp, _ in mine) / tokens), 4) if tokens else None,
                      "tokens": int(tokens), "replies": len(mine)}
    return out


def corpus_replies(held_sft: list[dict], groups: list[str] | None) -> list[str]:
    """The held-out seed corpus' replies (the last assistant turn of each of its held-out SFT rows)."""
    if groups is None:
        return []
    return [r["messages"][-1]["content"] for r, g in zip(held_sft, groups, strict=True)
            if g == "corpus" and r["messages"] and r["messages"][-1]["role"] == "assistant"]


def heldout_prompts(held: dict[str, list[dict]], limit: int) -> list[list[dict]]:
    """Distinct held-out prompts (the conversation up to the reply), in file order."""
    seen, out = set(), []
    candidates = [r["prompt"] for r in held["dpo"]] + [r["prompt"] for r in held["kto"]] + \
                 [r["messages"][:-1] for r in held["sft"] if r["messages"] and r["messages"][-1]["role"] == "assistant"]
    for p in candidates:
        key = json.dumps(p, sort_keys=True)
        if p and key not in seen:
            seen.add(key)
            out.append(p)
    return out[:limit]


def _key(prompt: list[dict], completion: list[dict]) -> str:
    return json.dumps([prompt, completion], sort_keys=True)


def _score_once(scorer: _Scorer, items: list[tuple[list[dict], list[dict]]]) -> list[tuple[float, int]]:
    """The scores of `items`, in order, each distinct (prompt, completion) scored once (a held-out pair's sides
    are held-out votes too)."""
    keys = [_key(pr, c) for pr, c in items]
    distinct = dict(zip(keys, items, strict=True))
    scores = dict(zip(distinct, scorer.completion_logprobs(list(distinct.values())), strict=True))
    return [scores[k] for k in keys]


def _per_token(logprob_and_tokens: tuple[float, int]) -> float:
    logprob, tokens = logprob_and_tokens
    return logprob / max(tokens, 1)


def vote_auc(liked: list[bool], candidate: list[float], live: list[float]) -> dict:
    """How the candidate moved away from the live version on held-out votes: each reply's score is its per-token
    log-probability under the candidate minus under live (DPO's implicit reward, length-normalised), and `auc` is
    the chance that a liked reply scored higher than a disliked one (ties count half). 0.5 = no change in what
    users prefer; 1.0 = every liked reply gained against every disliked one. Unlike pair accuracy it uses every
    held-out vote, not only the few pairs, and it measures the change, not the live version's own bias."""
    scores = [c - v for c, v in zip(candidate, live, strict=True)]
    good = [s for s, ok in zip(scores, liked, strict=False) if ok]
    bad = [s for s, ok in zip(scores, liked, strict=False) if not ok]
    out = {"liked": len(good), "disliked": len(bad), "auc": None, "se": None, "liked_gain": None,
           "disliked_gain": None}
    if good and bad:
        wins = sum(1.0 if g > b else 0.5 if g == b else 0.0 for g in good for b in bad)
        auc = wins / (len(good) * len(bad))
        out.update(auc=round(auc, 4), se=round(auc_standard_error(auc, len(good), len(bad)), 4),
                   liked_gain=round(sum(good) / len(good), 4), disliked_gain=round(sum(bad) / len(bad), 4))
    return out


def auc_standard_error(auc: float, n_liked: int, n_disliked: int) -> float:
    """The AUC's standard error by Hanley & McNeil (1982), from the AUC and the two group sizes."""
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (n_liked - 1) * (q1 - auc * auc) + (n_disliked - 1) * (q2 - auc * auc)) \
        / (n_liked * n_disliked)
    return math.sqrt(max(var, 0.0))


def evaluate_candidate(settings: Settings, persona: str, *, dataset_dir: Path, base_model: Path,
                       candidate_path: str, live_path: str | None, candidate_name: str = "candidate",
                       live_name: str | None = None) -> dict:
    """The evaluation report (a dict) of candidate vs live (the base model when nothing is live) and base."""
    import torch

    torch.manual_seed(settings.trainer.seed)
    t0 = time.monotonic()
    p = settings.persona(persona)
    held = _heldout(Path(dataset_dir))
    kto_sources = heldout_kto_sources(Path(dataset_dir), len(held["kto"]))
    kto_votes, _ = split_heldout_kto(held["kto"], kto_sources)
    adapters = {"candidate": candidate_path, **({"live": live_path} if live_path else {})}
    scorer = _Scorer(base_model, adapters, settings.trainer.max_length)
    variants = {"candidate": "candidate", "live": "live" if live_path else None, "base": None}
    liked = held["sft"] or [{"messages": r["prompt"] + r["completion"]} for r in kto_votes if r["label"]]
    sources = heldout_sources(Path(dataset_dir), "sft", len(held["sft"])) if held["sft"] else None
    groups = [source_group(x) for x in sources] if sources is not None else \
        (None if held["sft"] else ["liked"] * len(liked))
    prompts = heldout_prompts(held, settings.trainer.judge.prompts)
    system = [{"role": "system", "content": p.system_prompt}] if p.system_prompt else []
    report: dict = {"persona": persona, "candidate": candidate_name, "live": live_name, "dataset": str(dataset_dir),
                    "heldout": {k: len(v) for k, v in held.items()}, "prompts": len(prompts), "variants": {},
                    "first_version": live_path is None}
    corpus = corpus_replies(held["sft"], groups)
    if corpus:  # the corpus' own replies: the degeneracy band of a first version trained on it
        report["corpus"] = {"replies": len(corpus), "degeneracy": degeneracy_figures(corpus, ["stop"] * len(corpus))}
    replies: dict[str, list[tuple[str, str]]] = {}
    votes, signals = labelled_feedback(held["kto"], held["dpo"], kto_sources)
    vote_logprobs: dict[str, list[float]] = {}
    served = p.sampling if settings.trainer.gate.degeneracy_decoding == "served" else None
    for label, adapter in variants.items():
        if label == "base" and not live_path:
            report["variants"]["base"] = report["variants"]["live"]
            continue
        with scorer.using(adapter):
            items = [(r["messages"][:-1], r["messages"][-1:]) for r in liked]
            items += [(r["prompt"], r[side]) for r in held["dpo"] for side in ("chosen", "rejected")]
            if label != "base":
                items += [(pr, c) for pr, c, _ in votes + signals]
            scores = _score_once(scorer, items)
            replies_nll, pair_sides = scores[:len(liked)], scores[len(liked):len(liked) + 2 * len(held["dpo"])]
            nll, tokens = -sum(lp for lp, _ in replies_nll), sum(n for _, n in replies_nll)
            margins = [pair_sides[i][0] - pair_sides[i + 1][0] for i in range(0, len(pair_sides), 2)]
            correct = sum(m > 0 for m in margins)
            figures = {
                "perplexity": round(math.exp(nll / tokens), 4) if tokens else None,
                "perplexity_tokens": int(tokens),
                "preference_accuracy": round(correct / len(held["dpo"]), 4) if held["dpo"] else None,
                "preference_margin": round(sum(margins) / len(margins), 4) if margins else None,
                "pairs": len(held["dpo"]),
            }
            if groups is not None and liked:
                figures["perplexity_by_source"] = perplexity_by_source(groups, replies_nll)
            if label != "base":
                vote_logprobs[label] = [_per_token(v) for v in scores[len(liked) + len(pair_sides):]]
                replies[label] = scorer.generate(prompts, p.sampling.max_tokens, sampling=served,
                                                 seed=settings.trainer.seed)
                figures["degeneracy"] = degeneracy_figures([r for r, _ in replies[label]],
                                                           [f for _, f in replies[label]])
        report["variants"][label] = figures
    cand_scores, live_scores = vote_logprobs.get("candidate", []), vote_logprobs.get("live", [])
    n = len(votes)
    report["votes"] = vote_auc([liked for _, _, liked in votes], cand_scores[:n], live_scores[:n])
    report["signals"] = vote_auc([liked for _, _, liked in signals], cand_scores[n:], live_scores[n:])
    with scorer.using("candidate"):
        smoke = []
        for q in p.smoke_prompts:
            try:
                (text, _), = scorer.generate([[*system, {"role": "user", "content": q}]], SMOKE_TOKENS)
                smoke.append({"prompt": q, "reply": text, "ok": bool(text.strip())})
            except Exception as e:
                smoke.append({"prompt": q, "error": f"{type(e).__name__}: {e}", "ok": False})
    report["smoke"] = smoke
    report["samples"] = [{"prompt": pr[-1]["content"], "candidate": c[0], "live": lv[0]}
                         for pr, c, lv in list(zip(prompts, replies["candidate"], replies["live"], strict=True))[:5]]
    report["judge"] = _judge(settings, persona, prompts, replies)
    report["training"] = _training_curves(candidate_path)
    report["seconds"] = round(time.monotonic() - t0, 2)
    return report


def _judge(settings: Settings, persona: str, prompts, replies) -> dict | None:
    if not settings.trainer.judge.url or not prompts:
        return None

    judge = PairwiseJudge(settings.trainer.judge, settings.persona(persona).judge_rubric)
    try:
        return judge.win_rate(prompts, [r for r, _ in replies["candidate"]], [r for r, _ in replies["live"]])
    except Exception as e:
        log.warning("judge failed: %s", e)
        return {"error": f"{type(e).__name__}: {e}", "win_rate": None}


def _training_curves(candidate_path: str) -> dict:
    path = Path(candidate_path) / "training.json"
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return {s["stage"]: s.get("losses", []) for s in data.get("stages", []) if not s.get("skipped")}


def write_report(report: dict, settings: Settings, persona: str, name: str) -> tuple[Path, Path]:
    """Save `<reports_dir>/<persona>/<name>.json` and `.png`; returns both paths."""
    out = settings.reports_dir / persona
    out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out / f"{name}.json", out / f"{name}.png"
    json_path.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    _plot(report, png_path)
    return json_path, png_path


def _plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = report["variants"]
    labels = [v for v in ("base", "live", "candidate") if v in variants]
    panels = [("perplexity", "held-out perplexity (lower is better)"),
              ("preference_accuracy", "preference accuracy (higher is better)")]
    deg_keys = ["words_per_reply", "cutoff_rate", "repeated_ngram_rate", "symbols_per_word"]
    fig, axes = plt.subplots(1, 4, figsize=(17, 4))
    for ax, (key, title) in zip(axes, panels, strict=False):
        vals = [variants[v].get(key) or 0 for v in labels]
        ax.bar(labels, vals, color=["#999", "#4a7", "#37c"][-len(labels):])
        ax.set_title(title, fontsize=9)
    ax = axes[2]
    width = 0.38
    for i, v in enumerate(("live", "candidate")):
        deg = variants.get(v, {}).get("degeneracy") or {}
        ax.bar([x + i * width for x in range(len(deg_keys))], [deg.get(k, 0) for k in deg_keys], width, label=v)
    ax.set_xticks([x + width / 2 for x in range(len(deg_keys))], [k.replace("_", "\n") for k in deg_keys], fontsize=7)
    ax.set_title("degeneracy (live vs candidate)", fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[3]
    for stage, losses in (report.get("training") or {}).items():
        ax.plot(range(1, len(losses) + 1), losses, label=stage)
    ax.set_title("training loss per step", fontsize=9)
    ax.set_xlabel("step")
    if report.get("training"):
        ax.legend(fontsize=7)
    gate = report.get("gate")
    verdict = "" if not gate else (" - PROMOTE" if gate["passed"] else " - REJECT: " + ", ".join(gate["failed"]))
    fig.suptitle(f"{report['persona']}: {report['candidate']} vs {report.get('live') or 'base'}{verdict}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
