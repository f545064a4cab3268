"""``/dashboard`` in a real headless Chromium (Debian's ``chromium`` and ``chromium-driver``,
driven by selenium; nothing is downloaded at run time), against a server whose ledger
``ledger simulate`` filled: the charts show the API's numbers, a new callback reaches the
live tail within 2 s, a wrong token is told so, a search opens an audit trail with its seal
proofs. One browser session serves the module; the chart test saves docs/dashboard.png.
"""

from __future__ import annotations

import random
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from api.simulate import lifecycle
from bench.harness import headless_chromium
from tests.conftest import API_TOKEN
from tests.reliability.conftest import (
    AUTHORIZED,
    LedgerServer,
    ServerFleet,
    signed,
    simulate,
    wait_for_projections,
)

pytestmark = pytest.mark.reliability

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "dashboard.png"
#: A recipient ``ledger simulate --to`` sends one message of each outcome.
RECIPIENT = "+1 415 555 0100"
TERMINAL = ("delivered", "undelivered", "failed", "rejected", "expired")


@pytest.fixture(scope="module")
async def filled(
    module_servers: ServerFleet, module_databases: Callable[[], str], tmp_path_factory: Any
) -> LedgerServer:
    """A server whose ledger ``ledger simulate`` filled, with every view caught up."""
    database_url = module_databases()
    # Alerts evaluated every 2 s, from 5 messages on: the drop made below fires at once.
    server = module_servers.create(
        database_url,
        name="dashboard",
        env={"LEDGER_ALERT_EVERY": "2s", "LEDGER_ALERT_MIN_MESSAGES": "5"},
    )
    cwd = tmp_path_factory.mktemp("simulate")
    result = simulate(
        server.base_url, f"--messages 300 --since 2h --seed 11 --to '{RECIPIENT}'", cwd=cwd
    )
    assert result.returncode == 0, result.stderr
    # A delivery drop: this hour yesterday every message was delivered, now many fail.
    rng, now = random.Random(5), datetime.now(UTC)
    drop = [(now - timedelta(days=1, minutes=10), "delivered")] * 20
    drop += [(now - timedelta(minutes=10), "failed")] * 20
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        for start, outcome in drop:
            for params in lifecycle(rng, start, outcome=outcome):
                callback = signed(params)
                response = await client.post(
                    "/plivo/status", content=callback.body, headers=callback.headers
                )
                assert response.status_code == 200, response.text
    await wait_for_projections(database_url)
    return server


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    """One headless Chromium for the module, through the system's chromedriver."""
    assert shutil.which(CHROMIUM), "install Debian's chromium and chromium-driver (.ci/run does)"
    driver = headless_chromium(CHROMIUM, CHROMEDRIVER)
    try:
        yield driver
    finally:
        driver.quit()


