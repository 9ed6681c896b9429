"""The operator console in a real browser (Debian's Chromium through Playwright), against a real worker,
broker and emulator: an operator signs in, filters, opens a dead letter, replays the filtered set and sees
the successes, purges after typing the count; a viewer sees no action buttons and cannot act; requests
without credentials, and cross-site or token-less POSTs, are refused.

Each browser test keeps a screenshot of every page it showed under ``test-artifacts/console/<test>/`` when
it fails (or always, with ``DMS_CONSOLE_TEST_KEEP_SCREENSHOTS=1``). Chromium must be installed (``bash
deploy/dev.sh test`` installs it): without it these tests fail with one line saying so, they do not skip.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from playwright.async_api import Browser, Page, async_playwright
from playwright.async_api import expect as page_expect
from pydantic import TypeAdapter
from structlog.testing import capture_logs

from worker.console.app import RunningConsole, running_console
from worker.console.auth import SESSION_COOKIE
from worker.results.dead_letters import Selection
from worker.settings import ConsoleUser

from .conftest import Stack, StackFactory
from .dead_letter_fill import Made, fill_dlq
from .test_cli import cli, stack_env, start_cli

pytestmark = pytest.mark.integration

CHROMIUM = Path(os.environ.get("DMS_CONSOLE_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_THERE = CHROMIUM.exists()
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
OPERATOR_TOKEN = "operator-token-" + "o" * 16
VIEWER_TOKEN = "viewer-token-" + "v" * 16
TENANT_A = uuid.UUID("0b6c3f0e-2a7f-4a59-9d4e-5b8f6f0f2c11")
TENANT_B = uuid.UUID("5d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6")
KINDS = [(TENANT_A, "dms_unavailable", 3), (TENANT_A, "rate_limited", 2), (TENANT_B, "dms_unavailable", 2),
         (TENANT_B, "unknown_tenant", 2)]  # fmt: skip


@dataclass
class Console:
    stack: Stack
    running: RunningConsole
    made: list[Made]

    @property
    def url(self) -> str:
        return self.running.url.rstrip("/")

    def dlq_size(self) -> int:
        return len(self.running.services.index)


async def wait_for(check: Callable[[], bool], within_s: float = 20.0, what: str = "it") -> None:
    for _ in range(int(within_s / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what} did not happen within {within_s} s")


@pytest.fixture
async def console(make_stack: StackFactory) -> AsyncIterator[Console]:
    stack = await make_stack()
    made = await fill_dlq(stack.channel, stack.settings, KINDS)
    users = {
        "olga": {"role": "operator", "token": OPERATOR_TOKEN},
        "victor": {"role": "viewer", "token": VIEWER_TOKEN},
    }
    console_users = TypeAdapter(dict[str, ConsoleUser]).validate_python(users)
    settings = stack.settings.model_copy(update={"console_port": 0, "console_users": console_users})
    async with running_console(settings) as running:
        index = running.services.index
        await wait_for(lambda: len(index) == len(made) and not index.scan.running, what="the index pass")
        yield Console(stack, running, made)


@dataclass
class Pages:
    """A browser page that keeps a screenshot of every page it showed (kept only when the test fails)."""

    page: Page
    base: str
    shots: Path
    taken: list[Path] = field(default_factory=list)

    async def shot(self, name: str) -> None:
        path = self.shots / f"{len(self.taken):02d}-{re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')}.png"
        await self.page.screenshot(path=str(path), full_page=True)
        self.taken.append(path)

    async def goto(self, path: str) -> None:
        await self.page.goto(self.base + path)
        await self.shot(path)

    async def sign_in(self, token: str) -> None:
        await self.goto("/signin")
        await self.page.fill("input[name=token]", token)
        await self.page.click("button[type=submit]")
        await self.page.wait_for_url(re.compile(r".*/dead-letters$"))
        await self.shot("signed in")


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM_THERE:
        pytest.fail(
            f"no Chromium at {CHROMIUM}: install Debian's chromium and chromium-driver packages "
            "(bash deploy/dev.sh test does), or point DMS_CONSOLE_TEST_CHROMIUM at one",
            pytrace=False,
        )
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield launched
        await launched.close()


@pytest.fixture
async def pages(
    browser: Browser, console: Console, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Pages]:
    context = await browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(10_000)
    shown = Pages(await context.new_page(), console.url, tmp_path)
    yield shown
    await context.close()
    report = getattr(request.node, "rep_call", None)
    if (report is not None and report.failed) or os.environ.get("DMS_CONSOLE_TEST_KEEP_SCREENSHOTS"):
        kept = ARTIFACTS / request.node.name
        shutil.rmtree(kept, ignore_errors=True)
        kept.mkdir(parents=True)
        for path in shown.taken:
            shutil.copy(path, kept / path.name)
        print(f"screenshots of the pages shown: {kept}")


def ids_on(made: list[Made], code: str) -> set[str]:
    return {m.command_id for m in made if m.error_code == code}


# --- the operator's way through ---------------------------------------------------------------------


async def test_an_operator_filters_opens_one_replays_the_filter_and_sees_the_successes(
    console: Console, pages: Pages
) -> None:
    page = pages.page
    await pages.sign_in(OPERATOR_TOKEN)
    groups = page.locator("#groups tbody tr")
    await page_expect(groups).to_have_count(4)  # 3 error codes x 2 tenants, as they occur
    await page_expect(page.locator("#groups")).to_contain_text(str(TENANT_B))

    await page.select_option("select[name=error_code]", "dms_unavailable")
    await page.click("#filters button[type=submit]")
    await page.wait_for_url(re.compile(r"error_code=dms_unavailable"))
    await pages.shot("filtered")
    rows = page.locator("#letters tbody tr")
    await page_expect(rows).to_have_count(5)
    assert set(await page.locator("#letters tbody .code").all_inner_texts()) == {"dms_unavailable"}

    await rows.first.locator("a").first.click()
    await page.wait_for_url(re.compile(r"/dead-letters/[0-9a-f-]+$"))
    await page_expect(page.locator("#headers")).to_contain_text("x-error-code")  # loaded after the page
    await pages.shot("one dead letter")
    event = await page.inner_text("#event")
    assert "content not shown" in event and "ZGVhZCBsZXR0ZXIgY29udGVudA" not in await page.content()
    await page_expect(page.locator("#facts")).to_contain_text("dms_unavailable")
    await page.go_back()

    await page.click("#replay-filter")
    await page.wait_for_url(re.compile(r"/jobs/\d+$"))
    await page_expect(page.locator("#job-state")).to_have_text("done", timeout=20_000)
    await page_expect(page.locator("#job-done")).to_have_text("5")
    await page_expect(page.locator("#job-succeeded")).to_have_text("5", timeout=20_000)
    await pages.shot("job finished")
    assert console.dlq_size() == 4

    await pages.goto("/outcomes?outcome=succeeded")
    feed = page.locator("#feed tbody tr.succeeded")
    await page_expect(feed).to_have_count(5)
    shown_ids = {text.strip() for text in await feed.locator("td:last-child").all_inner_texts()}
    assert shown_ids == ids_on(console.made, "dms_unavailable")
    await feed.first.locator("a").first.click()  # the document's history
    await page.wait_for_url(re.compile(r"/documents/[0-9a-f-]+$"))
    await page_expect(page.locator("#history tbody tr.succeeded")).to_contain_text("version 1.0")
    await pages.shot("document history")

    await pages.goto("/fleet")
    await page_expect(page.locator("#replicas tbody tr")).to_have_count(1)
    await page_expect(page.locator("#dlq-depth")).to_have_text("4")


async def test_purge_asks_for_the_count_and_drops_only_what_was_confirmed(console: Console, pages: Pages) -> None:
    page = pages.page
    await pages.sign_in(OPERATOR_TOKEN)
    await pages.goto(f"/dead-letters?tenant={TENANT_B}&error_code=unknown_tenant")
    await page.click("#purge")
    await page.wait_for_url(re.compile(r"/dead-letters/purge/ask$"))
    await pages.shot("purge asks")
    await page_expect(page.locator("#purge-count")).to_have_text("2")

    await page.fill("#confirm", "9")
    await page.click("#purge-confirm")
    await page_expect(page.locator("[role=alert]")).to_contain_text("type 2")
    await pages.shot("wrong count")
    assert console.dlq_size() == 9

    await page.fill("#confirm", "2")
    await page.click("#purge-confirm")
    await page.wait_for_url(re.compile(r"/jobs/\d+$"))
    await page_expect(page.locator("#job-state")).to_have_text("done", timeout=20_000)
    await page_expect(page.locator("#job-done")).to_have_text("2")
    await pages.shot("purged")
    left = {letter.error_code for letter in console.running.services.index.select(Selection())}
    assert left == {"dms_unavailable", "rate_limited"} and console.dlq_size() == 7

    await pages.goto("/dead-letters?error_code=rate_limited")  # one picked: its own count
    await page.locator("#letters tbody input[type=checkbox]").first.check()
    await page.click("#purge-picked")
    await page_expect(page.locator("#purge-count")).to_have_text("1")
    await page.fill("#confirm", "1")
    await page.click("#purge-confirm")
    await page_expect(page.locator("#job-done")).to_have_text("1", timeout=20_000)
    assert console.dlq_size() == 6


# --- who may do what --------------------------------------------------------------------------------


async def test_the_viewer_sees_no_action_buttons_and_its_posts_are_refused(console: Console, pages: Pages) -> None:
    page = pages.page
    await pages.sign_in(VIEWER_TOKEN)
    await page_expect(page.locator("#who")).to_contain_text("victor · viewer")
    await page_expect(page.locator("#letters tbody tr")).to_have_count(9)
    for action in ("#actions", "#replay-filter", "#purge", "#purge-picked", "#rescan", "input[type=checkbox]"):
        await page_expect(page.locator(action)).to_have_count(0)
    csrf = await page.locator("input[name=csrf]").first.get_attribute("value")
    answer = await page.request.post(
        f"{console.url}/dead-letters/replay", form={"csrf": csrf or "", "scope": "filter"}, max_redirects=0
    )
    assert answer.status == 403 and "viewer role" in await answer.text()
    await pages.goto("/dead-letters/purge?error_code=rate_limited")
    await page_expect(page.locator("#purge-confirm")).to_have_count(0)
    await page_expect(page.locator("main")).to_contain_text("only an operator can purge")
    answer = await page.request.post(
        f"{console.url}/dead-letters/purge",
        form={"csrf": csrf or "", "error_code": "rate_limited", "confirm": "2"},
        max_redirects=0,
    )
    assert answer.status == 403
    assert not console.running.services.jobs.history and console.dlq_size() == 9


async def test_a_cross_site_post_without_the_csrf_token_is_refused(console: Console, pages: Pages) -> None:
    """A page on another origin (another port of the same host: the same site, so the cookie goes along)
    posts a replay form to the console on its own."""
    await pages.sign_in(OPERATOR_TOKEN)
    attack = web.Application()
    form = (
        f'<form id="f" method="post" action="{console.url}/dead-letters/replay">'
        '<input name="scope" value="filter"></form><p id="ready">ready</p>'
        '<script>document.getElementById("f").submit()</script>'
    )

    async def evil(request: web.Request) -> web.Response:
        return web.Response(text=form, content_type="text/html")

    attack.router.add_get("/", evil)
    runner = web.AppRunner(attack)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with pages.page.expect_response(re.compile(r".*/dead-letters/replay$")) as posted:
            await pages.page.goto(f"http://127.0.0.1:{port}/")
        answer = await posted.value
        await pages.shot("cross-site post")
        assert answer.status == 403 and "cross-site" in await answer.text()
    finally:
        await runner.cleanup()
    assert not console.running.services.jobs.history and console.dlq_size() == 9


async def test_requests_without_credentials_get_401_and_a_post_without_its_csrf_token_403(console: Console) -> None:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:  # an IP's cookies too
        for path in (
            "/",
            "/dead-letters",
            "/outcomes",
            "/fleet",
            "/jobs",
            f"/dead-letters/{console.made[0].command_id}",
        ):
            async with http.get(console.url + path, allow_redirects=False) as answer:
                assert answer.status == 401, path
                assert console.made[0].command_id not in await answer.text()
        async with http.post(console.url + "/dead-letters/replay", data={"scope": "filter"}) as answer:
            assert answer.status == 401
        async with http.get(console.url + "/fleet", headers={"Authorization": "Bearer not-a-token"}) as answer:
            assert answer.status == 401
        async with http.get(console.url + "/fleet", headers={"Authorization": f"Bearer {VIEWER_TOKEN}"}) as answer:
            assert answer.status == 200 and answer.headers["Content-Security-Policy"].startswith("default-src 'none'")

        async with http.post(console.url + "/signin", data={"token": "a guess" * 3}, allow_redirects=False) as answer:
            assert answer.status == 401 and "lets nobody in" in await answer.text()
        async with http.post(console.url + "/signin", data={"token": OPERATOR_TOKEN}, allow_redirects=False) as answer:
            assert answer.status == 303
            cookie = answer.cookies[SESSION_COOKIE]
            assert cookie["httponly"] and cookie["samesite"] == "Strict"
        async with http.post(console.url + "/dead-letters/replay", data={"scope": "filter"}) as answer:
            assert answer.status == 403 and "CSRF" in await answer.text()
        async with http.post(
            console.url + "/dead-letters/replay", data={"scope": "filter", "csrf": "x" * 43}
        ) as answer:
            assert answer.status == 403
    assert not console.running.services.jobs.history and console.dlq_size() == 9


# --- the command ------------------------------------------------------------------------------------


async def test_the_console_command_serves_until_sigterm_and_needs_users(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    stack = await make_stack()
    without_users = await cli("console", "--port", "0", env=stack_env(stack), cwd=tmp_path)
    without_users.assert_one_line_mistake(2, "DMS_WORKER_CONSOLE_USERS")
    env = {
        **stack_env(stack),
        "DMS_WORKER_CONSOLE_USERS": json.dumps({"olga": {"role": "operator", "token": OPERATOR_TOKEN}}),
    }
    process = await start_cli("console", "--port", "0", env=env, cwd=tmp_path)
    assert process.stdout is not None
    try:
        line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
        url = line.split()[1]
        assert line.startswith("console: http://127.0.0.1:"), line
        async with aiohttp.ClientSession() as http:
            async with http.get(url + "dead-letters") as answer:
                assert answer.status == 401
            async with http.get(url + "fleet", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}) as answer:
                assert answer.status == 200
        process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), 40)
    finally:  # failed: no console left running after the test
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, err.decode()
    assert OPERATOR_TOKEN not in err.decode()


async def test_a_slow_replay_can_be_cancelled_and_writes_one_audit_line(console: Console) -> None:
    """Cancel stops between two messages: what was not replayed stays in the DLQ (and in the index)."""
    bearer = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    jobs = console.running.services.jobs
    async with aiohttp.ClientSession(headers=bearer) as http:
        with capture_logs() as logs:
            form = {"scope": "filter", "rate": "2", "tenant": str(TENANT_A)}
            async with http.post(console.url + "/dead-letters/replay", data=form, allow_redirects=False) as answer:
                assert answer.status == 303
                job_path = answer.headers["Location"]
            job = jobs.get(int(job_path.rsplit("/", 1)[1]))
            assert job is not None and job.expected == 5
            await wait_for(lambda: job.done >= 1, what="the first replay")
            async with http.post(console.url + job_path + "/cancel", allow_redirects=False) as answer:
                assert answer.status == 303
            await wait_for(lambda: job.finished, what="the cancel")
    assert job.state == "cancelled" and 1 <= job.done < 5
    assert console.dlq_size() == 9 - job.done
    (audit,) = [line for line in logs if line["event"] == "console_audit"]
    assert audit["user"] == "olga" and audit["action"] == "replay" and audit["count"] == job.done
    assert audit["filter"] == {"tenant_id": str(TENANT_A)} and audit["state"] == "cancelled"
    assert audit["cancelled_by"] == "olga"


async def test_a_long_replay_works_in_passes_and_replays_each_dead_letter_once(console: Console) -> None:
    """Passes end before RabbitMQ's consumer timeout could (here: after 0.3 s); the next skips what is done."""
    jobs = console.running.services.jobs
    jobs._pass_max_s = 0.3
    bearer = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    async with aiohttp.ClientSession(headers=bearer) as http:
        form = {"scope": "filter", "rate": "5", "tenant": str(TENANT_B)}
        async with http.post(console.url + "/dead-letters/replay", data=form, allow_redirects=False) as answer:
            job = jobs.get(int(answer.headers["Location"].rsplit("/", 1)[1]))
    assert job is not None
    await wait_for(lambda: job.finished, what="the replay")
    assert (job.state, job.done, job.passes > 1) == ("done", 4, True)
    assert set(job.outcomes) == {m.command_id for m in console.made if m.tenant_id == TENANT_B}
    await wait_for(lambda: job.succeeded == 4, what="the outcomes")
    assert console.dlq_size() == 5
