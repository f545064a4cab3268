"""Settings are validated at start: a bad value stops the process with one line naming it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from ledger.settings import SettingsError, load_settings, require_callback_auth


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


def test_durations_accept_hours_minutes_and_days() -> None:
    assert load_settings({"LEDGER_EXPIRE_AFTER": "90m"}, None).expire_after == timedelta(minutes=90)
    assert load_settings({"LEDGER_EXPIRE_AFTER": "2d"}, None).expire_after == timedelta(days=2)


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
    ],
)
def test_a_bad_value_is_refused_with_a_message_naming_the_setting(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings({name: value}, env_file=None)
    message = str(refused.value)
    assert message.startswith(f"{name}=")
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
