"""The compose file and Dockerfile describe a runnable deployment (no Docker engine needed)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def test_compose_runs_postgres_and_the_service_built_from_this_repo() -> None:
    services = compose()["services"]
    assert set(services) == {"postgres", "ledger"}
    assert services["ledger"]["build"] == "."
    assert services["ledger"]["image"].startswith("plivo-delivery-ledger")
    assert re.match(r"postgres:\d+", services["postgres"]["image"])


def test_compose_publishes_the_service_port_and_waits_for_a_healthy_database() -> None:
    ledger = compose()["services"]["ledger"]
    assert "8000:8000" in ledger["ports"]
    assert ledger["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "pg_isready" in " ".join(compose()["services"]["postgres"]["healthcheck"]["test"])
    assert "/ready" in " ".join(ledger["healthcheck"]["test"])


def test_compose_points_the_service_at_its_postgres_and_requires_the_secrets() -> None:
    env = compose()["services"]["ledger"]["environment"]
    assert "@postgres:5432/" in env["DATABASE_URL"]
    assert env["LEDGER_HOST"] == "0.0.0.0"
    for required in ("PLIVO_AUTH_TOKEN", "LEDGER_PUBLIC_URL", "LEDGER_API_TOKENS"):
        assert env[required].startswith(f"${{{required}:?"), f"{required} must be required"


def test_every_variable_compose_sets_is_a_setting_the_service_reads() -> None:
    from ledger.settings import SETTING_NAMES

    env = compose()["services"]["ledger"]["environment"]
    assert set(env) <= SETTING_NAMES


def test_the_image_serves_on_the_published_port_with_a_readiness_healthcheck() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "EXPOSE 8000" in dockerfile
    assert "LEDGER_PORT=8000" in dockerfile
    assert 'CMD ["ledger", "serve"]' in dockerfile
    assert "HEALTHCHECK" in dockerfile
    assert "/ready" in dockerfile
    for package in ("ledger", "projections", "api", "migrations"):
        assert f"COPY {package} ./{package}" in dockerfile
