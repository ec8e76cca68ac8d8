"""The dashboard in Debian's Chromium: what a person signs in to, reads, filters, clicks and sees live,
with an automated accessibility check (axe-core, vendored) on every page and a screenshot of each."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Any

import httpx
from tests.tickets.browser.conftest import SCREENSHOT_DIR, VENDOR, LiveServer
from tests.tickets.dashboard_data import ACME_SECRET, GLOBEX_SECRET, PASSWORD
from tests.tickets.harness import SERVICE_TOKEN

Page = Any  # playwright.async_api.Page


async def sign_in(page: Page, server: LiveServer, email: str) -> None:
    await page.goto(f"{server.base_url}/ui/login")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_label("Password").press("Enter")  # the keyboard submits the form
    await page.wait_for_url(re.compile(r"/ui/calls$"))


async def accessibility_violations(page: Page) -> list[str]:
    """axe-core's serious and critical findings on the page as it is now."""
    await page.add_script_tag(path=str(VENDOR / "axe.min.js"))
    results = await page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
            for v in results["violations"] if v["impact"] in ("serious", "critical")]


async def shoot(page: Page, name: str) -> None:
    await page.screenshot(path=str(SCREENSHOT_DIR / f"{name}.png"), full_page=True)


async def call_sids(page: Page) -> list[str]:
    return [await row.get_attribute("data-call-sid") for row in await page.locator("tbody tr[data-call-sid]").all()]


def service(server: LiveServer) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.base_url, headers={"Authorization": f"Bearer {SERVICE_TOKEN}"},
                             timeout=10)


async def test_sign_in_read_filter_page_and_sign_out(page: Page, live_server: LiveServer) -> None:
    seeded = live_server.seeded
    await page.goto(f"{live_server.base_url}/ui/calls")
    assert "/ui/login" in page.url
    assert await accessibility_violations(page) == []
    await shoot(page, "01-login")
    await page.get_by_label("Email").fill("dev@acme.test")
    await page.get_by_label("Password").fill("wrong password!")
    await page.get_by_role("button", name="Sign in").click()
    assert await page.get_by_role("alert").inner_text() == "Wrong email or password."
    await sign_in(page, live_server, "dev@acme.test")

    listed = await call_sids(page)
    assert len(listed) == 50 and listed[0] == seeded.acme_live
    assert await page.get_by_text(GLOBEX_SECRET).count() == 0
    assert await accessibility_violations(page) == []
    await shoot(page, "02-calls")
    await page.get_by_role("link", name="Older →").click()
    await page.wait_for_url(re.compile(r"page=2"))
    assert len(await call_sids(page)) == 5
    await page.get_by_role("link", name="← Newer").click()
    await page.wait_for_url(re.compile(r"page=1"))

    await page.get_by_label("Status").select_option("ended")
    await page.get_by_label("Has a ticket").select_option("yes")
    await page.get_by_role("button", name="Apply").click()
    await page.wait_for_url(re.compile(r"has_ticket=yes"))
    assert await call_sids(page) == [seeded.acme_ended]
    await page.goto(f"{live_server.base_url}/ui/calls")
    await page.get_by_label("Search transcripts").fill("opening hours")
    await page.get_by_label("Search transcripts").press("Enter")
    await page.wait_for_url(re.compile(r"q=opening"))
    assert await call_sids(page) == [seeded.acme_old]
    await shoot(page, "03-calls-searched")

    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_url(re.compile(r"/ui/login$"))
    await page.goto(f"{live_server.base_url}/ui/calls")
    assert "/ui/login" in page.url


async def test_call_page_transcript_tools_latency_and_links(page: Page, live_server: LiveServer) -> None:
    seeded = live_server.seeded
    await sign_in(page, live_server, "dev@acme.test")
    await page.locator(f'tr[data-call-sid="{seeded.acme_ended}"] a').click()
    await page.wait_for_url(re.compile(seeded.acme_ended))
    texts = await page.locator("#transcript > li").all_inner_texts()
    assert len(texts) == 6
    assert ACME_SECRET in texts[0] and "lookup_order" in texts[1] and "interrupted" in texts[2]
    assert "+0:02" in texts[0] and "09:00:02" in texts[0]
    arguments = page.get_by_text('"order_id": "A-991"').first
    assert not await arguments.is_visible(), "tool details start collapsed"
    await page.locator("details.tool summary").first.click()
    assert await arguments.is_visible()
    assert "error" in await page.locator("details.tool.failed summary").inner_text()
    chart = page.locator("#latency-chart > li")
    assert await chart.count() == 3
    assert "not measured" in await chart.nth(1).inner_text()
    widths = [await chart.nth(i).locator(".bar").first.evaluate("e => e.style.width") for i in (0, 2)]
    assert widths == ["50%", "100%"]
    trace = await page.locator("#trace-link").get_attribute("href")
    assert trace.startswith("http://opik.test/api/v1/session/redirect/projects/?trace_id=trace-CAacme0001")
    assert await accessibility_violations(page) == []
    await shoot(page, "04-call")

    await page.get_by_role("link", name=f"Ticket #{seeded.acme_ticket_id}").click()
    row = page.locator(f"#ticket-{seeded.acme_ticket_id}")
    assert "+14155550123" in await row.inner_text() and "open" in await row.inner_text()
    assert await accessibility_violations(page) == []
    await shoot(page, "05-tickets")
    await row.get_by_role("button", name=f"Mark done ticket {seeded.acme_ticket_id}").click()
    await page.locator(f"#ticket-{seeded.acme_ticket_id}.done").wait_for()
    await page.locator(f"#ticket-{seeded.acme_ticket_id}").get_by_role("link", name=seeded.acme_ended).click()
    await page.wait_for_url(re.compile(f"/ui/calls/{seeded.acme_ended}$"))

    await page.get_by_role("link", name="Analytics").click()
    await page.wait_for_url(re.compile("/ui/analytics"))
    assert "Median turn latency" in await page.locator("#kpis").inner_text()
    assert await accessibility_violations(page) == []
    await shoot(page, "06-analytics")


