"""End to end in a real headless Chromium against the app served by uvicorn on 127.0.0.1:
cast arena votes, see the leaderboard update, log in to the dashboard, roll back a version.

Screenshots of each page go to test-artifacts/web/; the leaderboard's is also copied to docs/leaderboard.png.
"""

from __future__ import annotations

import random
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from loopbot.storage import crud
from tests.web.conftest import ADMIN_TOKEN
from tests.web.seed import arena_world, reply

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "web"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium: apt-get install -y chromium"),
]


@pytest.fixture
def site(settings, monkeypatch):
    """The web app of a seeded Loopbot, served by uvicorn in a thread on a free loopback port."""
    pytest.importorskip("playwright", reason="needs the playwright package: pip install playwright")
    from loopbot.app import Loopbot
    from loopbot.web.app import create_app
    from loopbot.web.server import make_server

    monkeypatch.setenv(settings.web.admin_token_env, ADMIN_TOKEN)
    bot = Loopbot(settings)
    _seed(bot)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = make_server(bot, host="127.0.0.1", port=port, app=create_app(bot, rng=random.Random(0)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield bot, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def _seed(bot) -> None:
    """Three versions answering the same prompts, and earlier chat picks drawn from known strengths."""
    eng = bot.engine
    arena_world(bot, prompts=3)
    strength = {"base": 0.0, "coach-v1": 0.6, "coach-v2": 1.2}
    rng = random.Random(5)
    extra = {v: [] for v in strength}
    for i in range(12):
        for v in strength:
            extra[v].append(reply(eng, persona="coach", prompt=f"Chat question {i}", text=f"{STYLE[v]}: answer {i}",
                                  version=None if v == "base" else v, user=f"chat{i}"))
    judge = crud.get_or_create_user(eng, platform="telegram", platform_user_id="judge")
    for i in range(12):
        for x, y in (("base", "coach-v1"), ("coach-v1", "coach-v2"), ("base", "coach-v2")):
            p_x = 1 / (1 + pow(2.718281828, strength[y] - strength[x]))
            row = crud.create_comparison(eng, persona="coach", generation_a_id=extra[x][i],
                                         generation_b_id=extra[y][i], user_id=judge.id)
            crud.record_pick(eng, comparison_id=row.id, pick="a" if rng.random() < p_x else "b")
        for v, s in strength.items():
            crud.upsert_vote(eng, generation_id=extra[v][i], user_id=judge.id,
                             value=1 if rng.random() < 0.3 + 0.25 * s else -1)


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


STYLE = {"base": "Run easy", "coach-v1": "Start slow", "coach-v2": "Keep it steady"}  # as tests/web/seed.py


def _rank(text: str) -> int:
    return next(i for i, style in enumerate(STYLE.values()) if text.startswith(style))


def _shot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def test_vote_in_the_arena_and_see_the_leaderboard_update(site, browser):
    _bot, url = site
    page = browser.new_page(viewport={"width": 1100, "height": 800})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))

    page.goto(f"{url}/leaderboard/coach")
    assert "Ratings from 36 side-by-side picks" in page.inner_text("main")

    page.goto(f"{url}/arena/coach")
    _shot(page, "arena")
    seen = set()
    for _ in range(9):
        # this visitor prefers coach-v2's style, then coach-v1's, whichever side they are on
        a, b = page.inner_text("#reply-a"), page.inner_text("#reply-b")
        pair = (page.input_value("input[name=a]"), page.input_value("input[name=b]"))
        assert frozenset(pair) not in seen, "the arena showed a pair twice"
        seen.add(frozenset(pair))
        if _rank(b) > _rank(a):
            page.click("#pick-b")
        else:
            page.keyboard.press("1")  # the keyboard shortcut for "A is better"
        page.wait_for_selector("#thanks")
        assert "You picked" in page.inner_text("#thanks")
    _shot(page, "arena-after-votes")

    page.goto(f"{url}/leaderboard/coach")
    text = page.inner_text("main")
    assert "Ratings from 45 side-by-side picks" in text
    versions = page.locator("td.version").all_inner_texts()
    assert [v.split()[0] for v in versions] == ["coach-v2", "coach-v1", "base"]
    assert page.locator("svg.chart circle").count() == 3
    shot = _shot(page, "leaderboard")
    shutil.copyfile(shot, ROOT / "docs" / "leaderboard.png")
    assert not problems, f"browser console errors: {problems}"


def test_log_in_to_the_dashboard_and_roll_back_a_version(site, browser):
    bot, url = site
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.goto(f"{url}/admin")
    assert page.locator("input[name=token]").is_visible()
    page.fill("#token", "not-the-token")
    page.click("#login")
    assert page.inner_text("#login-error") == "wrong token"

    page.fill("#token", ADMIN_TOKEN)
    page.click("#login")
    page.wait_for_selector("#coach .live-version")
    assert page.inner_text("#coach .live-version") == "coach-v2"
    _shot(page, "admin")

    page.click("#coach button.rollback")
    assert "Roll coach back to coach-v1?" in page.inner_text("#question")
    _shot(page, "admin-confirm")
    page.click("#confirm")
    assert "rolled back coach to v1" in page.inner_text("#done")
    page.click("#back")
    assert page.inner_text("#coach .live-version") == "coach-v1"
    assert crud.active_adapter(bot.engine, persona="coach").version == 1
    assert crud.get_adapter(bot.engine, persona="coach", version=2).status == "rolled_back"
    _shot(page, "admin-after-rollback")
