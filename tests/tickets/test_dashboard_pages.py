"""The dashboard's pages as a browser without JavaScript sees them: sign-in, calls (filters, search,
paging, CSV), a call's page, the live stream, tickets and analytics."""

from __future__ import annotations

import csv
import io
import re

from sqlalchemy import select
from tests.tickets.dashboard_data import ACME_SECRET, GLOBEX_SECRET, Dashboard, add_message, csrf_of, sign_in

from switchboard.tickets.database import create_session_factory
from switchboard.tickets.ui.accounts import AccountStore
from switchboard.tickets.ui.models import AuditEvent


def rows_of(html: str) -> list[str]:
    return re.findall(r'<tr data-call-sid="([^"]+)"', html)


async def audit_actions(dashboard: Dashboard) -> list[str]:
    async with create_session_factory(dashboard.engine)() as session, session.begin():
        return list(await session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))


async def test_pages_need_a_sign_in_and_the_cookie_is_locked_down(dashboard: Dashboard) -> None:
    async with dashboard.browser() as browser:
        response = await browser.get("/ui/calls?status=live")
        assert response.status_code == 303
        assert response.headers["location"] == "/ui/login?next=%2Fui%2Fcalls%3Fstatus%3Dlive"
        signed_in = await sign_in(browser, "dev@acme.test")
        assert signed_in.status_code == 303 and signed_in.headers["location"] == "/ui/calls"
        cookie = next(v for k, v in signed_in.headers.multi_items() if k == "set-cookie" and "sb_session" in v)
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/ui" in cookie
        assert "Secure" not in cookie
        assert (await browser.get("/ui/calls")).status_code == 200
    async with dashboard.browser("https://app.test") as secure_browser:
        signed_in = await sign_in(secure_browser, "dev@acme.test")
        cookie = next(v for k, v in signed_in.headers.multi_items() if k == "set-cookie" and "sb_session" in v)
        assert "Secure" in cookie


async def test_sign_out_needs_the_csrf_token_and_ends_the_session(dashboard: Dashboard) -> None:
    async with dashboard.browser() as browser:
        await sign_in(browser, "viewer@acme.test")
        page = await browser.get("/ui/calls")
        session_cookie = browser.cookies.get("sb_session")
        assert (await browser.post("/ui/logout", data={"csrf_token": "forged"})).status_code == 403
        assert (await browser.get("/ui/calls")).status_code == 200
        out = await browser.post("/ui/logout", data={"csrf_token": csrf_of(page.text)})
        assert out.status_code == 303 and out.headers["location"] == "/ui/login"
    async with dashboard.browser() as replay:
        replay.cookies.set("sb_session", session_cookie or "", domain="app.test", path="/ui")
        assert (await replay.get("/ui/calls")).status_code == 303, "a signed-out session must not work again"
    assert await audit_actions(dashboard) == ["user.added"] * 6 + ["sign_in.succeeded", "sign_out"]


async def test_wrong_passwords_are_refused_then_rate_limited(dashboard: Dashboard) -> None:
    async with dashboard.browser() as browser:
        for _ in range(5):
            wrong = await sign_in(browser, "dev@acme.test", "not the password")
            assert wrong.status_code == 401 and "Wrong email or password." in wrong.text
        limited = await sign_in(browser, "dev@acme.test")
        assert limited.status_code == 429 and "too many failed sign-ins" in limited.text
        dashboard.clock.advance(16 * 60)
        assert (await sign_in(browser, "dev@acme.test")).status_code == 303
    async with dashboard.browser() as other, dashboard.browser() as stranger:
        assert (await sign_in(other, "viewer@acme.test")).status_code == 303, "another account is not locked"
        assert (await sign_in(stranger, "nobody@acme.test")).status_code == 401


async def test_the_login_form_refuses_a_post_without_its_token(dashboard: Dashboard) -> None:
    async with dashboard.browser() as browser:
        response = await browser.post("/ui/login", data={"email": "dev@acme.test", "password": "x" * 12})
        assert response.status_code == 403
        assert browser.cookies.get("sb_session") is None