def api(server: LedgerServer, path: str) -> Any:
    response = httpx.get(f"{server.base_url}{path}", headers=AUTHORIZED, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def open_dashboard(driver: WebDriver, server: LedgerServer, token: str | None) -> None:
    """Load the dashboard afresh (no token kept), sign in with ``token``, and wait until
    every panel has loaded (its first load's time is measured by ``bench --only dashboard``)."""
    driver.get(f"{server.base_url}/dashboard")
    driver.execute_script("sessionStorage.clear()")
    driver.get(f"{server.base_url}/dashboard")
    if token is not None:
        box = driver.find_element(By.ID, "token")
        box.send_keys(token)
        driver.find_element(By.CSS_SELECTOR, "#login-form button").click()
        WebDriverWait(driver, 20).until(
            lambda d: d.execute_script("return document.documentElement.dataset.loaded")
        )


def chart_data(driver: WebDriver, canvas: str) -> dict[str, Any]:
    data: dict[str, Any] = driver.execute_script(
        "const c = Chart.getChart(arguments[0]);"
        " return {labels: c.data.labels, values: c.data.datasets.map(d => d.data)};",
        canvas,
    )
    return data


def day_range() -> str:
    today = datetime.now(UTC).date()
    return f"start={today - timedelta(days=6)}&end={today}"


def test_a_wrong_token_is_told_so(browser: WebDriver, filled: LedgerServer) -> None:
    open_dashboard(browser, filled, None)
    browser.find_element(By.ID, "token").send_keys("not-the-token")
    browser.find_element(By.CSS_SELECTOR, "#login-form button").click()
    message: str = WebDriverWait(browser, 10).until(
        lambda d: d.find_element(By.ID, "login-error").text or False
    )
    assert "refused this token (401)" in message
    assert "ledger token" in message
    assert browser.find_element(By.ID, "login").get_attribute("open") is not None


def test_the_charts_show_the_apis_numbers(browser: WebDriver, filled: LedgerServer) -> None:
    open_dashboard(browser, filled, API_TOKEN)
    days = api(filled, f"/v1/metrics/daily?{day_range()}")
    daily = chart_data(browser, "chart-daily")
    assert daily["labels"] == [day["day"] for day in days]
    assert daily["values"][0] == pytest.approx([day["delivery_rate"] * 100 for day in days])

    statuses: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for day in days:
        statuses.update(day["statuses"])
        errors.update(day["error_codes"])
    mix = chart_data(browser, "chart-status")
    assert dict(zip(mix["labels"], mix["values"][0], strict=True)) == dict(statuses)
    shown = {
        row.get_attribute("data-code"): int(row.get_attribute("data-count") or 0)
        for row in browser.find_elements(By.CSS_SELECTOR, "#errors tbody tr")
    }
    assert shown == dict(errors.most_common(10))

    delivered = statuses["delivered"]
    rate = delivered / sum(statuses[s] for s in TERMINAL)
    amount = sum(float(day["total_amount"]) for day in days)
    assert browser.find_element(By.ID, "tile-messages").text == f"{sum(statuses.values()):,}"
    assert browser.find_element(By.ID, "tile-rate").text == f"{rate * 100:.1f} %"
    assert browser.find_element(By.ID, "tile-cost").text == f"{amount / delivered:.5f}"


def test_the_breakdown_panels_show_the_apis_numbers(
    browser: WebDriver, filled: LedgerServer
) -> None:
    open_dashboard(browser, filled, API_TOKEN)
    hours = api(filled, f"/v1/metrics/breakdown?{day_range()}&by=hour&limit=1000")
    rows = sorted(hours["rows"], key=lambda row: row["hour"])
    hourly = chart_data(browser, "chart-hourly")
    assert len(hourly["labels"]) == len(rows) > 0
    assert hourly["values"][0] == pytest.approx(
        [None if r["delivery_rate"] is None else r["delivery_rate"] * 100 for r in rows]
    )
    for canvas, stage in (("chart-queue", "queue"), ("chart-carrier", "carrier")):
        counts = [bucket["count"] for bucket in hours["latency"][stage]]
        assert sum(counts) > 0
        assert chart_data(browser, canvas)["values"][0] == counts

    table = api(filled, f"/v1/metrics/breakdown?{day_range()}&by=country,carrier&limit=500")
    shown = [
        (r.get_attribute("data-country"), r.get_attribute("data-carrier"), r.text)
        for r in browser.find_elements(By.CSS_SELECTOR, "#countries tbody tr")
    ]
    expected = sorted(table["rows"], key=lambda row: -row["messages"])
    assert [(country, carrier) for country, carrier, _ in shown] == [
        (row["country"], row["carrier"]) for row in expected
    ]
    for (_, _, text), row in zip(shown, expected, strict=True):
        assert f"{row['messages']:,}" in text
        if row["cost_per_delivered"] is not None:
            assert f"{float(row['cost_per_delivered']):.5f}" in text


def test_the_firing_alerts_are_listed(browser: WebDriver, filled: LedgerServer) -> None:
    deadline = time.monotonic() + 20
    while not (firing := api(filled, "/v1/alerts")["alerts"]) and time.monotonic() < deadline:
        time.sleep(0.5)  # evaluated every 2 s here
    assert firing, "the delivery drop made by the fixture did not fire"
    open_dashboard(browser, filled, API_TOKEN)
    rows = browser.find_elements(By.CSS_SELECTOR, "#alerts tbody tr")
    assert len(rows) == len(firing)
    for shown, alert in zip(rows, firing, strict=True):
        assert f"{alert['delivery_rate'] * 100:.1f} %" in shown.text
        assert f"{alert['baseline_rate'] * 100:.1f} %" in shown.text
        assert f"{alert['drop']:.1f} pp" in shown.text
        assert (alert["country"] or alert["sender"]) in (shown.get_attribute("data-where") or "")


def test_the_country_table_sorts_by_rate(browser: WebDriver, filled: LedgerServer) -> None:
    open_dashboard(browser, filled, API_TOKEN)
    browser.find_element(By.CSS_SELECTOR, "[data-sort=delivery_rate]").click()
    table = api(filled, f"/v1/metrics/breakdown?{day_range()}&by=country,carrier&limit=500")
    rates = {(r["country"], r["carrier"]): r["delivery_rate"] or -1.0 for r in table["rows"]}
    shown = [
        rates[(r.get_attribute("data-country"), r.get_attribute("data-carrier"))]
        for r in browser.find_elements(By.CSS_SELECTOR, "#countries tbody tr")
    ]
    assert len(shown) == len(rates)
    assert shown == sorted(shown, reverse=True)


def test_a_new_callback_reaches_the_live_tail_within_2_s(
    browser: WebDriver, filled: LedgerServer
) -> None:
    open_dashboard(browser, filled, API_TOKEN)
    WebDriverWait(browser, 10).until(lambda d: d.find_element(By.ID, "tail-state").text == "live")
    rng = random.Random(99)
    for params in [step for _ in range(3) for step in lifecycle(rng, datetime.now(UTC))]:
        callback = signed(params)
        sent = time.perf_counter()
        response = httpx.post(
            f"{filled.base_url}/plivo/status", content=callback.body, headers=callback.headers
        )
        assert response.status_code == 200, response.text
        selector = f'#tail tbody tr[data-id$="-{response.json()["position"]}"]'
        WebDriverWait(browser, 2.0, poll_frequency=0.02).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, selector)  # noqa: B023 - used at once
        )
        print(f"callback to live tail: {(time.perf_counter() - sent) * 1000:.0f} ms")
        row = browser.find_element(By.CSS_SELECTOR, selector)
        assert row.get_attribute("data-uuid") == callback.message_uuid
        assert callback.status in row.text
    # The README's picture: every panel loaded, the tail with the callbacks just sent.
    SCREENSHOT.parent.mkdir(exist_ok=True)
    browser.save_screenshot(str(SCREENSHOT))


