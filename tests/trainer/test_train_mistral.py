"""Training through Mistral's fine-tuning API, against a loopback fake of the files and jobs endpoints."""

from __future__ import annotations

import pytest

from loopbot.base.errors import UsageError
from loopbot.storage import crud
from loopbot.trainer.launch import TrainingFailed
from loopbot.trainer.mistral_ft import train_on_mistral
from testkit.fake_mistral_ft import FakeMistralFineTuning
from tests.trainer.synthetic import seed_feedback


@pytest.fixture
def build(loopbot):
    from loopbot.trainer.datasets import build_datasets

    seed_feedback(loopbot.engine, conversations=20)
    return build_datasets(loopbot.engine, loopbot.settings, "coach")


async def test_the_sft_set_is_uploaded_and_the_ft_model_registered(loopbot, build, monkeypatch):
    monkeypatch.setenv("MISTRAL_API_KEY", "test-key")
    async with FakeMistralFineTuning(polls_to_finish=3) as fake:
        loopbot.settings.serving.mistral.server_url = fake.url
        version = await train_on_mistral(loopbot, "coach", build, poll_s=0.01)
    row = crud.get_adapter(loopbot.engine, persona="coach", version=version)
    assert row.remote_model_id.startswith("ft:open-mistral-7b:coach:") and row.path == ""
    assert row.status == "candidate" and row.dataset_manifest["build_id"] == build.build_id
    (job,) = fake.jobs.values()
    assert job["status"] == "SUCCESS" and job["model"] == "open-mistral-7b"
    uploaded = {f["filename"]: f for f in fake.files.values()}
    sft = next(f for name, f in uploaded.items() if name.endswith("-sft.jsonl"))
    assert sft["purpose"] == "fine-tune" and len(sft["lines"]) == build.counts["sft"]
    assert job["validation_files"] and job["training_files"] == [next(
        i for i, f in fake.files.items() if f["filename"].endswith("-sft.jsonl"))]


async def test_a_failed_job_registers_nothing(loopbot, build, monkeypatch):
    monkeypatch.setenv("MISTRAL_API_KEY", "test-key")
    async with FakeMistralFineTuning(fail=True) as fake:
        loopbot.settings.serving.mistral.server_url = fake.url
        with pytest.raises(TrainingFailed, match="FAILED_VALIDATION"):
            await train_on_mistral(loopbot, "coach", build, poll_s=0.01)
    assert crud.list_adapters(loopbot.engine, persona="coach") == []


async def test_a_missing_key_is_a_one_line_usage_error(loopbot, build, monkeypatch):
    monkeypatch.delenv("MISTRAL_API_KEY", raising=False)
    with pytest.raises(UsageError, match="MISTRAL_API_KEY"):
        await train_on_mistral(loopbot, "coach", build, poll_s=0.01)


async def test_a_wrong_key_is_refused(loopbot, build, monkeypatch):
    monkeypatch.setenv("MISTRAL_API_KEY", "wrong")
    async with FakeMistralFineTuning() as fake:
        loopbot.settings.serving.mistral.server_url = fake.url
        with pytest.raises(Exception, match=r"401|Unauthorized"):
            await train_on_mistral(loopbot, "coach", build, poll_s=0.01)
    assert crud.list_adapters(loopbot.engine, persona="coach") == []
