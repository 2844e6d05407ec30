"""The operator console in real Chromium: every page, a failed run found by its idempotency key,
its timeline read, resumed once the fix is deployed and seen to complete; a failing run cancelled
(its saga compensates); dead letters of the outbox, a workflow and a consumer retried (the
consumer's parked key goes on); a webhook resent; nobody without an admin key let in."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from tests.browser.conftest import Env, deploy_fix, screenshot_dir

pytestmark = pytest.mark.timeout(120)


def test_unauthenticated_access_to_pages_and_actions_is_refused(browser: Browser, env: Env) -> None:
    context = browser.new_context()
    tab = context.new_page()
    tab.goto(env.base_url + "/dead-letters")
    expect(tab.locator("h1")).to_have_text("convergent console")
    assert "/login?next=%2Fdead-letters" in tab.url
    tab.fill("#key", "cvk_0000_not-a-key")
    tab.click("button[type=submit]")
    expect(tab.get_by_role("alert")).to_contain_text("unknown or revoked key")
    context.close()
    action = httpx.post(
        env.base_url + "/actions/dead_letter.retry",
        data={"target": str(env.ids["letter"]), "confirm": "yes"},
    )
    assert action.status_code == 401
    assert action.headers["content-type"] == "application/problem+json"


def test_every_page_opens_and_is_photographed(page: Page, env: Env, tmp_path: Path) -> None:
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    shots = screenshot_dir(tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    failing, failed = env.ids["failing"][0], env.ids["invoices"][1]
    # page -> (picture, text it shows); the pictures docs/console.md shows
    expected = {
        "/": ("overview", "Time to consistency"),
        "/runs": ("runs", "pay-1000"),
        f"/runs/{failing}": ("run", "idempotency key sent"),
        f"/runs/{failed}": ("run-failed", "issue_invoice"),
        "/messages": ("messages", "Parked keys"),
        "/dead-letters": ("dead-letters", "broker refused the message"),
        "/webhooks": ("webhooks", env.receiver.url),
        f"/webhooks/{env.ids['endpoint']}": ("webhooks-endpoint", "Recent attempts"),
        "/idempotency": ("idempotency", "In flight"),
        "/schedules": ("schedules", "nightly-restock"),
    }
    # for the documentation's pictures, wait until the worker has got there
    settled = {
        "/": page.locator(".parked-summary"),
        f"/runs/{failed}": page.locator("h1 .state-failed"),
        "/messages": page.locator("table.parked"),
        "/dead-letters": page.locator("tr", has_text="bank answered 500"),
    }
    for path, (name, text) in expected.items():
        if path in settled and screenshot_dir(tmp_path) != tmp_path:
            _reload_until(page, env.base_url + path, settled[path])
        page.goto(env.base_url + path)
        expect(page.locator("main")).to_contain_text(text)
        page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
    page.goto(env.base_url + "/")
    chart = page.locator("svg.chart").first
    expect(chart).to_contain_text("runs")  # its y axis is labelled
    updated = page.locator(".live").inner_text()
    expect(page.locator(".live")).not_to_have_text(updated, timeout=10_000)  # updates itself
    assert asked  # the pages, their CSS and script, the live updates
    assert [url for url in asked if not url.startswith(env.base_url)] == []  # nothing else


def test_find_a_failing_run_by_its_key_read_its_timeline_and_cancel_it(
    page: Page, env: Env
) -> None:
    page.goto(env.base_url + "/runs")
    page.fill("input[name=q]", "pay-1001")
    page.click("text=Filter")
    rows = page.locator("table.grid tbody tr")
    expect(rows).to_have_count(1)
    rows.first.locator("a").first.click()
    charge = page.locator("li.entry", has_text="charge_card")
    expect(charge).to_contain_text("retrying")
    expect(charge).to_contain_text("card processor answered 503")
    expect(charge).to_contain_text("backoff: next attempt")
    run_id = env.ids["failing"][1]
    expect(charge).to_contain_text(f"{run_id}:2:charge_card")  # the key the step sends
    page.click("text=Cancel run")
    expect(page.locator("form.confirm")).to_contain_text(f"Cancel run {run_id}?")
    page.click("text=Confirm: Cancel run")
    expect(page.locator(".notice.ok")).to_contain_text("cancel requested")
    for _ in range(60):  # the worker compensates, then ends the run cancelled
        if page.locator("h1 .state-cancelled").count():
            break
        page.wait_for_timeout(250)
        page.reload()
    expect(page.locator("h1")).to_contain_text("cancelled")
    release = page.locator("li.entry", has_text="release_stock")
    expect(release).to_contain_text("compensation")
    expect(release).to_contain_text("completed")
    history = page.locator("table.grid", has_text="run.cancel")
    expect(history).to_contain_text("ops-alice")
    expect(history).to_contain_text("ok")


def test_retry_a_dead_letter(page: Page, env: Env) -> None:
    page.goto(env.base_url + "/dead-letters")
    row = page.locator("tr", has_text="broker refused the message")
    row.get_by_role("link", name="Retry").click()
    expect(page.locator("form.confirm")).to_contain_text("back to its source")
    page.click("text=Confirm: Retry")
    expect(page.locator(".notice.ok")).to_contain_text("retried outbox dead letter")
    page.goto(env.base_url + f"/dead-letters/{env.ids['letter']}")
    expect(page.locator("h1")).to_contain_text("retried")
    expect(page.locator("main")).to_contain_text("dead_letter.retry")


def test_resend_a_webhook(page: Page, env: Env) -> None:
    endpoint = env.base_url + f"/webhooks/{env.ids['endpoint']}"
    page.goto(endpoint)
    failed = page.locator("tbody tr", has_text="down for maintenance")
    for _ in range(80):  # the dispatcher's first attempts
        if failed.count():
            break
        page.wait_for_timeout(250)
        page.reload()
    expect(failed.first).to_contain_text("503")
    env.receiver.ok = True
    message = str(env.ids["messages"][0])
    page.locator("tbody tr", has_text=message).first.get_by_role("link", name="Resend").click()
    page.click("text=Confirm: Resend")
    expect(page.locator(".notice.ok")).to_contain_text("queued for endpoint")
    # a delivery's first try that succeeded can only be the resend's (the original failed it)
    resent = (
        page.locator("tbody tr", has_text=message)
        .filter(has=page.locator("td.num", has_text=re.compile(r"^1$")))
        .filter(has_text="succeeded")
    )
    for _ in range(80):
        if resent.count():
            break
        page.wait_for_timeout(250)
        page.reload()
    expect(resent.first).to_be_visible()


def _reload_until(page: Page, path: str, ready: Locator, tries: int = 120) -> None:
    """Open ``path`` and reload it until ``ready`` shows (the worker is another process)."""
    page.goto(path)
    for _ in range(tries):
        if ready.count():
            return
        page.wait_for_timeout(250)
        page.reload()
    expect(ready.first).to_be_visible()


def test_find_a_failed_run_by_its_key_read_its_timeline_resume_it_and_see_it_complete(
    page: Page, env: Env
) -> None:
    page.goto(env.base_url + "/runs")
    page.fill("input[name=q]", "inv-2000")
    page.click("text=Filter")
    rows = page.locator("table.grid tbody tr")
    expect(rows).to_have_count(1)
    run_id = env.ids["invoices"][0]
    rows.first.locator("a").first.click()
    expect(page.locator("h1")).to_contain_text(str(run_id))
    _reload_until(page, page.url, page.locator("h1 .state-failed"))
    step = page.locator("li.entry", has_text="issue_invoice")
    expect(step).to_contain_text("ledger answered 422: tax code missing")
    expect(step).to_contain_text(f"{run_id}:2:issue_invoice")  # the key the step sent
    expect(page.locator("li.entry", has_text="reserve_stock")).to_contain_text("completed")
    deploy_fix(env, "inv-2000")
    page.click("text=Resume run")
    expect(page.locator("form.confirm")).to_contain_text(f"Resume run {run_id}")
    page.click("text=Confirm: Resume run")
    expect(page.locator(".notice.ok")).to_contain_text("run resumed from position 2")
    _reload_until(page, page.url, page.locator("h1 .state-completed"))
    expect(page.locator("li.entry", has_text="issue_invoice")).to_contain_text("completed")
    history = page.locator("table.grid", has_text="run.resume")
    expect(history).to_contain_text("ops-alice")
    expect(history).to_contain_text("ok")


def test_retry_a_workflow_dead_letter(page: Page, env: Env) -> None:
    letters = env.base_url + "/dead-letters?source=workflow"
    row = page.locator("tr", has_text="bank answered 500")
    _reload_until(page, letters, row)  # the saga compensates; its compensation gives up
    expect(row).to_contain_text("release_funds")
    deploy_fix(env, "refund-1")
    row.get_by_role("link", name="Retry").click()
    page.click("text=Confirm: Retry")
    expect(page.locator(".notice.ok")).to_contain_text("retried workflow dead letter")
    released = page.locator("li.entry", has_text="release_funds").filter(has_text="completed")
    _reload_until(page, env.base_url + f"/runs/{env.ids['refunds'][0]}", released)
    expect(page.locator("main")).to_contain_text("dead_letter.retry")


def test_retry_a_consumer_dead_letter_and_its_parked_key_goes_on(page: Page, env: Env) -> None:
    parked = page.locator("table.parked tr", has_text="acct-7")
    _reload_until(page, env.base_url + "/messages", parked)
    expect(parked).to_contain_text("ledger")
    expect(parked.locator("td.num")).to_have_text("2")  # the letter and the message behind it
    page.goto(env.base_url + "/")
    expect(page.locator(".parked-summary")).to_contain_text("1 key(s) parked")
    deploy_fix(env, "ledger")
    page.goto(env.base_url + "/dead-letters?source=consumer")
    page.locator("tr", has_text="account frozen").get_by_role("link", name="Retry").click()
    page.click("text=Confirm: Retry")
    expect(page.locator(".notice.ok")).to_contain_text("retried consumer dead letter")
    _reload_until(page, env.base_url + "/messages", page.locator("text=No key is parked"))


def test_pause_and_resume_a_schedule(page: Page, env: Env) -> None:
    page.goto(env.base_url + "/schedules")
    row = page.locator("table.schedules tr", has_text="nightly-restock")
    row.get_by_role("link", name="Pause").click()
    expect(page.locator("form.confirm")).to_contain_text("Pause schedule nightly-restock?")
    page.click("text=Confirm: Pause")
    expect(page.locator(".notice.ok")).to_contain_text("schedule nightly-restock paused")
    expect(row).to_contain_text("paused")
    row.get_by_role("link", name="Resume").click()
    page.click("text=Confirm: Resume")
    expect(page.locator(".notice.ok")).to_contain_text("schedule nightly-restock resumed")
    expect(row.locator(".state")).to_have_text("active")


def test_retry_every_dead_letter_a_filter_matches(page: Page, env: Env) -> None:
    page.goto(env.base_url + "/dead-letters")
    page.select_option("select[name=source]", "outbox")
    page.fill("input[name=name]", "console.returns")
    page.click("text=Filter")
    expect(page.locator("table.grid tbody tr")).to_have_count(2)
    page.click("text=Retry all matching")
    expect(page.locator("form.confirm")).to_contain_text("name=console.returns")
    page.click("text=Confirm: Retry all matching")
    expect(page.locator(".notice.ok")).to_contain_text("retried 2 dead letter(s)")
    expect(page.locator("main")).not_to_contain_text("nats: no responders")  # none left dead
