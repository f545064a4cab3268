"""The ledger command line, run as a real subprocess against the test database: help, errors,
settings, data location, audit and status, replay."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from api.simulate import lifecycle, sign
from ledger.database import connect
from ledger.migrate import available_migrations
from tests.conftest import CALLBACK_URL, PLIVO_TOKEN, run_ledger, wait_for_views

MESSAGE = "0f7b6c1e-3d1a-4c55-9a55-7d1c8f0e2b10"
#: Every migration the code ships, as the CLI names them.
ALL_MIGRATIONS = ", ".join(f"{m.version:03d}_{m.name}" for m in available_migrations())
ROOT = Path(__file__).resolve().parent.parent
Params = list[tuple[str, str]]


def ledger(
    *args: str, database_url: str, data_dir: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``ledger ARGS`` in ``data_dir`` with a clean environment pointing at the test
    database."""
    return run_ledger(
        *args,
        cwd=data_dir,
        env={"DATABASE_URL": database_url, "LEDGER_DATA_DIR": str(data_dir), **env},
    )


async def post(client: AsyncTestClient[Litestar], *callbacks: Params) -> int:
    """Post signed callbacks in this order; return the highest position acknowledged."""
    last = 0
    for params in callbacks:
        signed = sign(params, url=CALLBACK_URL, auth_token=PLIVO_TOKEN)
        response = await client.post("/plivo/status", content=signed.body, headers=signed.headers)
        assert response.status_code == 200, response.text
        last = max(last, response.json()["position"])
    return last


async def record_lifecycle(client: AsyncTestClient[Litestar], database_url: str) -> list[Params]:
    """A queued → sent → undelivered lifecycle, posted in Plivo's order and projected."""
    steps = lifecycle(
        random.Random(11), datetime(2026, 11, 23, 9, tzinfo=UTC), MESSAGE, outcome="undelivered"
    )
    await wait_for_views(database_url, await post(client, *steps))
    return steps


def timeline_rows(stdout: str) -> list[list[str]]:
    """The audit timeline's rows, split into words (each time is two words)."""
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("position"))
    return [line.split() for line in lines[header + 2 :] if line.strip()]


def header_value(stdout: str, label: str) -> str:
    """The value of one line of the audit or status header."""
    for line in stdout.splitlines():
        if line.startswith(label + " "):
            return line[len(label) :].strip()
    raise AssertionError(f"no {label!r} line in:\n{stdout}")


# --- Help and usage --------------------------------------------------------------------------


def test_help_lists_the_commands_in_the_order_a_newcomer_needs_them(tmp_path: Path) -> None:
    result = run_ledger("--help", cwd=tmp_path, env={})
    assert result.returncode == 0, result.stderr
    order = [
        "serve",
        "worker",
        "migrate",
        "audit",
        "status",
        "messages",
        "metrics",
        "replay",
        "token",
        "simulate",
    ]
    positions = [result.stdout.find(f"│ {name} ") for name in order]
    assert all(p >= 0 for p in positions), result.stdout
    assert positions == sorted(positions)


@pytest.mark.parametrize(
    "command",
    ["serve", "worker", "migrate", "audit", "status", "messages", "metrics", "replay", "token"],
)
def test_every_command_shows_examples_in_its_help(command: str, tmp_path: Path) -> None:
    result = run_ledger(command, "--help", cwd=tmp_path, env={"LEDGER_PORT": "not read"})
    assert result.returncode == 0, result.stderr
    assert "Examples:" in result.stdout
    assert f"ledger {command}" in result.stdout.split("Examples:")[1]


@pytest.mark.parametrize(
    ("option", "limit"), [("--port", "1<=x<=65535"), ("--workers", "1<=x<=64")]
)
def test_serve_refuses_zero_instead_of_falling_back_to_the_default(
    option: str, limit: str, tmp_path: Path
) -> None:
    result = run_ledger("serve", option, "0", cwd=tmp_path, env={})
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"ledger: error: Invalid value for '{option}': 0 is not in the range {limit} "
        "(see 'ledger serve --help')"
    ]


def test_dev_py_help_prints_its_usage_and_succeeds() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "dev.py"), "--help"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 0
    assert "python3 dev.py serve" in result.stdout
    assert "python3 dev.py ledger COMMAND" in result.stdout


