"""Chat messages reach the public arena only from users who said /arena on, and then with PII masked."""

from __future__ import annotations

from loopbot.storage import crud
from testkit.instant_backend import InstantBackend
from tests.bot.conftest import dm, final, make_service


async def test_only_messages_of_users_who_said_arena_on_are_shown_and_then_scrubbed(client, loopbot):
    eng = loopbot.engine
    backend = InstantBackend()
    await backend.load_adapter("coach-v1", "/adapters/coach/v1")
    crud.create_adapter(eng, persona="coach", version=1, base_model="smollm2", path="/adapters/coach/v1")
    crud.activate_adapter(eng, persona="coach", version=1)
    service = make_service(eng, loopbot.settings, backend, arena_rate=1.0)  # every reply is an A/B pair
    await final(service, dm("shyzq asks: call me at 612 34 56 78", user="1"))
    assert "Arena sharing is off" in (await final(service, dm("/arena", user="2")))[0].text
    assert "may now be shown" in (await final(service, dm("/arena on", user="2")))[0].text
    await final(service, dm("boldzq asks: call me at 612 34 56 78 or bold@example.com", user="2"))

    for _ in range(3):  # whichever pair is chosen, it is the consenting user's
        page = client.get("/arena/coach").text
        assert "boldzq asks: call me at [phone] or [email]" in page and "shyzq" not in page
        assert "612 34 56 78" not in page and "bold@example.com" not in page
    assert all("shyzq" not in asked for *_, asked in crud.arena_replies(eng, persona="coach"))

    await final(service, dm("/arena off", user="2"))
    assert "boldzq" not in client.get("/arena/coach").text