async def test_a_removed_user_is_signed_out_at_once(dashboard: Dashboard) -> None:
    async with dashboard.browser() as browser:
        await sign_in(browser, "viewer@acme.test")
        assert (await browser.get("/ui/calls")).status_code == 200
        async with create_session_factory(dashboard.engine)() as session:
            await AccountStore(session).remove_user("viewer@acme.test", now=dashboard.clock.wall(), actor="test")
        assert (await browser.get("/ui/calls")).status_code == 303


async def test_calls_list_shows_own_tenant_newest_first_with_figures(dashboard: Dashboard) -> None:
    seeded = dashboard.seeded
    async with dashboard.browser() as browser:
        await sign_in(browser, "viewer@acme.test")
        page = (await browser.get("/ui/calls")).text
        assert rows_of(page) == [seeded.acme_live, seeded.acme_ended, seeded.acme_old]
        assert GLOBEX_SECRET not in page and seeded.globex_ended not in page
        ended_row = page.split(f'data-call-sid="{seeded.acme_ended}"')[1].split("</tr>")[0]
        for shown in ("+1******0123", "caller_hung_up", "1:15", "$0.0792", "1,275 ms", ">3<"):
            assert shown in ended_row, shown
        assert "Export CSV" not in page, "a viewer cannot export"
    async with dashboard.browser() as operator:
        await sign_in(operator, "ops@switchboard.test")
        assert seeded.globex_ended in rows_of((await operator.get("/ui/calls")).text)


async def test_calls_filters_and_search(dashboard: Dashboard) -> None:
    seeded = dashboard.seeded
    async with dashboard.browser() as browser:
        await sign_in(browser, "dev@acme.test")

        async def listed(**params: str) -> list[str]:
            response = await browser.get("/ui/calls", params=params)
            assert response.status_code == 200, response.text
            return rows_of(response.text)

        assert await listed(status="live") == [seeded.acme_live]
        assert await listed(status="ended") == [seeded.acme_ended, seeded.acme_old]
        assert await listed(end_reason="transferred") == [seeded.acme_old]
        assert await listed(caller="0123") == [seeded.acme_ended]
        assert await listed(has_ticket="yes") == [seeded.acme_ended]
        assert await listed(has_ticket="no") == [seeded.acme_live, seeded.acme_old]
        assert await listed(slower_than_ms="1000") == [seeded.acme_ended]
        assert await listed(slower_than_ms="1500") == []
        assert await listed(**{"from": "2026-12-01", "to": "2026-12-01"}) == [seeded.acme_live, seeded.acme_ended]
        assert await listed(to="2026-11-29") == [seeded.acme_old]
        assert await listed(q="refund") == [seeded.acme_ended]
        assert await listed(q="opening hours") == [seeded.acme_old]
        assert await listed(q=GLOBEX_SECRET) == [], "search must not reach another tenant's transcripts"
        bad = await browser.get("/ui/calls", params={"from": "yesterday"})
        assert bad.status_code == 400 and "must be a date" in bad.text and rows_of(bad.text) == []


async def test_paging_by_fifty(dashboard: Dashboard) -> None:
    for n in range(52):
        response = await dashboard.service.put(f"/api/conversations/CApage{n:03d}", json={
            "tenant": "acme-support", "caller": "+15550001111", "started_at": f"2026-11-20T10:{n:02d}:00+00:00"})
        assert response.status_code == 201
    async with dashboard.browser() as browser:
        await sign_in(browser, "viewer@acme.test")
        first = await browser.get("/ui/calls")
        assert len(rows_of(first.text)) == 50 and 'rel="next"' in first.text
        second = await browser.get("/ui/calls", params={"page": "2"})
        assert len(rows_of(second.text)) == 5 and 'rel="prev"' in second.text and 'rel="next"' not in second.text
        assert not set(rows_of(first.text)) & set(rows_of(second.text))


async def test_csv_exports_the_filtered_rows_for_developers_and_is_audited(dashboard: Dashboard) -> None:
    seeded = dashboard.seeded
    async with dashboard.browser() as browser:
        await sign_in(browser, "dev@acme.test")
        response = await browser.get("/ui/calls.csv", params={"status": "ended"})
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(response.text)))
        assert [r["call_sid"] for r in rows] == [seeded.acme_ended, seeded.acme_old]
        assert rows[0]["caller"] == "+1******0123" and rows[0]["has_ticket"] == "yes"
        assert rows[0]["median_turn_ms"] == "1275.0" and rows[0]["turns"] == "3"
    assert "calls.exported" in await audit_actions(dashboard)
    async with dashboard.browser() as viewer:
        await sign_in(viewer, "viewer@acme.test")
        assert (await viewer.get("/ui/calls.csv")).status_code == 403


