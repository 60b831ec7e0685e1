"""The unit tier: pure functions, tables, parsing, documents. No test here may use a service
(Redis, PostgreSQL, a store, a worker, an API process): ``make unit`` runs it on a machine
that has none, in under a minute."""

from __future__ import annotations

import pytest

#: Fixtures of tests/conftest.py that start or reach a service.
SERVICE_FIXTURES = {
    "stack",
    "clean_stack",
    "app",
    "client",
    "live_server",
    "redis_db",
    "quiet_redis",
    "pg_database_url",
    "s3_endpoint",
    "gunicorn_api",
    "token_server",
    "token_api",
    "stack_api",
}


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        used = SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        if used and "tests/unit/" in item.nodeid:
            raise pytest.UsageError(f"{item.nodeid} is in the unit tier but uses {sorted(used)}")
