"""Settings, read once from the environment (and an optional ``.env``) and validated at start."""

from __future__ import annotations

import enum
import functools
import os
import re
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Final, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
import platformdirs
from dotenv import dotenv_values

from ledger.durations import DURATION_FORMS, NotADuration, parse_duration
from ledger.error_families import resend_codes
from ledger.events import TAG_NAME

#: The per-user directory platformdirs names for this application.
APP_NAME: Final = "plivo-delivery-ledger"
#: Names the ``.env`` file to read; otherwise ``./.env`` is read if there is one.
ENV_FILE_VARIABLE: Final = "LEDGER_ENV_FILE"


class SettingsError(Exception):
    """A setting is missing or malformed. The message names it and says what to set."""


def default_data_dir() -> Path:
    """The per-user data directory (e.g. ``~/.local/share/plivo-delivery-ledger``), so that
    every command finds the same data whatever directory it runs in."""
    return platformdirs.user_data_path(APP_NAME)


class DropThreshold(msgspec.Struct, frozen=True):
    """How far a delivery rate must fall below its baseline to raise an alert: by
    ``value`` percentage points (``points``), or to below ``1 - value`` of the baseline
    (``ratio``)."""

    kind: Literal["points", "ratio"]
    value: float

    def __str__(self) -> str:
        return f"{self.value:g}pp" if self.kind == "points" else f"{self.value * 100:g}%"


