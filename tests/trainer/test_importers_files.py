"""Jokes, Q&A and preference files: formats, reports, errors that name file and line, all-or-nothing imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from loopbot.storage import crud
from loopbot.trainer.importers import ImportFileError, import_sources, run_import
from loopbot.trainer.importers.jokes import extract_keywords, joke_prompt

SAMPLES = Path(__file__).parent / "samples"
ROOT = Path(__file__).resolve().parents[2]


def _seeds(engine, persona, kind=None, split=None):
    return crud.list_seed_examples(engine, persona=persona, kind=kind, split=split)


def test_jokes_become_keyword_prompts_and_short_ones_are_dropped(engine, settings):
    settings.trainer.dataset.heldout_fraction = 0.0
    report = run_import(engine, settings, "comedian", "jokes", SAMPLES / "jokes.jsonl")
    assert (report.read, report.kept, dict(report.dropped)) == (4, 3, {"too_short": 1})
    assert report.problems == [f"{SAMPLES / 'jokes.jsonl'}:4: joke shorter than 10 characters"]
    prompts = [s.data["messages"][0]["content"] for s in _seeds(engine, "comedian")]
    assert prompts == ["Cuéntame un chiste sobre metro", "Cuéntame un chiste sobre suegra y familia",
                       "Cuéntame un chiste sobre asado y chileno"]
    assert {s.source for s in _seeds(engine, "comedian")} == {"jokes:jokes.jsonl"}


def test_keywords_are_extracted_by_frequency_then_length():
    assert extract_keywords("El perro del vecino ladra. El perro duerme en la casa del vecino perro.") == \
        ["perro", "vecino"]
    assert extract_keywords("a la de que") == []
    assert joke_prompt([], "es") == "Cuéntame un chiste" and joke_prompt(["shoes"], "en") == \
        "Tell me a joke about shoes"


def test_plain_text_jokes_are_split_on_blank_lines(engine, settings):
    report = run_import(engine, settings, "comedian", "jokes", SAMPLES / "jokes.txt")
    assert report.kept == 2
    jokes = sorted(s.data["messages"][1]["content"] for s in _seeds(engine, "comedian"))
    assert jokes[0].startswith("El lunes") and "\ny el jefe sí." in jokes[0]


def test_qa_reads_both_formats_and_keeps_a_validation_split(engine, settings):
    report = run_import(engine, settings, "coach", "qa", SAMPLES / "qa_messages.jsonl")
    assert (report.read, report.kept, dict(report.dropped)) == (3, 2, {"empty_message": 1})
    multi = [s for s in _seeds(engine, "coach") if len(s.data["messages"]) == 5]
    assert multi and multi[0].data["messages"][0] == {"role": "system", "content": "You are a coach."}
    run_import(engine, settings, "coach", "qa", SAMPLES / "qa_question_answer.jsonl")
    assert len(_seeds(engine, "coach")) == 4
    report = run_import(engine, settings, "coach", "qa", ROOT / "examples" / "coach_qa.jsonl",
                        validation_fraction=0.2)
    assert report.kept >= 60 and 0 < report.validation < report.kept // 2
    assert len(_seeds(engine, "coach", split="validation")) == report.validation
    again = run_import(engine, settings, "coach", "qa", ROOT / "examples" / "coach_qa.jsonl",
                       validation_fraction=0.2)
    assert again.validation == report.validation and again.added == 0  # the split is stable


@pytest.mark.parametrize("name, message", [
    ("qa_bad_json.jsonl", r"qa_bad_json\.jsonl:2: not valid JSON"),
    ("qa_bad_shape.jsonl", r"qa_bad_shape\.jsonl:2: a conversation needs a user message and must end with"),
])
def test_a_bad_qa_file_names_the_line_and_imports_nothing(engine, settings, name, message):
    with pytest.raises(ImportFileError, match=message):
        run_import(engine, settings, "coach", "qa", SAMPLES / name)
    assert _seeds(engine, "coach") == []  # the good first line was not stored either


def test_preferences_make_dpo_pairs_and_kto_thumbs(engine, settings):
    report = run_import(engine, settings, "coach", "preferences", SAMPLES / "preferences_dpo.jsonl")
    assert (report.kept, dict(report.dropped)) == (2, {"chosen_equals_rejected": 1})
    pairs = [s.data for s in _seeds(engine, "coach", kind="dpo")]
    assert pairs[0]["prompt"] == [{"role": "user",
                                   "content": "You are Aria, a pirate captain. User: Where are we sailing?"}]
    assert pairs[0]["chosen"] == [{"role": "assistant", "content": "To the Isle of Fog, matey, where the old map "
                                                                  "points!"}]
    assert pairs[1]["prompt"][0]["role"] == "system"
    with pytest.raises(ImportFileError, match=r"preferences_kto\.jsonl:3: label must be true/false"):
        run_import(engine, settings, "coach", "preferences", SAMPLES / "preferences_kto.jsonl")
    assert _seeds(engine, "coach", kind="kto") == []


def test_kto_preferences_import(engine, settings, tmp_path):
    lines = (SAMPLES / "preferences_kto.jsonl").read_text().splitlines()[:2]
    path = tmp_path / "kto.jsonl"
    path.write_text("\n".join(lines) + "\n")
    run_import(engine, settings, "coach", "preferences", path)
    labels = [s.data["label"] for s in _seeds(engine, "coach", kind="kto")]
    assert labels == [True, False]


def test_the_configured_sources_of_every_persona_import(engine, settings):
    for persona in ("coach", "comedian", "clone"):
        (report,) = import_sources(engine, settings, persona)
        assert report.added > 25, report.summary()


def test_a_line_separator_inside_a_text_does_not_split_its_record(engine, settings, tmp_path):
    path = tmp_path / "qa.jsonl"
    rows = [{"question": "Two lines?", "answer": "First line\u2028second line, still one answer."},
            {"question": "And a paragraph break?", "answer": "One\u2029two\x85three."}]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    report = run_import(engine, settings, "coach", "qa", path, validation_fraction=0.0)
    assert (report.read, report.kept) == (2, 2)
    answers = sorted(s.data["messages"][-1]["content"] for s in _seeds(engine, "coach"))
    assert answers == ["First line\u2028second line, still one answer.", "One\u2029two\x85three."]


def test_missing_file_is_a_one_line_error(engine, settings):
    with pytest.raises(ImportFileError, match=r"nope\.jsonl: no such file"):
        run_import(engine, settings, "coach", "qa", "nope.jsonl")


def test_cli_import_and_dataset_build(tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text((ROOT / "config.toml").read_text())

    def loopbot(*args):
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)}
        return subprocess.run([sys.executable, "-m", "loopbot.cli", "--config", str(cfg), *args], cwd=tmp_path,
                              capture_output=True, text=True, env=env, timeout=120, check=False)

    r = loopbot("import", "qa", str(ROOT / "examples" / "coach_qa.jsonl"), "--persona", "coach")
    assert r.returncode == 0, r.stderr
    assert "read 68 records, kept 68 examples" in r.stdout and "stored 68 new" in r.stdout
    bad = loopbot("import", "qa", str(SAMPLES / "qa_bad_json.jsonl"), "--persona", "coach")
    assert bad.returncode == 2 and "qa_bad_json.jsonl:2: not valid JSON" in bad.stderr
    r = loopbot("dataset", "build", "--persona", "coach", "--json")
    assert r.returncode == 0, r.stderr
    manifest = json.loads(r.stdout.strip().splitlines()[-1])
    assert manifest["counts"]["sft"] + manifest["counts"]["heldout_sft"] == 68
    out = tmp_path / "data" / "datasets" / "coach" / manifest["build_id"]
    first = json.loads((out / "sft.jsonl").read_text().splitlines()[0])
    assert [m["role"] for m in first["messages"]] == ["system", "user", "assistant"]
    r = loopbot("import", "whatsapp", str(ROOT / "examples" / "whatsapp_chat.txt"), "--author", "Ana",
                "--persona", "clone", "--max-turns", "2", "--separator", " / ", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["kept"] > 41 and report["dropped"]["media"] == 3  # shorter examples: more of them
    r = loopbot("dataset", "stats", "--persona", "coach")
    assert r.returncode == 0 and "seed qa:coach_qa.jsonl" in r.stdout and "next run would get: sft" in r.stdout