def test_a_search_opens_the_audit_trail_with_seal_proofs(
    browser: WebDriver, filled: LedgerServer
) -> None:
    open_dashboard(browser, filled, API_TOKEN)
    browser.find_element(By.CSS_SELECTOR, "#search [name=to]").send_keys(RECIPIENT)
    browser.find_element(By.CSS_SELECTOR, "#search button").click()
    results = WebDriverWait(browser, 10).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#results tbody tr")
    )
    expected = api(filled, "/v1/messages?to=14155550100&limit=20")["items"]
    assert [r.get_attribute("data-uuid") for r in results] == [m["message_uuid"] for m in expected]
    uuid = results[0].get_attribute("data-uuid")
    trail = api(filled, f"/v1/messages/{uuid}/events")
    deadline = time.monotonic() + 10
    while not all(event["seal"] for event in trail["events"]) and time.monotonic() < deadline:
        time.sleep(0.2)  # the sealer closes a block every second
        trail = api(filled, f"/v1/messages/{uuid}/events")
    results[0].click()
    rows = WebDriverWait(browser, 10).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#audit-events tbody tr")
    )
    assert [int(r.get_attribute("data-position") or 0) for r in rows] == [
        event["position"] for event in trail["events"]
    ]
    first_seal = trail["events"][0]["seal"]
    assert f"block {first_seal['block']}, leaf {first_seal['leaf_index']}" in rows[0].text