async def test_call_page_reads_like_the_conversation(dashboard: Dashboard) -> None:
    seeded = dashboard.seeded
    async with dashboard.browser() as browser:
        await sign_in(browser, "dev@acme.test")
        page = (await browser.get(f"/ui/calls/{seeded.acme_ended}")).text
    order = [page.index(text) for text in (ACME_SECRET, "lookup_order", "Your order A-991 shipped yesterday and",
                                           "call me back about a refund", "issue_refund", "callback ticket")]
    assert order == sorted(order)
    assert "09:00:02" in page and "+0:02" in page and "+0:13" in page
    assert "interrupted — the caller cut in here" in page
    assert '<details class="tool failed">' in page and "refund_service_down" in page
    assert "&#34;order_id&#34;: &#34;A-991&#34;" in page or '"order_id": "A-991"' in page
    assert "412 ms" in page and "1,503 ms" in page
    chart = page.split('id="latency-chart"')[1].split("</ol>")[0]
    assert chart.count("<li>") == 3 and "not measured" in chart
    assert 'style="width: 100.0%"' in chart and 'style="width: 50.0%"' in chart
    assert f'href="/ui/tickets#ticket-{seeded.acme_ticket_id}"' in page
    assert "http://opik.test/api/v1/session/redirect/projects/?trace_id=trace-CAacme0001" in page
    assert "caller_hung_up" in page and "input_tokens" in page and "$" in page


async def test_a_viewer_sees_no_tool_arguments_results_or_trace(dashboard: Dashboard) -> None:
    async with dashboard.browser() as browser:
        await sign_in(browser, "viewer@acme.test")
        page = (await browser.get(f"/ui/calls/{dashboard.seeded.acme_ended}")).text
    assert "lookup_order" in page and "error" in page
    assert "A-991&#34;" not in page and "order_id" not in page and "refund_service_down" not in page
    assert "opik.test" not in page and "shown to developers" in page


async def test_live_stream_sends_messages_resumes_without_duplicates_and_ends(dashboard: Dashboard) -> None:
    seeded = dashboard.seeded
    await add_message(dashboard.service, seeded.acme_live, "a1", 2, "assistant", "Yes, how can I help?",
                      dashboard.clock.wall())
    end = await dashboard.service.post(f"/api/conversations/{seeded.acme_live}/end", json={
        "end_reason": "caller_hung_up", "ended_at": dashboard.clock.wall().isoformat(), "duration_s": 20.0})
    assert end.status_code == 200
    async with dashboard.browser() as browser:
        await sign_in(browser, "viewer@acme.test")
        whole = await browser.get(f"/ui/calls/{seeded.acme_live}/events")
        assert whole.headers["content-type"].startswith("text/event-stream")
        ids = re.findall(r"^id: (\d+)$", whole.text, re.M)
        assert len(ids) == 2 and "Hello, is anyone there?" in whole.text and "how can I help" in whole.text
        last = whole.text.rstrip().split("\n\n")[-1]
        assert last.startswith('event: ended\ndata: {"status":"ended","end_reason":"caller_hung_up"')
        assert "No turns were measured on this call." in last
        resumed = await browser.get(f"/ui/calls/{seeded.acme_live}/events", headers={"Last-Event-ID": ids[0]})
        assert re.findall(r"^id: (\d+)$", resumed.text, re.M) == [ids[1]]
        assert "Hello, is anyone there?" not in resumed.text
        after_page = await browser.get(f"/ui/calls/{seeded.acme_live}/events", params={"after": ids[0]})
        assert re.findall(r"^id: (\d+)$", after_page.text, re.M) == [ids[1]]


