"""Preference files -> DPO and KTO examples: JSONL of `{"prompt", "chosen", "rejected"}` (as the Chai role-play
DPO data) and/or `{"prompt", "completion", "label"}`. Prompts are a string (one user message) or a message list;
answers a string (one assistant message) or a message list."""

from __future__ import annotations

from pathlib import Path

from loopbot.trainer.importers.common import ImportFileError, ImportReport, as_messages, read_jsonl, validation_split

FORMAT_HINT = 'expected {"prompt", "chosen", "rejected"} or {"prompt", "completion", "label"}'
LABELS = {True: True, False: False, "true": True, "false": False, "1": True, "0": False,
          "yes": True, "no": False, "👍": True, "👎": False}


def _label(value, where: str) -> bool:
    key = value.strip().lower() if isinstance(value, str) else value
    if isinstance(key, float) and key in (0.0, 1.0):
        key = int(key)
    try:
        return LABELS[key]
    except (KeyError, TypeError):
        raise ImportFileError(f"{where}: label must be true/false (or 1/0), got {value!r}") from None


def import_preferences(path: str | Path, *, persona: str, validation_fraction: float = 0.1
                       ) -> tuple[ImportReport, list[tuple[str, str, dict]]]:
    p = Path(path)
    report = ImportReport("preferences", p, persona)
    out = []
    for number, obj in read_jsonl(p):
        report.read += 1
        where = f"{p}:{number}"
        if "prompt" not in obj:
            raise ImportFileError(f"{where}: {FORMAT_HINT}")
        prompt = as_messages(obj["prompt"], "user", f"{where}: prompt")
        if prompt[-1]["role"] != "user":
            raise ImportFileError(f"{where}: the prompt must end with a user message")
        key = f"prefs:{prompt[-1]['content'].strip().lower()}"
        if "chosen" in obj and "rejected" in obj:
            chosen = as_messages(obj["chosen"], "assistant", f"{where}: chosen")
            rejected = as_messages(obj["rejected"], "assistant", f"{where}: rejected")
            if [m["content"].strip() for m in chosen] == [m["content"].strip() for m in rejected]:
                report.drop("chosen_equals_rejected", f"{where}: chosen and rejected are the same")
                continue
            if not all(m["content"].strip() for m in chosen + rejected):
                report.drop("empty_answer", f"{where}: an empty answer")
                continue
            kind, data = "dpo", {"prompt": prompt, "chosen": chosen, "rejected": rejected}
        elif "completion" in obj and "label" in obj:
            completion = as_messages(obj["completion"], "assistant", f"{where}: completion")
            if not all(m["content"].strip() for m in completion):
                report.drop("empty_answer", f"{where}: an empty answer")
                continue
            kind, data = "kto", {"prompt": prompt, "completion": completion, "label": _label(obj["label"], where)}
        else:
            raise ImportFileError(f"{where}: {FORMAT_HINT}")
        split = validation_split(key, validation_fraction)
        report.validation += split == "validation"
        out.append((kind, split, data))
    report.kept = len(out)
    if report.read == 0:
        raise ImportFileError(f"{p}: empty file")
    return report, out