class Settings(msgspec.Struct, frozen=True, kw_only=True, dict=True):
    """Everything the service reads from its environment. See the README's configuration table.

    Derived values are computed on first use and then kept (``dict=True`` gives the frozen
    struct somewhere to keep them): the callback route reads them on every request.
    """

    database_url: str | None = None
    data_dir: Path = msgspec.field(default_factory=default_data_dir)
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    public_url: str | None = None
    plivo_auth_id: str | None = None
    plivo_auth_tokens: tuple[str, ...] = ()
    plivo_main_auth_token: str | None = None
    skip_signatures: bool = False
    api_tokens: tuple[str, ...] = ()
    timezone: str = "UTC"
    plivo_timezone: str = "UTC"
    expire_after: timedelta = timedelta(hours=48)
    max_body_bytes: int = 64 * 1024
    pool_size: int = 16
    append_batch_max: int = 256
    append_flushers: int = 2
    metrics_max_days: int = 366
    stream_buffer: int = 10_000
    log_level: str = "INFO"
    owner_database_url: str | None = None
    plivo_retired_auth_tokens: tuple[str, ...] = ()
    max_fields: int = 128
    append_timeout: timedelta = timedelta(seconds=5)
    client_timeout: timedelta = timedelta(seconds=30)
    seal_block_events: int = 1024
    seal_block_seconds: int = 1
    seal_head_file: Path | None = None
    seal_head_url: str | None = None
    system_key: str | None = None
    send_tokens: tuple[str, ...] = ()
    store_text: bool = False
    plivo_api_url: str = "https://api.plivo.com"
    send_concurrency: int = 8
    send_timeout: timedelta = timedelta(seconds=10)
    send_outcome_after: timedelta = timedelta(minutes=2)
    reconcile_after: timedelta = timedelta(minutes=30)
    reconcile_per_minute: int = 20
    resend_error_codes: frozenset[str] = frozenset()
    resend_max_attempts: int = 3
    resend_backoff: timedelta = timedelta(minutes=5)
    analytics_tag: str = "campaign"
    sent_as_delivered: tuple[str, ...] = ("US", "CA")
    alert_every: timedelta = timedelta(minutes=15)
    alert_min_messages: int = 100
    alert_drop: DropThreshold = DropThreshold("points", 10.0)
    alert_webhook_url: str | None = None
    alert_webhook_secret: str | None = None

    @functools.cached_property
    def zone(self) -> ZoneInfo:
        """The zone whose midnight separates metrics days."""
        return ZoneInfo(self.timezone)

    @functools.cached_property
    def plivo_zone(self) -> ZoneInfo:
        """The zone Plivo's offset-less timestamps are read in."""
        return ZoneInfo(self.plivo_timezone)

    @functools.cached_property
    def plivo_main_auth_tokens(self) -> tuple[str, ...]:
        """The main account's token, for the ``-Ma-`` signature headers (none if unset)."""
        return (self.plivo_main_auth_token,) if self.plivo_main_auth_token else ()

    @functools.cached_property
    def callback_base_url(self) -> str:
        """The base URL Plivo calls; signatures are checked against it."""
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _int(name: str, value: str, *, minimum: int, maximum: int, example: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise SettingsError(
            f"{name}={value!r} is not a whole number: set it to e.g. {example}"
        ) from None
    if not minimum <= number <= maximum:
        raise SettingsError(
            f"{name}={number} is out of range: set it between {minimum} and {maximum}"
        )
    return number


def _bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise SettingsError(f"{name}={value!r} is not a yes/no value: set it to 1 or 0")


def _duration(name: str, value: str) -> timedelta:
    try:
        return parse_duration(value)
    except NotADuration as error:
        raise SettingsError(f"{name}={value!r} {error}: set it {DURATION_FORMS}") from None


def _zone(name: str, value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise SettingsError(
            f"{name}={value!r} is not a known time zone: set an IANA name like UTC or Asia/Kolkata"
        ) from None
    return value


def _url(name: str, value: str, schemes: tuple[str, ...], example: str) -> str:
    parts = urlsplit(value)
    if not parts.scheme or not (parts.netloc or parts.path):
        raise SettingsError(f"{name}={value!r} is not a URL: set it like {example}")
    if parts.scheme not in schemes:
        raise SettingsError(f"{name} has the wrong scheme {parts.scheme!r}: set it like {example}")
    return value


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,30}")
_DATABASE_EXAMPLE = "postgresql://user:password@host:5432/ledger"


def _database_url(name: str, value: str) -> str:
    """A PostgreSQL URL. It may hold a password, so no message repeats any of it but the
    scheme."""
    scheme, separator, rest = value.partition("://")
    if not separator or not _SCHEME.fullmatch(scheme):
        raise SettingsError(f"{name} is not a URL: set it like {_DATABASE_EXAMPLE}")
    if scheme.lower() not in {"postgres", "postgresql"}:
        hint = " (SQLAlchemy's form, which psycopg does not read)" if "+" in scheme else ""
        raise SettingsError(
            f"{name} has the wrong scheme {scheme!r}{hint}: set it like {_DATABASE_EXAMPLE}"
        )
    try:
        urlsplit(value).port  # noqa: B018 - parsing the port is the check
    except ValueError:
        raise SettingsError(
            f"{name} has a port that is not a number: set it like {_DATABASE_EXAMPLE}"
        ) from None
    if not rest:
        raise SettingsError(f"{name} names no server: set it like {_DATABASE_EXAMPLE}")
    return value


def _log_level(name: str, value: str) -> str:
    if value.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise SettingsError(f"{name}={value!r} is unknown: set DEBUG, INFO, WARNING or ERROR")
    return value.upper()


def _resend_codes(name: str, value: str) -> frozenset[str]:
    try:
        return resend_codes(_csv(value))
    except ValueError as error:
        raise SettingsError(
            f"{name}: {error}: set codes or families like 20,80 or temporary"
        ) from None


_COUNTRY = re.compile(r"[A-Z]{2}")
_DROP = re.compile(r"(\d+(?:\.\d+)?)\s*(pp|%)")
_WEBHOOK_SECRET = re.compile(r"whsec_[A-Za-z0-9+/]{16,}={0,2}")


def _tag_key(name: str, value: str) -> str:
    if not TAG_NAME.fullmatch(value):
        raise SettingsError(
            f"{name}={value!r} is not a tag key: set 1-64 letters, digits, '_', '.' or '-',"
            " e.g. campaign"
        )
    return value


def _countries(name: str, value: str) -> tuple[str, ...]:
    codes = tuple(code.upper() for code in _csv(value))
    for code in codes:
        if not _COUNTRY.fullmatch(code):
            raise SettingsError(
                f"{name} holds {code!r}, not a two-letter country code: set e.g. US,CA"
            )
    return codes


def _drop(name: str, value: str) -> DropThreshold:
    match = _DROP.fullmatch(value.strip().lower())
    if match is None:
        raise SettingsError(
            f"{name}={value!r} is not a drop: set percentage points like 10pp, or a share of the"
            " baseline like 20%"
        )
    number, unit = float(match[1]), match[2]
    if not 0 < number <= 100:
        raise SettingsError(f"{name}={value!r} is out of range: set above 0 and at most 100")
    return DropThreshold("points", number) if unit == "pp" else DropThreshold("ratio", number / 100)


def _webhook_secret(name: str, value: str) -> str:
    # A secret: no message repeats it.
    if not _WEBHOOK_SECRET.fullmatch(value):
        raise SettingsError(
            f"{name} is not a Standard Webhooks secret: set whsec_ followed by base64 of at"
            " least 12 random bytes"
        )
    return value


Parser = Callable[[str, str], object]

#: Environment variable → (Settings field, parser). Parsers get the variable's name so their
#: errors can name it.
_SOURCES: dict[str, tuple[str, Parser]] = {
    "DATABASE_URL": ("database_url", _database_url),
    "LEDGER_DATA_DIR": ("data_dir", lambda _, v: Path(v).expanduser().absolute()),
    "LEDGER_HOST": ("host", lambda _, v: v),
    "LEDGER_PORT": ("port", lambda n, v: _int(n, v, minimum=1, maximum=65535, example=8000)),
    "LEDGER_WORKERS": ("workers", lambda n, v: _int(n, v, minimum=1, maximum=64, example=2)),
    "LEDGER_PUBLIC_URL": (
        "public_url",
        lambda n, v: _url(n, v, ("http", "https"), "https://ledger.example.com"),
    ),
    "PLIVO_AUTH_ID": ("plivo_auth_id", lambda _, v: v),
    "PLIVO_AUTH_TOKEN": ("plivo_auth_tokens", lambda _, v: _csv(v)),
    "PLIVO_MAIN_AUTH_TOKEN": ("plivo_main_auth_token", lambda _, v: v),
    "LEDGER_INSECURE_SKIP_SIGNATURES": ("skip_signatures", _bool),
    "LEDGER_API_TOKENS": ("api_tokens", lambda _, v: _csv(v)),
    "LEDGER_TIMEZONE": ("timezone", _zone),
    "LEDGER_PLIVO_TIMEZONE": ("plivo_timezone", _zone),
    "LEDGER_EXPIRE_AFTER": ("expire_after", _duration),
    "LEDGER_MAX_BODY_BYTES": (
        "max_body_bytes",
        lambda n, v: _int(n, v, minimum=1024, maximum=16 * 1024 * 1024, example=65536),
    ),
    "LEDGER_POOL_SIZE": (
        "pool_size",
        lambda n, v: _int(n, v, minimum=2, maximum=512, example=16),
    ),
    "LEDGER_APPEND_BATCH_MAX": (
        "append_batch_max",
        lambda n, v: _int(n, v, minimum=1, maximum=5000, example=256),
    ),
    "LEDGER_APPEND_FLUSHERS": (
        "append_flushers",
        lambda n, v: _int(n, v, minimum=1, maximum=64, example=2),
    ),
    "LEDGER_METRICS_MAX_DAYS": (
        "metrics_max_days",
        lambda n, v: _int(n, v, minimum=1, maximum=3660, example=366),
    ),
    "LEDGER_STREAM_BUFFER": (
        "stream_buffer",
        lambda n, v: _int(n, v, minimum=1, maximum=1_000_000, example=10000),
    ),
    "LEDGER_LOG_LEVEL": ("log_level", _log_level),
    "LEDGER_OWNER_DATABASE_URL": (
        "owner_database_url",
        lambda n, v: _url(n, v, ("postgres", "postgresql"), "postgresql://owner:pw@host:5432/db"),
    ),
    "PLIVO_RETIRED_AUTH_TOKENS": ("plivo_retired_auth_tokens", lambda _, v: _csv(v)),
    "LEDGER_MAX_FIELDS": (
        "max_fields",
        lambda n, v: _int(n, v, minimum=16, maximum=4096, example=128),
    ),
    "LEDGER_APPEND_TIMEOUT": ("append_timeout", _duration),
    "LEDGER_CLIENT_TIMEOUT": ("client_timeout", _duration),
    "LEDGER_SEAL_BLOCK_EVENTS": (
        "seal_block_events",
        lambda n, v: _int(n, v, minimum=1, maximum=1_000_000, example=1024),
    ),
    "LEDGER_SEAL_BLOCK_SECONDS": (
        "seal_block_seconds",
        lambda n, v: _int(n, v, minimum=1, maximum=3600, example=1),
    ),
    "LEDGER_SEAL_HEAD_FILE": ("seal_head_file", lambda _, v: Path(v)),
    "LEDGER_SEAL_HEAD_URL": (
        "seal_head_url",
        lambda n, v: _url(n, v, ("http", "https"), "https://witness.example.com/heads"),
    ),
    "LEDGER_SYSTEM_KEY": ("system_key", lambda _, v: v),
    "LEDGER_SEND_TOKENS": ("send_tokens", lambda _, v: _csv(v)),
    "LEDGER_STORE_TEXT": ("store_text", _bool),
    "PLIVO_API_URL": (
        "plivo_api_url",
        lambda n, v: _url(n, v, ("http", "https"), "https://api.plivo.com").rstrip("/"),
    ),
    "LEDGER_SEND_CONCURRENCY": (
        "send_concurrency",
        lambda n, v: _int(n, v, minimum=1, maximum=256, example=8),
    ),
    "LEDGER_SEND_TIMEOUT": ("send_timeout", _duration),
    "LEDGER_SEND_OUTCOME_AFTER": ("send_outcome_after", _duration),
    "LEDGER_RECONCILE_AFTER": ("reconcile_after", _duration),
    "LEDGER_RECONCILE_PER_MINUTE": (
        "reconcile_per_minute",
        lambda n, v: _int(n, v, minimum=1, maximum=6000, example=20),
    ),
    "LEDGER_RESEND_ERROR_CODES": ("resend_error_codes", _resend_codes),
    "LEDGER_RESEND_MAX_ATTEMPTS": (
        "resend_max_attempts",
        lambda n, v: _int(n, v, minimum=1, maximum=10, example=3),
    ),
    "LEDGER_RESEND_BACKOFF": ("resend_backoff", _duration),
    "LEDGER_ANALYTICS_TAG": ("analytics_tag", _tag_key),
    "LEDGER_SENT_AS_DELIVERED": ("sent_as_delivered", _countries),
    "LEDGER_ALERT_EVERY": ("alert_every", _duration),
    "LEDGER_ALERT_MIN_MESSAGES": (
        "alert_min_messages",
        lambda n, v: _int(n, v, minimum=1, maximum=10_000_000, example=100),
    ),
    "LEDGER_ALERT_DROP": ("alert_drop", _drop),
    "LEDGER_ALERT_WEBHOOK_URL": (
        "alert_webhook_url",
        lambda n, v: _url(n, v, ("http", "https"), "https://hooks.example.com/ledger"),
    ),
    "LEDGER_ALERT_WEBHOOK_SECRET": ("alert_webhook_secret", _webhook_secret),
}


class EnvFile(enum.Enum):
    """Where :func:`load_settings` looks for a ``.env`` file when not given one."""

    FIND = "find"


def find_env_file(environ: Mapping[str, str]) -> Path | None:
    """The ``.env`` file to read: the one ``LEDGER_ENV_FILE`` names (which must exist), else
    ``./.env`` if there is one, else none."""
    if named := environ.get(ENV_FILE_VARIABLE, "").strip():
        path = Path(named).expanduser()
        if not path.is_file():
            raise SettingsError(
                f"{ENV_FILE_VARIABLE}={named!r} is not a file: point it at your .env, or unset it"
            )
        return path
    local = Path(".env")
    return local if local.is_file() else None


def _read_env_file(path: Path) -> dict[str, str]:
    values = {k: v for k, v in dotenv_values(path).items() if v is not None}
    # A relative data directory in a .env file means one next to that file, not one in
    # whatever directory a command happens to run in.
    if named := values.get("LEDGER_DATA_DIR", "").strip():
        values["LEDGER_DATA_DIR"] = str(path.parent.absolute() / Path(named).expanduser())
    return values


def load_settings(
    environ: Mapping[str, str] | None = None,
    env_file: Path | Literal[EnvFile.FIND] | None = EnvFile.FIND,
) -> Settings:
    """Read and validate settings; the process environment wins over the ``.env`` file.

    ``env_file`` defaults to :func:`find_env_file`'s choice; None reads no file. Blank values
    count as unset. Raises :class:`SettingsError` with one line naming the first bad setting
    and saying what to set.
    """
    environ = os.environ if environ is None else environ
    if env_file is EnvFile.FIND:
        env_file = find_env_file(environ)
    source: dict[str, str] = {}
    if env_file is not None and env_file.is_file():
        source.update(_read_env_file(env_file))
    source.update(environ)
    values = {
        field: parse(name, source[name].strip())
        for name, (field, parse) in _SOURCES.items()
        if source.get(name, "").strip()
    }
    if values.get("alert_webhook_url") and not values.get("alert_webhook_secret"):
        raise SettingsError(
            "LEDGER_ALERT_WEBHOOK_URL is set but LEDGER_ALERT_WEBHOOK_SECRET is not: set the"
            " receiver's whsec_ secret, so that it can check each delivery's signature"
        )
    return Settings(**values)  # type: ignore[arg-type]


def require_callback_auth(settings: Settings) -> None:
    """Refuse to take callbacks that could not be authenticated.

    Raises :class:`SettingsError` unless Plivo auth tokens are set or signature checks are
    explicitly switched off for development.
    """
    if not settings.plivo_auth_tokens and not settings.skip_signatures:
        raise SettingsError(
            "PLIVO_AUTH_TOKEN is not set: set it to your Plivo auth token (comma-separate several "
            "during rotation), or set LEDGER_INSECURE_SKIP_SIGNATURES=1 for local development only"
        )


#: Every environment variable the service reads.
SETTING_NAMES = frozenset({*_SOURCES, ENV_FILE_VARIABLE})


def require_coherent_sending(settings: Settings) -> None:
    """Refuse sending settings that cannot work together.

    Raises :class:`SettingsError` when send tokens are set without Plivo credentials, when
    ``LEDGER_SEND_OUTCOME_AFTER`` is not longer than twice ``LEDGER_SEND_TIMEOUT`` (a request
    still waiting for Plivo would be marked unknown), or when resends are switched on without
    ``LEDGER_STORE_TEXT=1`` (a resend needs the text).
    """
    if settings.send_tokens and not (settings.plivo_auth_id and settings.plivo_auth_tokens):
        raise SettingsError(
            "LEDGER_SEND_TOKENS is set but PLIVO_AUTH_ID or PLIVO_AUTH_TOKEN is not: set both "
            "to the Plivo account that sends, or unset LEDGER_SEND_TOKENS"
        )
    if settings.send_outcome_after <= 2 * settings.send_timeout:
        raise SettingsError(
            "LEDGER_SEND_OUTCOME_AFTER must be longer than twice LEDGER_SEND_TIMEOUT: raise it "
            "(default 2m) or lower LEDGER_SEND_TIMEOUT (default 10s)"
        )
    if settings.resend_error_codes and not settings.store_text:
        raise SettingsError(
            "LEDGER_RESEND_ERROR_CODES needs LEDGER_STORE_TEXT=1: a resend sends the stored "
            "text again; set it, or unset LEDGER_RESEND_ERROR_CODES"
        )
