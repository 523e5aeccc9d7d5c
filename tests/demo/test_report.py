"""The demo's verdict on its own numbers, and the report a reader gets."""

from loopbot.demo.measure import Band, measure
from loopbot.demo.report import CycleSummary, markdown, plot, verdict


def _m(label, served, likes, n=60, text="You can run easy today and build up slowly."):
    return measure(label, served, [(text, False, i < likes) for i in range(n)])


def test_better_beyond_both_intervals_is_required():
    base = _m("base", "base", 18)
    cycles = [CycleSummary(1, "promoted", "coach-v1", "coach-v1")]
    assert verdict([base, _m("cycle 1", "coach-v1", 40)], cycles, Band()).improved
    assert not verdict([base, _m("cycle 1", "coach-v1", 26)], cycles, Band()).improved  # better, inside the noise


def test_a_promoted_version_measured_worse_is_reported():
    ms = [_m("base", "base", 18), _m("cycle 1", "coach-v1", 45), _m("cycle 2", "coach-v2", 20)]
    cycles = [CycleSummary(1, "promoted", "coach-v1", "coach-v1"), CycleSummary(2, "promoted", "coach-v2", "coach-v2")]
    v = verdict(ms, cycles, Band())
    assert not v.no_worse_promotion and any("cycle 2 promoted coach-v2" in line for line in v.lines)
    cycles[1].status = "rejected"  # a rejected candidate never served: nothing was promoted worse
    assert verdict(ms, cycles, Band()).no_worse_promotion


def test_degeneracy_band_judges_trained_versions_not_the_base_remeasured():
    base = _m("base", "base", 18)
    rambling = _m("cycle 1", "coach-v1", 50, text="You you you 1 2 3 4 5 6 7 8 9 % % % # # # " * 4)
    again = _m("cycle 1", "base", 20, text="You run.")
    assert not verdict([base, rambling], [CycleSummary(1, "promoted", "coach-v1")], Band()).within_band
    assert verdict([base, again], [CycleSummary(1, "rejected", "coach-v1")], Band()).within_band


def test_report_has_the_bar_the_measurements_and_the_plot(tmp_path):
    ms = [_m("base", "base", 18), _m("cycle 1", "coach-v1", 40)]
    cycles = [CycleSummary(1, "promoted", "coach-v1", "coach-v1", {"dpo": 40, "heldout_dpo": 6}, 0.41,
                           {"candidate pref. acc.": 0.83}, ["better ok: accuracy 0.83 vs live 0.50"], 300)]
    v = verdict(ms, cycles, Band())
    png = plot(ms, tmp_path / "demo.png", "demo")
    text = markdown(title="t", facts=[("population", "p")], measurements=ms, cycles=cycles, band=Band(),
                    judgement=v, samples=[("Q?", "before", "after")], plot_name=png.name)
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "| base | base | 0.30 | 0.20-0.43 | 60 |" in text
    assert "| cycle 1 | coach-v1 | 0.67 |" in text
    assert "| 1 | promoted | coach-v1 | coach-v1 | dpo 40, heldout_dpo 6 | 0.410 |" in text
    assert "better beyond both 95% intervals" in text and "![" in text