async def test_tickets_open_first_numbers_by_role_and_marked_done(dashboard: Dashboard) -> None:
    seeded = dashboard.seeded
    async with dashboard.browser() as viewer:
        await sign_in(viewer, "viewer@acme.test")
        page = (await viewer.get("/ui/tickets")).text
        assert "+1******0123" in page and "+14155550123" not in page and GLOBEX_SECRET not in page
    async with dashboard.browser() as developer:
        await sign_in(developer, "dev@acme.test")
        page = (await developer.get("/ui/tickets")).text
        assert "+14155550123" in page and f'href="/ui/calls/{seeded.acme_ended}"' in page
        done = await developer.post(f"/ui/tickets/{seeded.acme_ticket_id}/status",
                                    data={"status": "done", "csrf_token": csrf_of(page)})
        assert done.status_code == 303
        forged = await developer.post(f"/ui/tickets/{seeded.acme_ticket_id}/status", data={"status": "open"})
        assert forged.status_code == 403
    tickets = (await dashboard.service.get("/api/tickets", params={"call_sid": seeded.acme_ended})).json()["tickets"]
    assert tickets[0]["status"] == "done"
    assert "ticket.status_changed" in await audit_actions(dashboard)


async def test_analytics_figures_per_tenant_and_for_operators(dashboard: Dashboard) -> None:
    async with dashboard.browser() as browser:
        await sign_in(browser, "dev@acme.test")
        page = (await browser.get("/ui/analytics", params={"days": "7"})).text
    kpis = page.split('id="kpis"')[1].split("</dl>")[0]
    assert "<dd>3</dd>" in kpis
    assert "850 ms" in kpis  # median of 400, 850, 1700
    assert "1,700 ms" in kpis
    assert "33.3 %" in kpis  # one transfer of three calls; one callback of three
    assert "caller_hung_up" in page and "transferred" in page and "Per tenant" not in page
    async with dashboard.browser() as operator:
        await sign_in(operator, "ops@switchboard.test")
        page = (await operator.get("/ui/analytics", params={"days": "7"})).text
    assert "Per tenant" in page and "globex-help" in page and "<dd>4</dd>" in page


async def test_a_tenant_admin_manages_people_and_keys_of_their_tenant(dashboard: Dashboard) -> None:
    async with dashboard.browser() as viewer:
        await sign_in(viewer, "viewer@acme.test")
        assert (await viewer.get("/ui/admin")).status_code == 403
    async with dashboard.browser() as admin:
        await sign_in(admin, "admin@acme.test")
        page = await admin.get("/ui/admin")
        assert page.status_code == 200 and "dev@acme.test" in page.text and "globex" not in page.text
        csrf = csrf_of(page.text)
        added = await admin.post("/ui/admin/users", data={
            "csrf_token": csrf, "email": "new@acme.test", "password": "long enough pw", "role": "viewer"})
        assert added.status_code == 200 and "Added new@acme.test (viewer)." in added.text
        refused = await admin.post("/ui/admin/users", data={
            "csrf_token": csrf, "email": "op@acme.test", "password": "long enough pw", "role": "operator"})
        assert refused.status_code == 400 and "op@acme.test" not in refused.text.split('id="users"')[1]
        created = await admin.post("/ui/admin/keys", data={"csrf_token": csrf, "role": "developer", "name": "crm"})
        key = re.search(r'<code id="new-key">([^<]+)</code>', created.text)
        assert key is not None
        async with dashboard.with_bearer(key[1]) as api:
            assert (await api.get("/api/tickets")).status_code == 200
            key_id = re.search(r'name="key_id" value="(\d+)"', created.text)
            assert key_id is not None
            revoked = await admin.post("/ui/admin/keys/revoke", data={"csrf_token": csrf, "key_id": key_id[1]})
            assert revoked.status_code == 303
            assert (await api.get("/api/tickets")).status_code == 401
        assert (await admin.post("/ui/admin/users/remove", data={"csrf_token": csrf, "email": "new@acme.test"})
                ).status_code == 303
        assert (await admin.post("/ui/admin/users/remove", data={"email": "dev@acme.test"})).status_code == 403
        audit_page = (await admin.get("/ui/admin")).text.split('id="audit"')[1]
        for action in ("user.added", "key.created", "key.revoked", "user.removed", "sign_in.succeeded"):
            assert action in audit_page
        assert "dev@globex.test" not in audit_page