def test_dev_py_ledger_help_shows_the_cli_help(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "dev.py"), "ledger", "--help"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "Usage: ledger [OPTIONS] COMMAND" in result.stdout
    assert "Support and analysts" in result.stdout


# --- Settings, data location and the database ------------------------------------------------


def test_a_bad_setting_stops_the_command_with_one_line_naming_it(
    database_url: str, tmp_path: Path
) -> None:
    result = ledger("migrate", database_url=database_url, data_dir=tmp_path, LEDGER_PORT="http")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "ledger: error: LEDGER_PORT='http' is not a whole number: set it to e.g. 8000"
    ]


def test_a_database_url_with_the_wrong_scheme_is_named_without_the_password(
    tmp_path: Path,
) -> None:
    result = ledger(
        "migrate", database_url="mysql://root:hunter2@db.example.com/ledger", data_dir=tmp_path
    )
    assert result.returncode == 2
    assert "hunter2" not in result.stderr + result.stdout
    assert result.stderr.splitlines() == [
        "ledger: error: DATABASE_URL has the wrong scheme 'mysql': "
        "set it like postgresql://user:password@host:5432/ledger"
    ]


def test_token_run_from_another_directory_returns_the_same_token(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    env = {"HOME": str(home)}  # no LEDGER_DATA_DIR: the per-user default
    first = run_ledger("token", cwd=tmp_path / "one", env=env)
    second = run_ledger("token", cwd=tmp_path / "two", env=env)
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert first.stdout == second.stdout
    assert "generated a new token" in first.stderr
    assert "generated" not in second.stderr
    assert (home / ".local/share/plivo-delivery-ledger/api-token").is_file()


def test_the_env_file_named_by_ledger_env_file_is_read_from_any_directory(
    tmp_path: Path,
) -> None:
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / ".env").write_text("LEDGER_API_TOKENS=token-from-the-env-file\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"HOME": str(tmp_path), "LEDGER_ENV_FILE": str(checkout / ".env")}
    result = run_ledger("token", cwd=elsewhere, env=env)
    assert (result.returncode, result.stdout) == (0, "token-from-the-env-file\n")


def test_the_token_generated_once_is_kept_private_and_shown_again(
    database_url: str, tmp_path: Path
) -> None:
    first = ledger("token", database_url=database_url, data_dir=tmp_path)
    second = ledger("token", database_url=database_url, data_dir=tmp_path)
    assert first.stdout == second.stdout
    assert len(first.stdout.strip()) >= 32
    assert (tmp_path / "api-token").stat().st_mode & 0o777 == 0o600


def test_migrate_reports_an_up_to_date_database(database_url: str, tmp_path: Path) -> None:
    result = ledger("migrate", database_url=database_url, data_dir=tmp_path)
    assert (result.returncode, result.stdout.strip()) == (0, "database is up to date")


async def test_migrate_warns_of_migrations_a_newer_release_applied(
    database_url: str, tmp_path: Path
) -> None:
    async with connect(database_url) as conn:
        await conn.execute(
            "INSERT INTO schema_migrations (version, name) VALUES (999, 'from_the_future')"
        )
    result = ledger("migrate", database_url=database_url, data_dir=tmp_path)
    assert (result.returncode, result.stdout.strip()) == (0, "database is up to date")
    assert "does not ship (999_from_the_future): a newer release migrated it" in result.stderr


def test_migrate_names_what_it_applied_once(empty_database_url: str, tmp_path: Path) -> None:
    result = ledger("migrate", database_url=empty_database_url, data_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"applied {ALL_MIGRATIONS}\n"
    assert "migration" not in result.stderr


def test_migrating_the_embedded_server_says_what_it_applied_and_nothing_else(
    tmp_path: Path,
) -> None:
    result = run_ledger("migrate", cwd=tmp_path, env={"LEDGER_DATA_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"applied {ALL_MIGRATIONS}\n"
    assert result.stderr == ""  # no warning from platformdirs, no migration logged again


@pytest.mark.parametrize(
    "command",
    [
        ("audit", MESSAGE),
        ("status", MESSAGE),
        ("messages",),
        ("metrics",),
        ("replay",),
    ],
)
def test_a_read_of_an_unmigrated_database_says_to_run_migrate(
    command: tuple[str, ...], empty_database_url: str, tmp_path: Path
) -> None:
    result = ledger(*command, database_url=empty_database_url, data_dir=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"ledger: error: the database is not migrated (pending: {ALL_MIGRATIONS}): "
        "run 'ledger migrate' first"
    ]


def test_a_read_without_a_database_creates_none_and_says_where_it_looked(tmp_path: Path) -> None:
    result = run_ledger("audit", MESSAGE, cwd=tmp_path, env={"LEDGER_DATA_DIR": str(tmp_path)})
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"ledger: error: no ledger database in {tmp_path}: start the service once with "
        "'ledger serve' (it creates one there), or set DATABASE_URL or LEDGER_DATA_DIR"
    ]
    assert list(tmp_path.iterdir()) == []


def test_an_unreachable_database_is_reported_with_what_to_check(tmp_path: Path) -> None:
    dead = "postgresql://postgres@127.0.0.1:9/ledger?connect_timeout=1"
    result = ledger("migrate", database_url=dead, data_dir=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("ledger: error: cannot reach the database at")
    assert "check DATABASE_URL" in result.stderr


# --- audit and status ------------------------------------------------------------------------


async def test_audit_shows_the_current_status_and_the_timeline_in_event_time(
    client: AsyncTestClient[Litestar], settings: Any, tmp_path: Path
) -> None:
    steps = await record_lifecycle(client, settings.database_url)
    result = ledger("audit", MESSAGE, database_url=settings.database_url, data_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    final = dict(steps[-1])
    assert result.stdout.splitlines()[0].split() == ["message", MESSAGE]
    assert header_value(result.stdout, "status").startswith("undelivered since 2026-11-23 09:")
    code = final["ErrorCode"]
    assert header_value(result.stdout, "error") == f"{code}: {describe(code)}"
    units = final["Units"]
    assert header_value(result.stdout, "charges") == (
        f"{units} unit{'s' * (units != '1')}, amount {final['TotalAmount'].rstrip('0')}"
    )
    assert header_value(result.stdout, "delivered") == "not delivered"
    rows = timeline_rows(result.stdout)
    assert [row[5] for row in rows] == ["queued", "sent", "undelivered"]
    plivo_times = [dict(step)[key] for step, key in zip(steps, TIME_FIELDS, strict=True)]
    assert [f"{row[1]} {row[2]}" for row in rows] == [t[:23] for t in plivo_times]
    assert [row[-1] for row in rows] == ["v3"] * 3


TIME_FIELDS = ("QueuedTime", "SentTime", "DeliveryReportTime")


def describe(code: str) -> str:
    from ledger.error_codes import describe_error

    described = describe_error(code)
    assert described is not None
    return described


async def test_audit_masks_phone_numbers_unless_asked_to_show_them(
    client: AsyncTestClient[Litestar], settings: Any, tmp_path: Path
) -> None:
    steps = await record_lifecycle(client, settings.database_url)
    recipient = dict(steps[0])["To"]
    masked = ledger("audit", MESSAGE, database_url=settings.database_url, data_dir=tmp_path)
    shown = ledger(
        "audit", MESSAGE, "--show-numbers", database_url=settings.database_url, data_dir=tmp_path
    )
    assert recipient not in masked.stdout
    assert header_value(masked.stdout, "to") == f"{recipient[:2]}…{recipient[-2:]}"
    assert header_value(shown.stdout, "to") == recipient


async def test_audit_flags_callbacks_reported_out_of_order_and_repeated(
    client: AsyncTestClient[Litestar], settings: Any, tmp_path: Path
) -> None:
    queued, sent, delivered = lifecycle(
        random.Random(3), datetime(2026, 11, 23, 9, tzinfo=UTC), MESSAGE, outcome="delivered"
    )
    resent = [(k, "4" if k == "Sequence" else v) for k, v in sent]  # a new Sequence: stored
    await wait_for_views(settings.database_url, await post(client, delivered, sent, queued, resent))
    result = ledger("audit", MESSAGE, database_url=settings.database_url, data_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    start = lines.index("anomalies:")
    assert lines[start + 1 : start + 4] == [
        "  ! delivered reported before sent and queued",
        "  ! sent reported before queued",
        "  ! duplicate callbacks ignored: 1 (sent ×1)",
    ]
    assert header_value(result.stdout, "status").startswith("delivered since")
    assert header_value(result.stdout, "delivered").endswith(" s after the first event")


async def test_audit_flags_a_message_without_a_delivery_report_for_hours(
    client: AsyncTestClient[Litestar], settings: Any, tmp_path: Path
) -> None:
    start = datetime.now(UTC) - timedelta(hours=5, minutes=10)
    steps = lifecycle(random.Random(5), start, MESSAGE, outcome="sent")
    await wait_for_views(settings.database_url, await post(client, *steps))
    result = ledger("audit", MESSAGE, database_url=settings.database_url, data_dir=tmp_path)
    assert "  ! no delivery report yet after 5 h" in result.stdout.splitlines()
    assert header_value(result.stdout, "delivered") == "not yet"


async def test_audit_json_holds_every_event_with_its_payload(
    client: AsyncTestClient[Litestar], settings: Any, tmp_path: Path
) -> None:
    steps = await record_lifecycle(client, settings.database_url)
    result = ledger(
        "audit", MESSAGE, "--json", database_url=settings.database_url, data_dir=tmp_path
    )
    events = json.loads(result.stdout)
    assert [e["payload"] for e in events] == [dict(s) for s in steps]
    assert [e["position"] for e in events] == sorted(e["position"] for e in events)


def test_audit_of_an_unknown_message_says_so_and_fails(database_url: str, tmp_path: Path) -> None:
    result = ledger("audit", MESSAGE, database_url=database_url, data_dir=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == f"ledger: error: the ledger has no events for message {MESSAGE}"


def test_audit_of_a_malformed_uuid_explains_the_expected_shape(
    database_url: str, tmp_path: Path
) -> None:
    result = ledger("audit", "nope", database_url=database_url, data_dir=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "ledger: error: Invalid value for 'MESSAGE_UUID': 'nope' is not a message UUID "
        "(like 83876bdb-2033-4876-bfaf-0ff8693705af) (see 'ledger audit --help')"
    ]


async def test_status_shows_each_milestone_and_json_matches_the_api(
    client: AsyncTestClient[Litestar], settings: Any, auth: dict[str, str], tmp_path: Path
) -> None:
    steps = await record_lifecycle(client, settings.database_url)
    table = ledger("status", MESSAGE, database_url=settings.database_url, data_dir=tmp_path)
    assert table.returncode == 0, table.stderr
    for step, field in zip(steps, TIME_FIELDS, strict=True):
        milestone = dict(step)["Status"]
        assert header_value(table.stdout, f"{milestone} at") == dict(step)[field][:23]
    as_json = ledger(
        "status", MESSAGE, "--json", database_url=settings.database_url, data_dir=tmp_path
    )
    api = await client.get(f"/v1/messages/{MESSAGE}", headers=auth)
    assert json.loads(as_json.stdout) == api.json()


# --- replay ----------------------------------------------------------------------------------


async def test_replay_prints_each_views_result_once(
    client: AsyncTestClient[Litestar], settings: Any, tmp_path: Path
) -> None:
    await record_lifecycle(client, settings.database_url)
    result = ledger("replay", database_url=settings.database_url, data_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "replayed message_status",
        "replayed daily_delivery_metrics",
        "replayed delivery_analytics",
    ]
    assert all(" 3 events in " in line for line in lines)
    assert "replayed" not in result.stderr


def test_a_command_loads_only_its_own_module_not_the_web_framework() -> None:
    # ledger replay, audit and the like start in half the time serve needs.
    code = (
        "import sys\n"
        "from api.cli import main\n"
        "try:\n"
        "    main(['replay', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = ('litestar', 'api.cli.service', 'api.cli.analysts')\n"
        "loaded = [name for name in heavy if name in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "ledger replay" in result.stdout


async def test_replay_rebuilds_the_views_named_in_the_registrys_order(
    client: AsyncTestClient[Litestar], settings: Any, tmp_path: Path
) -> None:
    await record_lifecycle(client, settings.database_url)
    result = ledger(
        "replay",
        "--projection",
        "daily_delivery_metrics",
        "--projection",
        "message_status",
        database_url=settings.database_url,
        data_dir=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert [line.split(":")[0] for line in result.stdout.splitlines()] == [
        "replayed message_status",
        "replayed daily_delivery_metrics",
    ]
