"""Turn imported examples and consented feedback into SFT / DPO / KTO datasets in trl's formats.

Files written under `<data_dir>/datasets/<persona>/<build id>/`:
  sft.jsonl   {"messages": [...]}
  dpo.jsonl   {"prompt": [...], "chosen": [{"role": "assistant", ...}], "rejected": [...]}
  kto.jsonl   {"prompt": [...], "completion": [{"role": "assistant", ...}], "label": true|false}
  heldout_sft.jsonl, heldout_dpo.jsonl, heldout_kto.jsonl (the same, for the held-out conversations)
  heldout_*.jsonl.sources (each held-out row's source, one a line: the evaluation's per-source perplexity)
  manifest.json (counts, sources, rows per feedback signal, replayed seed rows, dropped and why, feedback id
                 range, KTO balance, content hash)

Signals (docs/feedback-signals.md): votes, arena picks, 🔄 retries, and, for replies nobody voted on, a 🔄 that
replaced them (undesirable) or a message that answered them (desirable, a weaker signal).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import Engine

from loopbot.base.errors import UsageError
from loopbot.base.tokens import TokenCounter, estimate_tokens
from loopbot.storage import crud
from loopbot.storage.crud.dataset_rows import (
    Snapshot,
    arena_picks,
    generations_by_id,
    retry_links,
    take_snapshot,
    unconsented_conversations,
    voted_generations,
)
from loopbot.trainer.cleaning import Deduper, finished_part, fit_prompt, message_tokens, scrub_pii
from loopbot.trainer.implicit_signals import add_implicit_rows, signal_counts
from loopbot.trainer.splits import conversation_key, heldout_score, is_heldout

KINDS = ("sft", "dpo", "kto")
FILES = KINDS + tuple(f"heldout_{k}" for k in KINDS)
MAX_PAIRS_PER_PROMPT = 4
SOURCES_SUFFIX = ".sources"  # beside each held-out file: the source of each row, one a line (for the evaluation)
BUILD_EVENT = "dataset_build"
FORGET_EVENT = "forget"  # a /forget (storage.crud.forget_user) that ran while a build read the database
BUILD_ATTEMPTS = 3


@dataclass
class DatasetBuild:
    """One dataset build: where its files are and what is in them."""

    persona: str
    build_id: str
    out_dir: Path | None
    paths: dict[str, Path]
    counts: dict[str, int]
    manifest: dict = field(default_factory=dict)


def build_datasets(engine: Engine, settings, persona: str, out_dir: str | Path | None = None, *,
                   count_tokens: TokenCounter | None = None, tokenizer_name: str | None = None,
                   write: bool = True, since: dict | None = None, record: bool = True,
                   augment: Callable | None = None, _attempt: int = 1) -> DatasetBuild:
    """Build the persona's datasets from the database. `count_tokens` measures text in the persona's tokens
    (default: a cheap estimate). `write=False` counts what a build would hold without writing anything.

    `since` (the manifest of the build the live version was trained on) keeps only what came after it: votes,
    arena picks and retries newer than that build, for a cycle that continues the live version. The seed corpus'
    training examples are left out then (the live version learnt them); its held-out ones stay for evaluation.
    `record=False` leaves no dataset_build event (a reward model's own build). `augment(engine, persona, snap, sink,
    excluded, nets)` adds rows last (the reward model's pairs and labels, `trainer.reward_pairs`).

    A /forget that runs while the build reads the database may leave the forgotten texts in what it read: such a
    build is thrown away and made again (up to BUILD_ATTEMPTS times) before its files become visible."""
    persona_cfg = settings.persona(persona)
    forgets = crud.last_event_id(engine, kind=FORGET_EVENT)
    cfg = settings.trainer.dataset
    snap = take_snapshot(engine, since=since)
    created = datetime.now(UTC)
    staging = None
    if write and out_dir and Path(out_dir).exists() and any(Path(out_dir).iterdir()):
        raise UsageError(f"{out_dir} already exists and is not empty: choose a new directory for the build")
    if write:
        root = Path(out_dir) if out_dir else settings.datasets_dir / persona
        root.mkdir(parents=True, exist_ok=True)
        staging = (Path(out_dir).parent if out_dir else root) / f".building-{uuid.uuid4().hex[:8]}"
        staging.mkdir(parents=True)
    sink = _Sink(staging, cfg, count_tokens or estimate_tokens, persona_cfg.system_prompt)
    try:
        _add_seed_examples(engine, persona, sink, heldout_only=since is not None,
                           replay_fraction=cfg.replay_seed_fraction if since is not None else 0.0,
                           replay_salt=str((since or {}).get("build_id") or ""))
        excluded = unconsented_conversations(engine)
        history = since is not None and cfg.heldout_history
        if history:
            sink.splits = ("train",)  # the held-out split comes from the whole history, below
        nets, by_prompt, fids, liked_cut, trimmed = _add_voted_replies(engine, persona, snap, cfg.heldout_fraction,
                                                                       sink, excluded)
        signals = settings.trainer.signals
        pairs = _preference_pairs(engine, persona, snap, nets, by_prompt, liked_cut,
                                  retries=signals.retry_pairs)
        _add_pairs(engine, pairs, cfg.heldout_fraction, sink, excluded, trimmed)
        if history:
            _add_heldout_history(engine, persona, snap, cfg.heldout_fraction, sink, excluded, signals.retry_pairs)
            sink.splits = ("train",)  # the held-out implicit rows come from every round, below
        add_implicit_rows(engine, persona, snap, signals, sink, excluded, fraction=cfg.heldout_fraction,
                          unusable=unusable_reason)
        sink.splits = ("train", "heldout")
        if history:
            _add_heldout_signals_history(engine, persona, snap, signals, cfg.heldout_fraction, sink, excluded)
        if augment is not None:
            augment(engine, persona, snap, sink, excluded, nets)
    except BaseException:
        sink.close()
        if staging:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    sink.close()
    content_hash = sink.content_hash()
    build_id = f"{created:%Y%m%dT%H%M%SZ}-{content_hash[:8]}"
    manifest = {
        "build_id": build_id,
        "persona": persona,
        "created_at": created.isoformat(),
        "base_model": persona_cfg.base_model,
        "counts": dict(sink.counts),
        "sources": {k: dict(v) for k, v in sink.sources.items()},
        "signals": signal_counts(sink),
        "replay_rows": sink.replay_rows,
        "dropped": dict(sorted(sink.dropped.items())),
        "notes": dict(sorted(sink.notes.items())),
        "kto_balance": sink.kto_balance(),
        "feedback_id_range": [min(fids), max(fids)] if fids else None,
        "feedback_id_max": snap.feedback_id_max,
        "comparison_id_max": snap.comparison_id_max,
        "generation_id_max": snap.generation_id_max,
        "since": {"build_id": since.get("build_id"), "feedback_id": snap.feedback_id_min,
                  "comparison_id": snap.comparison_id_min, "generation_id": snap.generation_id_min}
        if since is not None else None,
        "tokenizer": tokenizer_name or ("estimate" if count_tokens is None else "custom"),
        "settings": cfg.model_dump(),
        "files": {name: f"{name}.jsonl" for name in FILES},
        "source_files": {name: f"{name}{SOURCES_SUFFIX}" for name in FILES if name.startswith("heldout_")},
        "content_hash": content_hash,
    }
    if not write:
        return DatasetBuild(persona, build_id, None, {}, dict(sink.counts), manifest)
    final = Path(out_dir) if out_dir else settings.datasets_dir / persona / build_id
    if not out_dir and final.exists():  # the same content built within the same second
        final = final.with_name(f"{final.name}-{uuid.uuid4().hex[:4]}")
        manifest["build_id"] = build_id = final.name
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", "utf-8")
    if crud.last_event_id(engine, kind=FORGET_EVENT) != forgets:
        shutil.rmtree(staging, ignore_errors=True)
        if _attempt >= BUILD_ATTEMPTS:
            raise UsageError(f"users asked to be forgotten during {BUILD_ATTEMPTS} builds of {persona}'s dataset in a "
                             "row: build it again")
        return build_datasets(engine, settings, persona, out_dir, count_tokens=count_tokens,
                              tokenizer_name=tokenizer_name, write=write, since=since, record=record,
                              augment=augment, _attempt=_attempt + 1)
    if final.exists():
        final.rmdir()
    os.replace(staging, final)
    paths = {name: final / f"{name}.jsonl" for name in FILES}
    if record:
        _record_build(engine, persona, final, manifest)
    return DatasetBuild(persona, build_id, final, paths, dict(sink.counts), manifest)


def _record_build(engine: Engine, persona: str, path: Path, manifest: dict) -> None:
    crud.record_event(engine, kind=BUILD_EVENT, persona=persona,
                      data={"build_id": manifest["build_id"], "path": str(path), "counts": manifest["counts"],
                            "feedback_id_max": manifest["feedback_id_max"],
                            "content_hash": manifest["content_hash"]})


def replayed(example_id: int, fraction: float, salt: str) -> bool:
    """Whether a seed training example is replayed in a cycle that continues the live version: a stable draw per
    example and per starting build (`salt`), true for about `fraction` of the examples; each new build the live
    version came from draws another share, so successive cycles replay different parts of the corpus."""
    return fraction > 0 and heldout_score(f"replay:{salt}:{example_id}") < fraction


def _add_seed_examples(engine: Engine, persona: str, sink: _Sink, *, heldout_only: bool = False,
                       replay_fraction: float = 0.0, replay_salt: str = "") -> None:
    """The persona's seed examples. `heldout_only` (a cycle continuing the live version, which learnt the corpus):
    only the held-out ones, plus the replay share (`replay_fraction`) of the SFT training examples, mixed in so
    that training on users' feedback does not drift the persona away from its corpus."""
    for ex in crud.list_seed_examples(engine, persona=persona):
        heldout = ex.split != "train"
        replay = False
        if heldout_only and not heldout:
            replay = ex.kind == "sft" and replayed(ex.id, replay_fraction, replay_salt)
            if not replay:
                sink.note("seed_train_examples_in_live")
                continue
        source = f"seed:{ex.source}"
        data = ex.data
        if ex.kind == "sft":
            before = sink.counts["sft"]
            sink.add_sft(data["messages"][:-1], data["messages"][-1], heldout, source)
            if replay and sink.counts["sft"] > before:
                sink.replay_rows += 1
        elif ex.kind == "dpo":
            sink.add_dpo(data["prompt"], data["chosen"], data["rejected"], heldout, source)
        elif ex.kind == "kto":
            sink.add_kto(data["prompt"], data["completion"], bool(data["label"]), heldout, source)


def unusable_reason(status: str, finish_reason: str | None, text: str | None) -> str | None:
    """Why a reply can never be a training example (errored, cut off, unfinished, empty), or None."""
    if status == "error":
        return "error"
    if status == "cut_off" or finish_reason == "length":
        return "cut_off"
    if status != "ok":
        return f"status_{status}"
    if not (text or "").strip():
        return "empty_reply"
    return None


def _add_voted_replies(engine: Engine, persona: str, snap: Snapshot, fraction: float, sink: _Sink,
                       excluded: set[tuple[int, str]]):
    """SFT (net 👍, no 👎) and KTO (every voted reply, label = net 👍) in one streamed pass; returns the votes
    per reply, the replies per prompt message (for the preference pairs), the feedback id range and the cut-off
    replies someone did not dislike (never the rejected side of a pair: nobody said they were worse).

    A reply cut off at the token limit is unfinished: it is never SFT, a 👍 KTO example or a pair's chosen side
    as it stands. Liked, its complete sentences are (`trim_cut_off_liked`; returned as `trimmed`: id -> text).
    Net 👎 on it is still a real signal: a 👎 KTO example and a rejected side, as its complete sentences too when
    it has some (in `trimmed` as well), else as it was read."""
    nets: dict[int, int] = {}
    by_prompt: dict[int, list[int]] = defaultdict(list)
    liked_cut: set[int] = set()
    trimmed: dict[int, str] = {}
    trim = sink.cfg.trim_cut_off_liked
    fids: list[int] = []
    fmin = fmax = None
    for gid, prompt, status, finish, pmid, chat_id, text, conv, ups, downs, lo, hi in \
            voted_generations(engine, persona=persona, snap=snap):
        if (chat_id, conv) in excluded:
            sink.drop("conversation_not_consented")
            continue
        fmin = lo if fmin is None else min(fmin, lo)
        fmax = hi if fmax is None else max(fmax, hi)
        reason = unusable_reason(status, finish, text)
        net = ups - downs
        source = "feedback"
        if reason == "cut_off" and (text or "").strip() and net < 0:
            # a disliked unfinished reply: 👎 KTO and a possible rejected side (never SFT: it has a 👎), trimmed
            # as a liked one is, so that "short" is not what tells liked rows from disliked ones (kept whole,
            # a realistic cycle's candidate learned 24-word replies against live's 51 and was rejected)
            reason, source = None, "feedback_cut_off"
            if trim and (head := finished_part(text)):
                text = trimmed[gid] = head
                sink.note("cut_off_disliked_trimmed")
        elif reason == "cut_off" and net > 0 and trim and (head := finished_part(text)):
            # liked, but unfinished: what the user liked is what they read, so its complete sentences are
            # trained on as a finished reply (SFT, 👍 KTO, a pair's chosen side); the unfinished tail is dropped
            text, reason = head, None
            trimmed[gid] = head
            sink.note("cut_off_liked_trimmed")
        elif reason:
            if reason == "cut_off":
                liked_cut.add(gid)
            sink.drop(reason)
            continue
        heldout = is_heldout(conversation_key(chat_id=chat_id, conversation_id=conv), fraction)
        reply = {"role": "assistant", "content": text}
        if ups > 0 and downs == 0:
            sink.add_sft(prompt, reply, heldout, "feedback")
        if net == 0:
            sink.drop("kto_tied_votes")
            continue
        nets[gid] = net
        if sink.add_kto(prompt, [reply], net > 0, heldout, source):
            sink.voted_rows.add(gid)
        if pmid is not None:
            by_prompt[pmid].append(gid)
    if fmin is not None:
        fids = [fmin, fmax]
    return nets, by_prompt, fids, liked_cut, trimmed


def _add_heldout_signals_history(engine: Engine, persona: str, snap: Snapshot, signals, fraction: float,
                                 sink: _Sink, excluded: set[tuple[int, str]]) -> None:
    """The held-out implicit rows of every round up to `snap`, as `_add_heldout_history` does for votes (a
    continuing build's own window trained, and wrote no held-out rows: its split is ("train",) then)."""
    counts, dropped, notes = sink.counts["heldout_kto"], sink.dropped.copy(), sink.notes.copy()
    sink.splits = ("heldout",)
    add_implicit_rows(engine, persona, snap, signals, sink, excluded, fraction=fraction, unusable=unusable_reason,
                      whole_history=True)
    sink.dropped, sink.notes, sink.splits = dropped, notes, ("train", "heldout")
    if sink.counts["heldout_kto"] > counts:
        sink.note("heldout_signals_from_all_rounds", sink.counts["heldout_kto"] - counts)


def _add_heldout_history(engine: Engine, persona: str, snap: Snapshot, fraction: float, sink: _Sink,
                         excluded: set[tuple[int, str]], retries: bool) -> None:
    """The held-out votes and pairs of every round up to `snap` (a continuing build's own window, `snap`, trains
    only): held-out conversations were never trained on by any version, so all of them are evidence for the gate.
    What this pass drops or notes is not counted again: the training pass counted its own window."""
    whole = replace(snap, feedback_id_min=0, comparison_id_min=0, generation_id_min=0)
    counts = sink.counts["heldout_kto"] + sink.counts["heldout_dpo"] + sink.counts["heldout_sft"]
    sink.splits = ("heldout",)
    dropped, notes = sink.dropped.copy(), sink.notes.copy()
    nets, by_prompt, _fids, liked_cut, trimmed = _add_voted_replies(engine, persona, whole, fraction, sink, excluded)
    _add_pairs(engine, _preference_pairs(engine, persona, whole, nets, by_prompt, liked_cut, retries=retries),
               fraction, sink, excluded, trimmed)
    sink.dropped, sink.notes, sink.splits = dropped, notes, ("train", "heldout")
    added = sink.counts["heldout_kto"] + sink.counts["heldout_dpo"] + sink.counts["heldout_sft"] - counts
    if added:
        sink.note("heldout_rows_from_all_rounds", added)


def _preference_pairs(engine: Engine, persona: str, snap: Snapshot, nets: dict[int, int],
                      by_prompt: dict[int, list[int]], liked_cut: set[int] = frozenset(), *,
                      retries: bool = True) -> dict[tuple[int, int], str]:
    """(chosen id, rejected id) -> source, from arena picks, retries (unless `retries` is off) and opposite votes on
    one prompt. A cut-off reply that was liked or tied (`liked_cut`) is never a rejected side; _add_pairs checks the
    rest."""
    pairs = _candidate_pairs(engine, persona, snap, nets, by_prompt, retries=retries)
    return {pair: source for pair, source in pairs.items() if pair[1] not in liked_cut}


def _candidate_pairs(engine: Engine, persona: str, snap: Snapshot, nets: dict[int, int],
                     by_prompt: dict[int, list[int]], *, retries: bool = True) -> dict[tuple[int, int], str]:
    pairs: dict[tuple[int, int], str] = {}
    for _cid, winner, loser in arena_picks(engine, persona=persona, snap=snap):
        pairs.setdefault((winner, loser), "arena")
    links = retry_links(engine, persona=persona, snap=snap) if retries else ()
    for retry, original, _status, _finish, retried_again, continued in links:
        n_new, n_old = nets.get(retry, 0), nets.get(original, 0)
        if n_new > 0 and n_old <= 0:
            pairs.setdefault((retry, original), "retry_vote")
        elif n_old > 0 and n_new < 0:
            pairs.setdefault((original, retry), "retry_vote")
        elif n_new == 0 and n_old <= 0 and not retried_again and continued:
            pairs.setdefault((retry, original), "retry_kept")
    for gids in by_prompt.values():
        if len(gids) < 2:
            continue
        liked = [g for g in gids if nets[g] > 0]
        disliked = [g for g in gids if nets[g] < 0]
        for pair in itertools.islice(itertools.product(liked, disliked), MAX_PAIRS_PER_PROMPT):
            pairs.setdefault(pair, "opposite_votes")
    return pairs


def _add_pairs(engine: Engine, pairs: dict[tuple[int, int], str], fraction: float, sink: _Sink,
               excluded: set[tuple[int, str]], trimmed: dict[int, str] | None = None) -> None:
    ids = sorted({g for pair in pairs for g in pair})
    gens = {row[0]: row[1:] for row in generations_by_id(engine, ids=ids)}
    for (chosen, rejected), source in sorted(pairs.items()):
        if chosen not in gens or rejected not in gens:
            sink.drop("pair_not_consented")
            continue
        c_prompt, c_status, c_finish, chat_id, c_text, conv = gens[chosen]
        _r_prompt, r_status, r_finish, r_chat, r_text, r_conv = gens[rejected]
        if trimmed and chosen in trimmed:  # a liked cut-off reply: its complete sentences
            c_status, c_finish, c_text = "ok", "stop", trimmed[chosen]
        if trimmed and rejected in trimmed:  # a disliked one, the same way
            r_status, r_finish, r_text = "ok", "stop", trimmed[rejected]
        if (chat_id, conv) in excluded or (r_chat, r_conv) in excluded:
            sink.drop("pair_not_consented")
            continue
        # the chosen side must be a finished reply; the rejected side may be cut off (the user preferred a
        # finished answer), never errored or empty
        r_reason = unusable_reason(r_status, r_finish, r_text)
        reason = unusable_reason(c_status, c_finish, c_text) or (None if r_reason == "cut_off" else r_reason)
        if reason:
            sink.drop(f"pair_{reason}")
            continue
        heldout = is_heldout(conversation_key(chat_id=chat_id, conversation_id=conv), fraction)
        if sink.add_dpo(c_prompt, [{"role": "assistant", "content": c_text}],
                        [{"role": "assistant", "content": r_text}], heldout, source):
            sink.paired.update((chosen, rejected))


def _clean_messages(messages: list[dict], scrub: bool) -> list[dict]:
    out = []
    for m in messages:
        content = str(m.get("content") or "")
        out.append({"role": m["role"], "content": scrub_pii(content) if scrub else content})
    return out


class _Sink:
    """Cleans, dedups, splits and writes examples; counts what it kept and why it dropped the rest."""

    def __init__(self, out_dir: Path | None, cfg, count: TokenCounter, system_prompt: str):
        self.cfg, self.count, self.system_prompt = cfg, count, system_prompt
        self.counts: Counter = Counter({name: 0 for name in FILES})
        self.sources: dict[str, Counter] = defaultdict(Counter)
        self.dropped: Counter = Counter()
        self.notes: Counter = Counter()
        self.labels: Counter = Counter()
        self.voted_rows: set[int] = set()  # replies whose votes made a KTO row
        self.paired: set[int] = set()  # replies on either side of a written DPO pair
        self.replay_rows = 0  # seed training examples replayed in a cycle that continues the live version
        self.splits: tuple[str, ...] = ("train", "heldout")  # which rows this pass writes
        self.dedup = {"sft": Deduper(cfg.near_duplicate_threshold), "dpo": Deduper(1.0), "kto": Deduper(1.0)}
        self.hashers = {name: hashlib.sha256() for name in FILES}
        self.files = {}
        for name in FILES if out_dir else ():
            self.files[name] = open(out_dir / f"{name}.jsonl", "w", encoding="utf-8")  # noqa: SIM115 (closed in close())
            if name.startswith("heldout_"):
                self.files[name + SOURCES_SUFFIX] = open(  # noqa: SIM115 (closed in close())
                    out_dir / f"{name}{SOURCES_SUFFIX}", "w", encoding="utf-8")

    def _prompt(self, prompt: list[dict]) -> list[dict]:
        prompt = _clean_messages(prompt, self.cfg.scrub_pii)
        if not prompt or prompt[0]["role"] != "system":
            prompt.insert(0, {"role": "system", "content": self.system_prompt})
        return prompt

    def _completion(self, messages: list[dict]) -> list[dict] | None:
        out = _clean_messages(messages, self.cfg.scrub_pii)
        if sum(len(m["content"].strip()) for m in out) < max(1, self.cfg.min_reply_chars):
            return None
        return out

    def _fit(self, prompt: list[dict], completion_tokens: int) -> list[dict] | None:
        return fit_prompt(prompt, completion_tokens, self.cfg.max_tokens, self.count)

    def drop(self, reason: str) -> None:
        self.dropped[reason] += 1

    def note(self, what: str, n: int = 1) -> None:
        """Count something kept in an altered form (e.g. a liked cut-off reply trimmed to its sentences)."""
        self.notes[what] += n

    def _skips(self, heldout: bool) -> bool:
        """Whether a row of this split is left out by this pass (see `_add_heldout_history`)."""
        return ("heldout" if heldout else "train") not in self.splits

    def add_sft(self, prompt: list[dict], reply: dict, heldout: bool, source: str) -> None:
        if self._skips(heldout):
            return None
        completion = self._completion([reply])
        if completion is None:
            return self.drop("too_short")
        prompt = self._fit(self._prompt(prompt), message_tokens(completion, self.count))
        if prompt is None:
            return self.drop("too_long")
        why = self.dedup["sft"].check(_last_user(prompt) + "\n" + completion[0]["content"])
        if why:
            return self.drop(f"sft_{why}")
        self._write("sft", {"messages": prompt + completion}, heldout, source)

    def add_dpo(self, prompt: list[dict], chosen: list[dict], rejected: list[dict], heldout: bool,
                source: str) -> bool | None:
        """Write the pair if it survives clean-up; True when written."""
        if self._skips(heldout):
            return None
        chosen, rejected = self._completion(chosen), self._completion(rejected)
        if chosen is None or rejected is None:
            return self.drop("too_short")
        if _text(chosen).strip() == _text(rejected).strip():
            return self.drop("chosen_equals_rejected")
        longest = max(message_tokens(chosen, self.count), message_tokens(rejected, self.count))
        prompt = self._fit(self._prompt(prompt), longest)
        if prompt is None:
            return self.drop("too_long")
        if self.dedup["dpo"].check(f"{_last_user(prompt)}\x00{_text(chosen)}\x00{_text(rejected)}", near=False):
            return self.drop("dpo_duplicate")
        self._write("dpo", {"prompt": prompt, "chosen": chosen, "rejected": rejected}, heldout, source)
        return True

    def add_kto(self, prompt: list[dict], completion: list[dict], label: bool, heldout: bool,
                source: str) -> bool | None:
        """Write the row if it survives clean-up; True when written."""
        if self._skips(heldout):
            return None
        completion = self._completion(completion)
        if completion is None:
            return self.drop("too_short")
        prompt = self._fit(self._prompt(prompt), message_tokens(completion, self.count))
        if prompt is None:
            return self.drop("too_long")
        if self.dedup["kto"].check(f"{_last_user(prompt)}\x00{_text(completion)}\x00{label}", near=False):
            return self.drop("kto_duplicate")
        self._write("kto", {"prompt": prompt, "completion": completion, "label": label}, heldout, source)
        if not heldout:
            self.labels[label] += 1
        return True

    def _write(self, kind: str, row: dict, heldout: bool, source: str) -> None:
        name = f"heldout_{kind}" if heldout else kind
        self.counts[name] += 1
        self.sources[name][source] += 1
        line = json.dumps(row, ensure_ascii=False) + "\n"
        self.hashers[name].update(line.encode())
        if self.files:
            self.files[name].write(line)
            if heldout:
                self.files[name + SOURCES_SUFFIX].write(source.replace("\n", " ") + "\n")

    def kto_balance(self) -> dict:
        good, bad = self.labels[True], self.labels[False]
        return {"desirable": good, "undesirable": bad,
                "desirable_share": round(good / (good + bad), 4) if good + bad else None}

    def content_hash(self) -> str:
        total = hashlib.sha256()
        for name in FILES:
            total.update(f"{name}:{self.hashers[name].hexdigest()}\n".encode())
        return total.hexdigest()

    def close(self) -> None:
        for f in self.files.values():
            f.close()


def _text(messages: list[dict]) -> str:
    return "\n".join(m["content"] for m in messages)


def _last_user(prompt: list[dict]) -> str:
    for m in reversed(prompt):
        if m["role"] == "user":
            return m["content"]
    return ""
