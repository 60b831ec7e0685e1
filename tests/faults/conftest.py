"""Each fault test gets services of its own (``testkit.services``) that it can stop and restart."""

from collections.abc import Iterator

import pytest

from testkit.services import FaultEnv, make_fault_env


@pytest.fixture
def fault_env(request, tmp_path) -> Iterator[FaultEnv]:
    """On SQLite, or on PostgreSQL where a test asks with
    ``@pytest.mark.parametrize("fault_env", ["sqlite", "postgres"], indirect=True)``."""
    env = make_fault_env(tmp_path, database=getattr(request, "param", "sqlite"))
    yield env
    env.close()


@pytest.fixture
def shipped_fault_env(request, tmp_path) -> Iterator[FaultEnv]:
    """Services of its own with every setting at its shipped default (no ``SHORTENED``)."""
    env = make_fault_env(tmp_path, shipped=True, database=getattr(request, "param", "sqlite"))
    yield env
    env.close()
