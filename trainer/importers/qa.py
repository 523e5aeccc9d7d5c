"""Q&A files -> SFT examples, as the marathon coach was trained: JSONL of `{"messages": [...]}` (Mistral's
fine-tuning format) or `{"question": ..., "answer": ...}`. A stable share goes to the validation split."""

from __future__ import annotations

from pathlib import Path

from loopbot.trainer.importers.common import ImportFileError, ImportReport, as_messages, read_jsonl, validation_split

FORMAT_HINT = 'expected {"messages": [{"role": "user", ...}, {"role": "assistant", ...}]} or {"question", "answer"}'


def import_qa(path: str | Path, *, persona: str, validation_fraction: float = 0.1
              ) -> tuple[ImportReport, list[tuple[str, str, dict]]]:
    p = Path(path)
    report = ImportReport("qa", p, persona)
    out = []
    for number, obj in read_jsonl(p):
        report.read += 1
        where = f"{p}:{number}"
        if "messages" in obj:
            messages = as_messages(obj["messages"], "user", where)
        elif isinstance(obj.get("question"), str) and isinstance(obj.get("answer"), str):
            messages = [{"role": "user", "content": obj["question"]},
                        {"role": "assistant", "content": obj["answer"]}]
        else:
            raise ImportFileError(f"{where}: {FORMAT_HINT}")
        if messages[-1]["role"] != "assistant" or not any(m["role"] == "user" for m in messages):
            raise ImportFileError(f"{where}: a conversation needs a user message and must end with the assistant")
        if any(not m["content"].strip() for m in messages):
            report.drop("empty_message", f"{where}: an empty message")
            continue
        first_user = next(m["content"] for m in messages if m["role"] == "user")
        split = validation_split(f"qa:{first_user.strip().lower()}", validation_fraction)
        report.validation += split == "validation"
        out.append(("sft", split, {"messages": messages}))
    report.kept = len(out)
    if report.read == 0:
        raise ImportFileError(f"{p}: empty file")
    return report, out