async def test_a_viewer_sees_no_tool_arguments(page: Page, live_server: LiveServer) -> None:
    await sign_in(page, live_server, "viewer@acme.test")
    await page.goto(f"{live_server.base_url}/ui/calls/{live_server.seeded.acme_ended}")
    await page.locator("details.tool summary").first.click()
    assert await page.get_by_text("Arguments and results are shown to developers and admins.").first.is_visible()
    content = await page.content()
    assert "order_id" not in content and "refund_service_down" not in content
    assert await page.locator("#trace-link").count() == 0
    await shoot(page, "07-call-as-viewer")


async def test_tenant_b_sees_nothing_of_tenant_a(page: Page, live_server: LiveServer) -> None:
    seeded = live_server.seeded
    await sign_in(page, live_server, "dev@globex.test")
    assert await call_sids(page) == [seeded.globex_ended]
    for path in (f"/ui/calls/{seeded.acme_ended}", f"/ui/calls/{seeded.acme_live}/events"):
        assert (await page.request.get(f"{live_server.base_url}{path}")).status == 404
    response = await page.goto(f"{live_server.base_url}/ui/calls/{seeded.acme_ended}")
    assert response.status == 404
    assert await accessibility_violations(page) == []
    await shoot(page, "08-not-found-for-another-tenant")
    csv_text = await (await page.request.get(f"{live_server.base_url}/ui/calls.csv")).text()
    assert seeded.globex_ended in csv_text and "CAacme" not in csv_text
    await page.goto(f"{live_server.base_url}/ui/tickets")
    content = await page.content()
    assert ACME_SECRET not in content and "A-991" not in content and "+14155550123" not in content
    api = await page.request.get(f"{live_server.base_url}/api/conversations",
                                 headers={"Authorization": f"Bearer {live_server.globex_key}"})
    assert [c["call_sid"] for c in (await api.json())["conversations"]] == [seeded.globex_ended]


async def test_a_live_call_page_shows_a_new_message_within_two_seconds(page: Page, live_server: LiveServer) -> None:
    seeded = live_server.seeded
    await sign_in(page, live_server, "dev@acme.test")
    async with page.expect_response(re.compile(r"/events\?after=\d+$")):
        await page.goto(f"{live_server.base_url}/ui/calls/{seeded.acme_live}")
    assert await page.locator("#transcript > li").count() == 1
    async with service(live_server) as client:
        posted_at = time.monotonic()
        response = await client.post(f"/api/conversations/{seeded.acme_live}/messages", json={
            "message_id": "live-a1", "role": "assistant", "text": "Yes, I am here. How can I help?",
            "at": datetime.now(UTC).isoformat(), "seq": 2})
        assert response.status_code == 201
        await page.get_by_text("Yes, I am here. How can I help?").wait_for(timeout=2_000)
        assert time.monotonic() - posted_at < 2.0
        assert await accessibility_violations(page) == []
        await shoot(page, "09-live-call")
        ended = await client.post(f"/api/conversations/{seeded.acme_live}/end", json={
            "end_reason": "caller_hung_up", "ended_at": datetime.now(UTC).isoformat(), "duration_s": 31.0,
            "turns": [{"speech_stopped_to_played_ms": 640.0, "speech_stopped_to_model_audio_ms": 300.0}]})
        assert ended.status_code == 200
    await page.get_by_text("The call has ended (caller_hung_up).").wait_for(timeout=2_000)
    assert await page.locator("#transcript > li").count() == 2, "no message was shown twice"
    assert "640 ms" in await page.locator("#latency-chart").inner_text(), "the end brings the turn latency"
