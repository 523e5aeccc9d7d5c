"""`loopbot demo`: bad options are refused in one line; `--quick` runs the whole loop and writes its report."""

import re

import pytest

from loopbot.cli import main


@pytest.mark.parametrize("args, message", [
    (["--users", "no_such_module_zz:likes"], "cannot import module 'no_such_module_zz'"),
    (["--users", "loopbot.demo.population:missing"], "has no function 'missing'"),
    (["--cycles", "0"], "run at least one cycle"),
    (["--users", "short_answer:0.5,uses_list:0"], "the weight of 'uses_list' must be above 0"),
    (["--vote-share", "1.5"], "--vote-share 1.5: a share between 0 and 1"),
    (["--feedback", "ideal", "--follow-up-liked", "-0.1"], "--follow-up-liked -0.1: a share between 0 and 1"),
    (["--feedback", "perfect"], "--feedback 'perfect': expected one of realistic, ideal"),
])
def test_bad_options_are_refused_before_any_model_loads(args, message, tmp_path, capsys):
    assert main(["demo", "--quick", "--data-dir", str(tmp_path / "d"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "d").exists()


def test_a_used_data_dir_is_refused(tmp_path, capsys):
    (tmp_path / "old.db").write_text("x")
    assert main(["demo", "--quick", "--data-dir", str(tmp_path)]) == 2
    assert "not empty" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_demo_runs_the_loop_and_reports_sane_figures(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the demo must find its corpus from anywhere
    data = tmp_path / "demo"
    assert main(["demo", "--quick", "--data-dir", str(data)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"the bar: (MET|NOT met)", out)
    report = (data / "reports" / "demo.md").read_text()
    assert (data / "reports" / "demo.png").read_bytes()[:4] == b"\x89PNG"
    rows = [line.split("|")[1:-1] for line in report.splitlines()
            if re.match(r"\| (base|cycle \d) \|", line)]
    measured = rows
    assert [r[0].strip() for r in measured] == ["base", "cycle 1", "cycle 2"]
    for r in measured:
        rate, (low, high), votes = float(r[2]), map(float, r[3].split("-")), int(r[4])
        assert votes == 24 and 0 <= low <= rate <= high <= 1
    cycles = [line.split("|")[1:-1] for line in report.split("## Training cycles")[1].splitlines()
              if re.match(r"\| \d \|", line)]
    assert len(cycles) == 2
    for c in cycles:
        assert c[1].strip() in ("promoted", "rejected", "skipped"), c  # "failed" would be a bug in the loop

    from loopbot.storage import crud
    from loopbot.storage.db import make_engine

    engine = make_engine(f"sqlite:///{data}/loopbot.db")
    up, down = crud.vote_counts(engine, persona="coach")
    assert up + down > 72  # three measurements of 24, plus the users' rounds
    runs = crud.list_training_runs(engine, persona="coach")
    assert len(runs) == 2 and {r.trigger for r in runs} == {"demo"}
