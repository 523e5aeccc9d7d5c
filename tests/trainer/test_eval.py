"""Evaluation figures: token-weighted perplexity, preference accuracy, the judge, and the report files."""

from __future__ import annotations

import json
import math

import pytest

from loopbot.base.settings import JudgeSettings
from loopbot.trainer.degeneracy import degeneracy_figures
from loopbot.trainer.evaluate import _Scorer, evaluate_candidate, vote_auc, write_report
from loopbot.trainer.judge import PairwiseJudge
from testkit.fake_judge import FakeJudge
from tests.trainer.synthetic import write_dataset

PROMPTS = [[{"role": "user", "content": f"question {i}"}] for i in range(3)]


def test_the_judge_is_asked_both_orders_and_position_bias_cancels():
    with FakeJudge(api_key="secret") as judge, pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUDGE_KEY", "secret")
        cfg = JudgeSettings(url=judge.url, model="judge-model", api_key_env="JUDGE_KEY")
        result = PairwiseJudge(cfg, "speaks to the runner").win_rate(
            PROMPTS, ["Run easy, your legs will thank you."] * 3, ["Run easy."] * 3)
        assert result == {"win_rate": 1.0, "wins": 6, "ties": 0, "losses": 0, "judgements": 6}
        assert "speaks to the runner" in judge.requests[0]["messages"][0]["content"]
        assert judge.requests[0]["model"] == "judge-model"
        firsts = [r["messages"][-1]["content"].split("Reply A:\n")[1].split("\n")[0] for r in judge.requests[:2]]
        assert firsts[0] != firsts[1]  # the candidate is shown first once and second once
    with FakeJudge(always="A") as biased:
        cfg = JudgeSettings(url=biased.url, model="m")
        assert PairwiseJudge(cfg, "").win_rate(PROMPTS, ["x"] * 3, ["y"] * 3)["win_rate"] == 0.5


