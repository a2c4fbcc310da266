"""Settings common to unit and integration tests; server fixtures are in integration/."""

from __future__ import annotations

import hypothesis
import pytest

from tests.helpers import require_mysqlclient

# Timing varies on a loaded 2-core CI box; a slow example is not a failure.
hypothesis.settings.register_profile("cachewarm", deadline=None)
hypothesis.settings.load_profile("cachewarm")

# Cluster and Sentinel fixtures; they start servers only when a test asks for them.
pytest_plugins = ["tests.integration.topologies"]


@pytest.fixture(autouse=True)
def _mysqlclient_for_its_params(request: pytest.FixtureRequest) -> None:
    """A test parametrized with driver="mysqlclient" needs the `fast` extra."""
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and callspec.params.get("driver") == "mysqlclient":
        require_mysqlclient()
