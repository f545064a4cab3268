"""``ledger metrics``: every message accounted for, in a table, CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient

from api.reports import CSV_COLUMNS, CSV_ERROR_CODES, CSV_STATUSES
from ledger.error_codes import ERROR_CODES
from projections.fold import STATUS_RANKS
from tests.test_cli import ledger
from tests.test_cli_messages import send_messages

Client = AsyncTestClient[Litestar]
OUTCOMES = ("delivered", "undelivered", "failed", "sent")


async def send_one_of_each_outcome(client: Client, database_url: str) -> str:
    """Four messages an hour ago, one per outcome; returns their day (UTC)."""
    at = datetime.now(UTC) - timedelta(hours=1)
    await send_messages(
        client, database_url, *((at, "14155550100", outcome) for outcome in OUTCOMES)
    )
    return at.date().isoformat()


async def test_by_default_the_last_seven_days_are_shown_with_messages_in_flight(
    client: Client, settings: Any, tmp_path: Path
) -> None:
    day = await send_one_of_each_outcome(client, settings.database_url)
    result = ledger("metrics", database_url=settings.database_url, data_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = lines[0].split()
    assert header[:10] == [
        "day",
        "(UTC)",
        "messages",
        "delivered",
        "undelivered",
        "failed",
        "expired",
        "in",
        "flight",
        "rate",
    ]
    [row] = [line.split() for line in lines if line.startswith(day)]
    counts = dict(zip(["messages", *OUTCOMES[:3], "expired", "in flight"], row[1:7], strict=True))
    assert counts == {
        "messages": "4",
        "delivered": "1",
        "undelivered": "1",
        "failed": "1",
        "expired": "0",
        "in flight": "1",
    }
    assert row[7] == "33.3%"  # 1 delivered of 3 final outcomes
    [total] = [line.split() for line in lines if line.startswith("total")]
    assert total[1:7] == row[1:7]


def test_an_empty_range_says_so_in_words(database_url: str, tmp_path: Path) -> None:
    result = ledger(
        "metrics",
        "--start",
        "2020-01-01",
        "--end",
        "2020-01-07",
        database_url=database_url,
        data_dir=tmp_path,
    )
    assert (result.returncode, result.stdout) == (
        0,
        "no messages from 2020-01-01 to 2020-01-07 (days in UTC)\n",
    )


async def test_csv_has_the_same_columns_whatever_the_range_holds(
    client: Client, settings: Any, tmp_path: Path
) -> None:
    day = await send_one_of_each_outcome(client, settings.database_url)
    full = ledger("metrics", "--csv", database_url=settings.database_url, data_dir=tmp_path)
    empty = ledger(
        "metrics",
        "--csv",
        "--start",
        "2020-01-01",
        "--end",
        "2020-01-01",
        database_url=settings.database_url,
        data_dir=tmp_path,
    )
    assert empty.stdout.splitlines() == [",".join(CSV_COLUMNS)]
    [row] = list(csv.DictReader(io.StringIO(full.stdout)))
    assert tuple(row) == CSV_COLUMNS
    assert {f"status_{status}" for status in (*STATUS_RANKS, "none")} <= set(CSV_COLUMNS)
    assert {f"error_{code}" for code in ERROR_CODES} <= set(CSV_COLUMNS)
    assert row["day"] == day
    statuses = sum(int(row[f"status_{s}"]) for s in CSV_STATUSES) + int(row["status_other"])
    assert statuses == int(row["messages"]) == 4
    assert sum(int(row[f"error_{c}"]) for c in CSV_ERROR_CODES) == 2  # undelivered and failed


async def test_metrics_json_is_what_the_api_returns(
    client: Client, settings: Any, auth: dict[str, str], tmp_path: Path
) -> None:
    day = await send_one_of_each_outcome(client, settings.database_url)
    result = ledger(
        "metrics",
        "--start",
        day,
        "--end",
        day,
        "--json",
        database_url=settings.database_url,
        data_dir=tmp_path,
    )
    api = await client.get("/v1/metrics/daily", params={"start": day, "end": day}, headers=auth)
    assert json.loads(result.stdout) == api.json()