def test_perplexity_counts_only_the_reply_tokens_weighted_by_token(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    convo = [{"role": "system", "content": "You are a coach."}, {"role": "user", "content": "How far?"},
             {"role": "assistant", "content": "Run easy most days."}, {"role": "user", "content": "And rest?"},
             {"role": "assistant", "content": "Rest days matter."}]
    nll, tokens = _Scorer(tiny_model_dir, {}, 256).reply_nll(convo)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    full = tok.apply_chat_template(convo, return_dict=True, return_assistant_tokens_mask=True)
    prompt = tok.apply_chat_template(convo[:-1], add_generation_prompt=True, return_dict=True)["input_ids"]
    ids = torch.tensor([full["input_ids"]])
    assert full["input_ids"][:len(prompt)] == list(prompt)
    labels = ids.clone()
    labels[0, :len(prompt)] = -100  # the earlier turns, the earlier reply included, are context only
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        loss = model(input_ids=ids, labels=labels).loss.item()  # mean NLL over the last reply's tokens
    last_reply = sum(full["assistant_masks"][len(prompt):])  # the template's own mark of the reply's tokens
    assert tokens == len(full["input_ids"]) - len(prompt) and tokens >= last_reply > 3
    assert nll / tokens == pytest.approx(loss, rel=1e-4)


def test_batched_scoring_matches_scoring_one_sequence_at_a_time(tiny_model_dir, tiny_adapters):
    """Padding never leaks into a score: every (prompt, completion) scores as it would alone."""
    import torch

    scorer = _Scorer(tiny_model_dir, {"a": str(tiny_adapters["a"])}, 256)
    items = [([{"role": "user", "content": "How far " * n + "?"}], [{"role": "assistant", "content": "Easy " * m}])
             for n, m in ((1, 1), (9, 3), (3, 12), (20, 2), (5, 5))]
    for adapter in ("a", None):
        with scorer.using(adapter):
            together = scorer.completion_logprobs(items, batch_size=4)
            for (prompt, completion), (logprob, tokens) in zip(items, together, strict=True):
                start = len(scorer._ids(prompt, add_generation_prompt=True))
                ids = scorer._ids(prompt + completion)
                with torch.no_grad():
                    logits = scorer.model(input_ids=torch.tensor([ids])).logits[0, :-1]
                alone = torch.log_softmax(logits, -1).gather(1, torch.tensor(ids[1:]).unsqueeze(1)).squeeze(1)
                assert tokens == len(ids) - start
                assert logprob == pytest.approx(float(alone[start - 1:].sum()), abs=1e-3)


def test_the_degeneracy_replies_are_sampled_as_served_from_one_seed(tiny_model_dir):
    """The gate reads replies decoded as users get them (the persona's sampling), the same draws for each version
    (one seed), or greedy when asked: greedy loops that sampling avoids must not reject a candidate."""
    from loopbot.base.settings import SamplingSettings

    scorer = _Scorer(tiny_model_dir, {}, 256)
    prompts = [[{"role": "user", "content": f"How far should I run in week {i}?"}] for i in range(4)]
    hot = SamplingSettings(temperature=1.5, top_p=1.0)
    sampled = scorer.generate(prompts, 12, sampling=hot, seed=7)
    assert scorer.generate(prompts, 12, sampling=hot, seed=7) == sampled  # one seed: the same draws again
    assert scorer.generate(prompts, 12, sampling=hot, seed=8) != sampled
    greedy = scorer.generate(prompts, 12)
    assert greedy == scorer.generate(prompts, 12, sampling=SamplingSettings(temperature=0.0)) != sampled


def test_degeneracy_figures_spot_cut_offs_repetition_and_symbols():
    figures = degeneracy_figures(["Run easy, your legs will thank you.", "go go go go go go", "1 2 3 4 5 6 !!", ""],
                                 ["stop", "length", "stop", "stop"])
    assert figures["cutoff_rate"] == 0.25 and figures["empty_rate"] == 0.25
    assert figures["repeated_ngram_rate"] == pytest.approx(3 / (5 + 4 + 4), abs=1e-4)  # "go go go" x4, 3 repeats
    assert figures["words_per_reply"] == pytest.approx((7 + 6 + 6 + 0) / 4, abs=1e-3)
    assert figures["symbols_per_word"] > 0.5


def test_a_report_compares_candidate_live_and_base_and_is_saved_as_json_and_png(train_settings, tiny_model_dir,
                                                                               tiny_adapters, tmp_path):
    data = write_dataset(tmp_path / "ds")
    # the second half of the held-out KTO rows came from implicit signals: scored apart from the votes
    kto_rows = len((data / "heldout_kto.jsonl").read_text().splitlines())
    labels = [json.loads(line)["label"] for line in (data / "heldout_kto.jsonl").read_text().splitlines()]
    (data / "heldout_kto.sources").write_text("".join(
        "feedback\n" if i < kto_rows // 2 else ("follow_up\n" if labels[i] else "ended\n") for i in range(kto_rows)))
    with FakeJudge() as judge:
        train_settings.trainer.judge.url = judge.url
        train_settings.trainer.judge.prompts = 3
        report = evaluate_candidate(train_settings, "coach", dataset_dir=data, base_model=tiny_model_dir,
                                    candidate_path=str(tiny_adapters["a"]), live_path=str(tiny_adapters["b"]),
                                    candidate_name="coach-v2", live_name="coach-v1")
        assert len(judge.requests) == 6
    v = report["variants"]
    assert {"candidate", "live", "base"} == set(v)
    assert len({v[k]["perplexity"] for k in v}) == 3  # three different models
    assert all(math.isfinite(v[k]["perplexity"]) and 0 <= v[k]["preference_accuracy"] <= 1 for k in v)
    assert v["candidate"]["pairs"] == 8 and v["candidate"]["degeneracy"]["replies"] == 3
    assert report["judge"]["judgements"] == 6 and 0 <= report["judge"]["win_rate"] <= 1
    votes = report["votes"]  # every held-out pair side and KTO row, scored candidate vs live
    assert votes["liked"] >= 4 and votes["disliked"] >= 4 and 0 <= votes["auc"] <= 1
    signals = report["signals"]  # the held-out rows implicit signals labelled, with the AUC's standard error
    assert (signals["liked"], signals["disliked"]) == (4, 4) and 0 <= signals["auc"] <= 1 and signals["se"] > 0
    assert [s["prompt"] for s in report["smoke"]] == train_settings.personas["coach"].smoke_prompts
    json_path, png_path = write_report(report, train_settings, "coach", "v2-test")
    assert json.loads(json_path.read_text())["candidate"] == "coach-v2"
    assert png_path.read_bytes()[:4] == b"\x89PNG"


def test_an_unreachable_judge_is_reported_not_fatal(train_settings, tiny_model_dir, tiny_adapters, tmp_path):
    from testkit.ports import free_port

    train_settings.trainer.judge.url = f"http://127.0.0.1:{free_port()}/v1"
    report = evaluate_candidate(train_settings, "coach", dataset_dir=write_dataset(tmp_path / "ds"),
                                base_model=tiny_model_dir, candidate_path=str(tiny_adapters["a"]), live_path=None)
    assert report["judge"]["win_rate"] is None and "ConnectError" in report["judge"]["error"]
    assert report["variants"]["live"] == report["variants"]["base"]  # nothing live: the base model is the bar


def test_vote_auc_measures_how_the_candidate_moved_liked_replies_against_disliked_ones():
    liked = [True, True, False, False]
    live = [-2.0, -2.0, -2.0, -2.0]
    # liked replies became more likely, disliked ones less: every comparison won
    assert vote_auc(liked, [-1.0, -1.5, -2.5, -3.0], live)["auc"] == 1.0
    # the candidate changed nothing: all ties, no evidence either way
    assert vote_auc(liked, live, live)["auc"] == 0.5
    # the live version's own bias does not count: both already prefer the liked replies by the same amount
    biased = [-1.0, -1.0, -3.0, -3.0]
    assert vote_auc(liked, biased, biased)["auc"] == 0.5
    # backwards: the candidate learned the opposite of what users liked
    assert vote_auc(liked, [-3.0, -3.0, -1.0, -1.0], live)["auc"] == 0.0
    assert vote_auc([True, True], [-1.0, -1.0], live[:2])["auc"] is None  # no disliked reply: nothing to compare
