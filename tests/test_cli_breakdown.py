"""``ledger metrics --by``: the breakdown as a table, JSON or CSV."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from tests.test_breakdown_api import traffic as traffic_fixture
from tests.test_cli import ledger

traffic = traffic_fixture
DAY = ("--start", "2026-03-01", "--end", "2026-03-01")


def test_metrics_by_country_and_carrier_is_a_table_most_messages_first(
    database_url: str, tmp_path: Path, traffic: None
) -> None:
    result = ledger(
        "metrics", "--by", "country,carrier", *DAY, database_url=database_url, data_dir=tmp_path
    )
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines() if line.startswith(("IN", "US"))]
    assert [row[:3] for row in rows][:2] == [["IN", "AIRCEL", "4"], ["US", "T-Mobile", "3"]]


def test_metrics_by_json_is_the_breakdown_api_shape(
    database_url: str, tmp_path: Path, traffic: None
) -> None:
    result = ledger(
        "metrics", "--by", "country", "--json", *DAY, database_url=database_url, data_dir=tmp_path
    )
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["by"] == ["country"]
    assert [(r["country"], r["messages"]) for r in body["rows"]] == [("IN", 5), ("US", 3)]


def test_metrics_by_csv_filters_by_country(
    database_url: str, tmp_path: Path, traffic: None
) -> None:
    result = ledger(
        "metrics",
        "--by",
        "carrier",
        "--country",
        "IN",
        "--csv",
        *DAY,
        database_url=database_url,
        data_dir=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert {r["carrier"]: r["messages"] for r in rows} == {"AIRCEL": "4", "BSNL Mobile": "1"}


def test_an_unknown_dimension_is_one_clear_line(database_url: str, tmp_path: Path) -> None:
    result = ledger("metrics", "--by", "planet", database_url=database_url, data_dir=tmp_path)
    assert result.returncode != 0
    assert "unknown dimension 'planet'" in result.stderr
    assert "Traceback" not in result.stderr
