"""The registry and training commands as a user types them: `loopbot adapters ...`, `loopbot train`, `loopbot eval`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loopbot.cli import main
from loopbot.storage import crud
from loopbot.storage.db import make_engine, upgrade
from tests.trainer.synthetic import write_dataset

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cli(tmp_path, monkeypatch, tiny_model_dir, tiny_adapters, capsys):
    for name in [n for n in __import__("os").environ if n.startswith("LOOPBOT_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("LOOPBOT_CONFIG", str(ROOT / "config.toml"))
    monkeypatch.setenv("LOOPBOT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("LOOPBOT_MODELS__SMOLLM2__PATH", str(tiny_model_dir))
    monkeypatch.setenv("LOOPBOT_PERSONAS__COACH__SAMPLING__MAX_TOKENS", "16")
    engine = make_engine(f"sqlite:///{tmp_path}/data/loopbot.db")
    upgrade(engine)
    for version, key in ((1, "a"), (2, "b")):
        crud.create_adapter(engine, persona="coach", version=version, base_model="tiny", path=str(tiny_adapters[key]))

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out = capsys.readouterr()
        return code, out.out, out.err

    yield run
    engine.dispose()


def test_list_promote_show_and_rollback(cli):
    code, out, _ = cli("adapters", "list", "--persona", "coach")
    assert code == 0 and "coach-v1" in out and "candidate" in out
    assert cli("adapters", "promote", "v1", "-p", "coach")[1].strip() == "coach-v1 is active"
    assert cli("adapters", "promote", "coach-v2", "-p", "coach", "--reason", "better")[0] == 0
    code, out, _ = cli("adapters", "rollback", "-p", "coach", "--reason", "too chatty")
    assert code == 0 and "coach now serves coach-v1" in out
    shown = json.loads(cli("adapters", "show", "v2", "-p", "coach")[1])
    assert shown["status"] == "rolled_back" and shown["status_reason"] == "too chatty"
    code, out, _ = cli("adapters", "rollback", "-p", "coach", "--to", "base")
    assert code == 0 and "the base model" in out


def test_mistakes_get_one_line_errors(cli):
    code, _, err = cli("adapters", "promote", "v9", "-p", "coach")
    assert code == 2 and err.strip() == "loopbot: coach has no version 9 (see `loopbot adapters list --persona coach`)"
    code, _, err = cli("adapters", "promote", "latest", "-p", "coach")
    assert code == 2 and "'latest' is not a version" in err
    code, _, err = cli("train", "-p", "nobody")
    assert code == 2 and "unknown persona 'nobody'" in err
    code, _, err = cli("train", "-p", "coach", "--method", "ppo")
    assert code == 2 and "--method 'ppo'" in err


def test_train_without_new_votes_is_skipped_and_listed(cli):
    code, out, _ = cli("train", "-p", "coach", "-q")
    assert code == 0 and "skipped" in out and "min_new_votes" in out
    code, out, _ = cli("adapters", "runs", "-p", "coach")
    assert "manual" in out and "skipped" in out and "check: skipped" in out


def test_eval_prints_the_figures_and_the_gate_verdict(cli, tmp_path):
    data = write_dataset(tmp_path / "ds")
    code, out, _ = cli("eval", "-p", "coach", "-c", "v2", "--dataset", str(data))
    assert code == 0, out
    assert "coach-v2 vs the base model" in out and "preference accuracy" in out
    assert "gate: " in out and "report: " in out
    report = Path(out.split("report: ")[1].split(" (+ .png)")[0])
    assert report.is_file() and report.with_suffix(".png").is_file()
