"""``ledger send``: the same operation as POST /v1/messages, from the command line, and the
send events in ``ledger audit``; ``--tag`` filters of ``ledger messages`` and metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import CALLBACK_URL, PLIVO_TOKEN, PUBLIC_URL, SYSTEM_KEY, wait_for_views
from tests.fake_plivo import AUTH_ID, FakePlivo
from tests.test_cli import ledger

UUID_PATTERN = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def _env(plivo: FakePlivo) -> dict[str, str]:
    return {
        "PLIVO_AUTH_ID": AUTH_ID,
        "PLIVO_AUTH_TOKEN": PLIVO_TOKEN,
        "PLIVO_API_URL": plivo.url,
        "LEDGER_PUBLIC_URL": PUBLIC_URL,
        "LEDGER_SYSTEM_KEY": SYSTEM_KEY.decode(),
    }


def _send(plivo: FakePlivo, database_url: str, tmp_path: Path, *args: str) -> Any:
    return ledger(
        "send",
        "--from",
        "14155550100",
        *args,
        database_url=database_url,
        data_dir=tmp_path,
        **_env(plivo),
    )


def test_ledger_send_prints_each_message_and_the_command_to_follow_it(
    plivo: FakePlivo, database_url: str, tmp_path: Path
) -> None:
    result = _send(
        plivo,
        database_url,
        tmp_path,
        "--to",
        "919876543210,919876543211",
        "--text",
        "hi",
        "--tag",
        "campaign=spring",
    )
    assert result.returncode == 0, result.stderr
    follows = re.findall(rf"^ledger audit ({UUID_PATTERN})$", result.stdout, re.MULTILINE)
    assert len(follows) == 2
    [sent] = plivo.sends
    assert (sent.body["url"], sent.body["method"], sent.body["dst"]) == (
        CALLBACK_URL,
        "POST",
        "919876543210<919876543211",
    )
    request = re.search(rf"send request ({UUID_PATTERN})", result.stdout)
    assert request is not None
    audit = ledger("audit", request.group(1), database_url=database_url, data_dir=tmp_path)
    assert audit.returncode == 0, audit.stderr
    assert "message.send_requested" in audit.stdout
    assert all(f"ledger audit {uuid}" in audit.stdout for uuid in follows)


async def test_a_sent_messages_audit_names_its_request_and_tags(
    plivo: FakePlivo, database_url: str, tmp_path: Path, client: AsyncTestClient[Litestar]
) -> None:
    result = _send(
        plivo,
        database_url,
        tmp_path,
        "--to",
        "919876543210",
        "--text",
        "hi",
        "--tag",
        "campaign=spring",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    [message] = json.loads(result.stdout)["messages"]
    uuid = message["message_uuid"]
    await wait_for_views(database_url, message["position"])
    audit = ledger("audit", uuid, database_url=database_url, data_dir=tmp_path)
    assert re.search(r"^tags\s+campaign=spring$", audit.stdout, re.MULTILINE), audit.stdout
    assert re.search(r"^sent by\s+request ", audit.stdout, re.MULTILINE), audit.stdout
    found = ledger(
        "messages", "--tag", "campaign=spring", database_url=database_url, data_dir=tmp_path
    )
    assert uuid in found.stdout
    other = ledger(
        "messages", "--tag", "campaign=autumn", database_url=database_url, data_dir=tmp_path
    )
    assert uuid not in other.stdout


def test_a_plivo_error_ends_ledger_send_with_one_line_saying_what_to_do(
    plivo: FakePlivo, database_url: str, tmp_path: Path
) -> None:
    plivo.fail_next(503, "service unavailable")
    result = _send(plivo, database_url, tmp_path, "--to", "919876543210", "--text", "hi")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "ledger: error: Plivo answered 503: Received status code 503 for the HTTP method "
        '"POST". Nothing was sent: retry later with a new Idempotency-Key.'
    ]


def test_ledger_send_without_a_sender_says_which_option_is_missing(
    plivo: FakePlivo, database_url: str, tmp_path: Path
) -> None:
    result = ledger(
        "send",
        "--to",
        "919876543210",
        "--text",
        "hi",
        database_url=database_url,
        data_dir=tmp_path,
        **_env(plivo),
    )
    assert result.returncode == 2
    assert "--from" in result.stderr
    assert plivo.sends == []
