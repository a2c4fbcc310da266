"""Settings common to unit and integration tests; server fixtures are in integration/."""

from __future__ import annotations

import collections

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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files holding the most `slow` tests first, and within a file its slow tests first.

    scripts/test hands whole files to xdist workers in this order (`--dist loadfile
    --no-loadscope-reorder`): the longest files then start at once, one per worker, and
    a worker, which queues its next file when two tests are left, ends on quick ones.
    Left to xdist's order (most tests first) two long files could share a worker and
    finish a minute after the others.
    """

    def slow(item: pytest.Item) -> bool:
        return item.get_closest_marker("slow") is not None

    slow_in = collections.Counter(item.path for item in items if slow(item))
    tests_in = collections.Counter(item.path for item in items)
    position = {id(item): i for i, item in enumerate(items)}
    items.sort(
        key=lambda item: (
            -slow_in[item.path],
            -tests_in[item.path],
            str(item.path),
            not slow(item),
            position[id(item)],
        )
    )
