"""`loopbot bench` runs every bench module and prints one table; a broken bench is a row, never a crash."""

from loopbot.cli import main

FAST = '''
def run():
    return [{"name": "batched vs single", "figure": 61.0, "baseline": 14.0, "unit": "tok/s", "goal": "ratio >= 2"},
            {"name": "swap pause", "figure": 3.0, "baseline": 2.0, "unit": "ms", "goal": "ratio <= 1.1"}]
'''
BROKEN = '''
def run():
    raise RuntimeError("model server not reachable")
'''
CUSTOM = '''
def run():
    return {"name": "judge agreement", "figure": 0.8, "baseline": 0.5, "goal": "beats chance", "met": True}
'''


def _bench_dir(tmp_path):
    from pathlib import Path

    d = tmp_path / "bench"
    d.mkdir()
    (d / "run_all.py").write_text((Path(__file__).resolve().parents[2] / "bench" / "run_all.py").read_text())
    (d / "bench_fast.py").write_text(FAST)
    (d / "bench_broken.py").write_text(BROKEN)
    (d / "bench_custom.py").write_text(CUSTOM)
    (d / "helper.py").write_text("raise SystemExit('not a bench: must not be imported')")
    return d


def test_bench_prints_one_table_with_ratios_goals_and_errors(tmp_path, capsys):
    d = _bench_dir(tmp_path)
    md = tmp_path / "bench.md"
    assert main(["bench", "--dir", str(d), "--markdown", str(md)]) == 0
    out = capsys.readouterr().out
    assert "batched vs single" in out and "4.36x" in out  # 61 / 14
    assert "swap pause" in out and "1.50x" in out
    assert "model server not reachable" in out
    table = md.read_text()
    assert table.startswith("Measured ") and "CPU cores" in table
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in table.splitlines() if line.startswith("| ") and "name" not in line}
    assert rows["batched vs single"][-1] == "yes"
    assert rows["swap pause"][-1] == "NO"
    assert rows["judge agreement"][-1] == "yes" and rows["judge agreement"][2] == "1.60x"
    assert rows["bench_broken"][0].startswith("error: RuntimeError")


def test_bench_filters_by_name_and_refuses_an_empty_folder(tmp_path, capsys):
    d = _bench_dir(tmp_path)
    assert main(["bench", "--dir", str(d), "custom"]) == 0
    out = capsys.readouterr().out
    assert "judge agreement" in out and "batched vs single" not in out
    assert main(["bench", "--dir", str(d), "nothing-matches"]) == 2
    assert "no bench_*.py" in capsys.readouterr().err
    assert main(["bench", "--dir", str(tmp_path / "missing")]) == 2
    assert "no benchmarks at" in capsys.readouterr().err


def test_a_bench_can_import_the_checkout_lazily_inside_run(tmp_path, capsys):
    """bench_serving imports testkit inside run(): the checkout must still be importable then."""
    d = _bench_dir(tmp_path)
    pkg = tmp_path / "loopbot_bench_lazy_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("VALUE = 7.0\n")
    (d / "bench_lazy.py").write_text('''
def run():
    from loopbot_bench_lazy_pkg import VALUE
    return {"name": "lazy import", "figure": VALUE, "baseline": 1.0}
''')
    assert main(["bench", "--dir", str(d), "lazy"]) == 0
    out = capsys.readouterr().out
    assert "lazy import" in out and "7.00x" in out and "ModuleNotFoundError" not in out
