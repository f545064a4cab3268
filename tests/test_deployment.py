"""The compose file, Dockerfile and lock files describe a safe, reproducible deployment.

No Docker engine is needed: the files are parsed, and compose's variable interpolation is
applied as compose documents it (``${VAR:-default}``, ``${VAR:?error}``).
"""

from __future__ import annotations

import fnmatch
import importlib.metadata
import re
import zoneinfo
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "0f3c9a1e5b7d2468ace13579bdf02468"


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


class MissingVariable(Exception):
    """A ``${VAR:?error}`` whose variable is unset or empty: compose refuses to start."""


_VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:-|:\?)(?P<arg>[^}]*))?\}")


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """``value`` as compose resolves it with the variables ``env``."""

    def resolve(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        if env.get(name):
            return env[name]
        if op == ":?":
            raise MissingVariable(f"{name}: {arg}")
        return arg if op == ":-" else ""

    return _VARIABLE.sub(resolve, value)


def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _matches(path: str, pattern: str) -> bool:
    """Docker's rule: a pattern is anchored at the context's root; ``**/`` is any depth."""
    if pattern.startswith("**/"):
        rest = pattern.removeprefix("**/")
        return fnmatch.fnmatch(path, rest) or fnmatch.fnmatch(path, f"*/{rest}")
    return fnmatch.fnmatch(path, pattern)


def ignored(path: str) -> bool:
    """Whether the build context leaves ``path`` out (itself, or a folder above it)."""
    parts = path.split("/")
    above = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    return any(_matches(folder, pattern) for pattern in dockerignore() for folder in above)


def copied_sources() -> Iterator[str]:
    """Every file or folder the Dockerfile copies from the build context."""
    for line in dockerfile().splitlines():
        if line.startswith("COPY "):
            yield from line.split()[1:-1]


# --- compose --------------------------------------------------------------------------------


def test_compose_runs_postgres_a_migration_and_the_service_built_from_this_repo() -> None:
    services = compose()["services"]
    assert set(services) == {"postgres", "migrate", "ledger"}
    for name in ("migrate", "ledger"):
        assert services[name]["build"] == "."
        assert services[name]["image"].startswith("plivo-delivery-ledger")
    assert services["migrate"]["command"] == ["ledger", "migrate"]
    assert re.match(r"postgres:\d+", services["postgres"]["image"])


def test_compose_migrates_once_the_database_is_healthy_then_serves_and_checks_readiness() -> None:
    services = compose()["services"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    migrated = services["ledger"]["depends_on"]["migrate"]["condition"]
    assert migrated == "service_completed_successfully"
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert "/ready" in " ".join(services["ledger"]["healthcheck"]["test"])


def test_compose_publishes_the_service_on_loopback_only_by_default() -> None:
    [published] = compose()["services"]["ledger"]["ports"]
    assert interpolate(published, {}) == "127.0.0.1:8000:8000"


def test_compose_publishes_the_service_elsewhere_when_asked() -> None:
    [published] = compose()["services"]["ledger"]["ports"]
    assert interpolate(published, {"LEDGER_PUBLISH": "0.0.0.0:9000"}) == "0.0.0.0:9000:8000"


@pytest.mark.parametrize(
    ("service", "variable", "missing"),
    [
        ("postgres", "POSTGRES_PASSWORD", "POSTGRES_PASSWORD"),
        ("postgres", "LEDGER_SERVICE_PASSWORD", "LEDGER_SERVICE_PASSWORD"),
        ("migrate", "LEDGER_OWNER_DATABASE_URL", "POSTGRES_PASSWORD"),
        ("ledger", "DATABASE_URL", "LEDGER_SERVICE_PASSWORD"),
    ],
)
def test_compose_refuses_to_start_without_the_database_passwords(
    service: str, variable: str, missing: str
) -> None:
    value = compose()["services"][service]["environment"][variable]
    with pytest.raises(MissingVariable, match=missing):
        interpolate(value, {})


SERVICE_PASSWORD = "7b1d4e9a0c3f6285bd14e7a9c2f05836"
PASSWORDS = {"POSTGRES_PASSWORD": PASSWORD, "LEDGER_SERVICE_PASSWORD": SERVICE_PASSWORD}


def test_migrations_run_as_the_owner_and_the_service_as_its_own_login() -> None:
    services = compose()["services"]
    owner = interpolate(services["migrate"]["environment"]["LEDGER_OWNER_DATABASE_URL"], PASSWORDS)
    service = interpolate(services["ledger"]["environment"]["DATABASE_URL"], PASSWORDS)
    assert interpolate(services["postgres"]["environment"]["POSTGRES_USER"], {}) == "ledger_owner"
    assert owner == f"postgresql://ledger_owner:{PASSWORD}@postgres:5432/ledger"
    assert service == f"postgresql://ledger_app:{SERVICE_PASSWORD}@postgres:5432/ledger"


def test_the_owners_password_never_reaches_the_running_service() -> None:
    environment = compose()["services"]["ledger"]["environment"]
    values = [
        interpolate(
            str(value),
            {
                **PASSWORDS,
                "PLIVO_AUTH_TOKEN": "t",
                "LEDGER_PUBLIC_URL": "https://x",
                "LEDGER_API_TOKENS": "a",
            },
        )
        for value in environment.values()
    ]
    assert not any(PASSWORD in value for value in values)


def test_postgres_creates_the_service_login_with_its_password_on_first_start() -> None:
    [mount] = [v for v in compose()["services"]["postgres"]["volumes"] if "initdb" in v]
    source, target = mount.split(":")[:2]
    assert target == "/docker-entrypoint-initdb.d"
    script = (ROOT / source / "10-service-login.sh").read_text()
    assert "CREATE ROLE ledger_app LOGIN PASSWORD :'password'" in script
    assert '--set=password="$LEDGER_SERVICE_PASSWORD"' in script


def test_compose_requires_the_services_secrets() -> None:
    env = compose()["services"]["ledger"]["environment"]
    assert env["LEDGER_HOST"] == "0.0.0.0"
    for required in ("PLIVO_AUTH_TOKEN", "LEDGER_PUBLIC_URL", "LEDGER_API_TOKENS"):
        with pytest.raises(MissingVariable, match=required):
            interpolate(env[required], {})


def test_every_variable_compose_sets_is_a_setting_the_service_reads() -> None:
    from ledger.settings import SETTING_NAMES

    env = compose()["services"]["ledger"]["environment"]
    assert set(env) <= SETTING_NAMES


# --- the image ------------------------------------------------------------------------------


def test_the_image_serves_on_the_published_port_with_a_readiness_healthcheck() -> None:
    text = dockerfile()
    assert "EXPOSE 8000" in text
    assert "LEDGER_PORT=8000" in text
    assert 'CMD ["ledger", "serve"]' in text
    assert "HEALTHCHECK" in text
    assert "/ready" in text
    for package in ("ledger", "projections", "api", "migrations"):
        assert f"COPY {package} ./{package}" in text


def test_the_image_runs_as_a_fixed_non_root_user_that_owns_the_data_dir() -> None:
    text = dockerfile()
    [user] = re.findall(r"^USER (\d+):(\d+)$", text, re.MULTILINE)
    assert user != ("0", "0")
    assert all(int(part) > 0 for part in user)
    assert f"--uid {user[0]}" in text
    assert f"chown {user[0]}:{user[1]} /data" in text
    assert "LEDGER_DATA_DIR=/data" in text


def test_the_image_installs_exactly_the_hash_pinned_lock() -> None:
    text = dockerfile()
    assert "COPY requirements.lock ./" in text
    assert "pip install --require-hashes --no-deps -r requirements.lock" in text
    # The project itself brings nothing unpinned along.
    assert "pip install --no-deps --no-build-isolation ." in text


def test_the_build_context_leaves_out_secrets_data_and_local_environments() -> None:
    for path in (".git", ".venv", ".env", ".ledger", "bench/out", "api/__pycache__"):
        assert ignored(path), f"{path} would be sent to the Docker build"
    for cache in (".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis"):
        assert ignored(cache), f"{cache} would be sent to the Docker build"


def test_the_build_context_keeps_everything_the_dockerfile_copies() -> None:
    sources = list(copied_sources())
    assert "requirements.lock" in sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not ignored(source), f"the Dockerfile copies {source}, which .dockerignore drops"


# --- dependencies ---------------------------------------------------------------------------


def _pins(lock: Path) -> dict[str, str]:
    """Package → pinned version, from a lock file."""
    found = re.findall(r"^([A-Za-z0-9._-]+)==([^\s;]+)", lock.read_text(), re.MULTILINE)
    return {name.lower(): version for name, version in found}


def test_every_pin_in_the_locks_carries_a_hash() -> None:
    for lock in ("requirements.lock", "requirements-dev.lock"):
        entries = re.split(r"\n(?=[A-Za-z0-9])", (ROOT / lock).read_text())
        pinned = [entry for entry in entries if "==" in entry.split("\n")[0]]
        assert pinned, lock
        for entry in pinned:
            assert "--hash=sha256:" in entry, f"{lock}: {entry.splitlines()[0]} has no hash"


def test_the_dev_lock_runs_the_same_versions_as_production() -> None:
    production = _pins(ROOT / "requirements.lock")
    development = _pins(ROOT / "requirements-dev.lock")
    assert {name: development.get(name) for name in production} == production


def test_the_service_declares_zone_data_of_its_own() -> None:
    requirements = importlib.metadata.requires("plivo-delivery-ledger") or []
    assert any(re.fullmatch(r"tzdata\b[^;]*", requirement) for requirement in requirements)


def test_legacy_zone_names_resolve_without_system_zone_data() -> None:
    """Slim images have no /usr/share/zoneinfo: the tzdata package must serve."""
    zoneinfo.reset_tzpath(to=[])
    try:
        assert str(zoneinfo.ZoneInfo.no_cache("US/Eastern")) == "US/Eastern"
    finally:
        zoneinfo.reset_tzpath()
