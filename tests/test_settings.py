"""Settings are validated at start: a bad value stops the process with one line naming it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from ledger.settings import (
    DropThreshold,
    SettingsError,
    default_data_dir,
    find_env_file,
    load_settings,
    require_callback_auth,
)


def test_defaults_need_no_environment() -> None:
    settings = load_settings({}, env_file=None)
    assert settings.database_url is None
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.expire_after == timedelta(hours=48)
    assert settings.max_body_bytes == 64 * 1024


def test_auth_tokens_are_comma_separated_for_rotation() -> None:
    settings = load_settings({"PLIVO_AUTH_TOKEN": "old, new", "LEDGER_API_TOKENS": "a,b"}, None)
    assert settings.plivo_auth_tokens == ("old", "new")
    assert settings.api_tokens == ("a", "b")


@pytest.mark.parametrize(
    ("value", "duration"),
    [
        ("90s", timedelta(seconds=90)),
        ("90m", timedelta(minutes=90)),
        ("48h", timedelta(hours=48)),
        ("48H", timedelta(hours=48)),
        (" 2 D ", timedelta(days=2)),
    ],
)
def test_durations_take_seconds_minutes_hours_or_days_in_any_case(
    value: str, duration: timedelta
) -> None:
    assert load_settings({"LEDGER_EXPIRE_AFTER": value}, None).expire_after == duration


def test_a_zero_duration_is_refused_as_not_longer_than_zero() -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings({"LEDGER_EXPIRE_AFTER": "0m"}, env_file=None)
    assert str(refused.value) == (
        "LEDGER_EXPIRE_AFTER='0m' must be longer than zero: set it like 30s, 90m, 48h or 2d"
    )


def test_a_duration_without_a_unit_names_the_units() -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings({"LEDGER_EXPIRE_AFTER": "48"}, env_file=None)
    assert str(refused.value) == (
        "LEDGER_EXPIRE_AFTER='48' is not a duration: set it like 30s, 90m, 48h or 2d"
    )


def test_a_port_that_is_not_a_number_suggests_a_real_port() -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings({"LEDGER_PORT": "abc"}, env_file=None)
    assert str(refused.value) == "LEDGER_PORT='abc' is not a whole number: set it to e.g. 8000"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "mysql://root:hunter2@db.example.com/ledger",
            "DATABASE_URL has the wrong scheme 'mysql': "
            "set it like postgresql://user:password@host:5432/ledger",
        ),
        (
            "postgresql+psycopg://root:hunter2@db.example.com/ledger",
            "DATABASE_URL has the wrong scheme 'postgresql+psycopg' (SQLAlchemy's form, which "
            "psycopg does not read): set it like postgresql://user:password@host:5432/ledger",
        ),
        (
            "root:hunter2@db.example.com/ledger",
            "DATABASE_URL is not a URL: set it like postgresql://user:password@host:5432/ledger",
        ),
        (
            "postgresql://root:hunter2@db.example.com:port/ledger",
            "DATABASE_URL has a port that is not a number: "
            "set it like postgresql://user:password@host:5432/ledger",
        ),
    ],
)
def test_a_bad_database_url_is_explained_without_repeating_its_password(
    url: str, message: str
) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings({"DATABASE_URL": url}, env_file=None)
    assert str(refused.value) == message
    assert "hunter2" not in message


def test_postgres_urls_of_either_scheme_are_accepted() -> None:
    for url in ("postgres://u:p@h/db", "postgresql://u:p@h:5432/db", "postgresql:///db?host=/s"):
        assert load_settings({"DATABASE_URL": url}, env_file=None).database_url == url


def test_the_data_dir_defaults_to_the_per_user_data_directory() -> None:
    settings = load_settings({}, env_file=None)
    assert settings.data_dir == default_data_dir()
    assert settings.data_dir.is_absolute()
    assert settings.data_dir.name == "plivo-delivery-ledger"


def test_ledger_env_file_names_the_env_file_to_read(tmp_path: Path) -> None:
    env_file = tmp_path / "ledger.env"
    env_file.write_text("LEDGER_PORT=9000\n")
    assert find_env_file({"LEDGER_ENV_FILE": str(env_file)}) == env_file
    assert load_settings({"LEDGER_ENV_FILE": str(env_file)}).port == 9000


def test_an_env_file_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.env"
    with pytest.raises(SettingsError) as refused:
        load_settings({"LEDGER_ENV_FILE": str(missing)})
    assert str(refused.value) == (
        f"LEDGER_ENV_FILE={str(missing)!r} is not a file: point it at your .env, or unset it"
    )


def test_a_relative_data_dir_in_an_env_file_is_relative_to_that_file(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("LEDGER_DATA_DIR=.ledger\n")
    assert load_settings({}, env_file=env_file).data_dir == tmp_path / ".ledger"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LEDGER_PORT", "eighty"),
        ("LEDGER_PORT", "70000"),
        ("DATABASE_URL", "mysql://db"),
        ("LEDGER_PUBLIC_URL", "ledger.example.com"),
        ("LEDGER_TIMEZONE", "Mars/Olympus"),
        ("LEDGER_EXPIRE_AFTER", "two days"),
        ("LEDGER_INSECURE_SKIP_SIGNATURES", "maybe"),
        ("LEDGER_LOG_LEVEL", "chatty"),
        ("LEDGER_ANALYTICS_TAG", "two words"),
        ("LEDGER_SENT_AS_DELIVERED", "USA"),
        ("LEDGER_ALERT_DROP", "ten"),
        ("LEDGER_ALERT_DROP", "150pp"),
        ("LEDGER_ALERT_MIN_MESSAGES", "0"),
        ("LEDGER_ALERT_WEBHOOK_SECRET", "hunter2"),
    ],
)
def test_a_bad_value_is_refused_with_a_message_naming_the_setting(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings({name: value}, env_file=None)
    message = str(refused.value)
    assert message.startswith(name)  # DATABASE_URL's value may hold a password: not repeated
    assert "set" in message
    assert "\n" not in message


def test_the_environment_wins_over_the_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("LEDGER_PORT=9000\nLEDGER_TIMEZONE=Asia/Kolkata\n")
    settings = load_settings({"LEDGER_PORT": "9100"}, env_file=env_file)
    assert (settings.port, settings.timezone) == (9100, "Asia/Kolkata")


def test_callbacks_cannot_be_served_without_a_plivo_token() -> None:
    with pytest.raises(SettingsError, match="PLIVO_AUTH_TOKEN"):
        require_callback_auth(load_settings({}, env_file=None))


def test_signature_checks_can_be_switched_off_only_explicitly() -> None:
    require_callback_auth(load_settings({"LEDGER_INSECURE_SKIP_SIGNATURES": "1"}, env_file=None))


def test_an_alert_drop_is_in_points_or_a_share_of_the_baseline() -> None:
    assert load_settings({"LEDGER_ALERT_DROP": "15pp"}, env_file=None).alert_drop == (
        DropThreshold("points", 15.0)
    )
    assert load_settings({"LEDGER_ALERT_DROP": "20%"}, env_file=None).alert_drop == (
        DropThreshold("ratio", 0.2)
    )


def test_sent_as_delivered_countries_are_upper_cased() -> None:
    settings = load_settings({"LEDGER_SENT_AS_DELIVERED": "us, ca,pr"}, env_file=None)
    assert settings.sent_as_delivered == ("US", "CA", "PR")


def test_an_alert_webhook_needs_its_secret() -> None:
    with pytest.raises(SettingsError, match="LEDGER_ALERT_WEBHOOK_SECRET is not"):
        load_settings({"LEDGER_ALERT_WEBHOOK_URL": "https://hooks.example.com/x"}, env_file=None)
