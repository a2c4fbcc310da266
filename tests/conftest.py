"""Settings common to unit and integration tests; server fixtures are in integration/."""

from __future__ import annotations

import hypothesis

# Timing varies on a loaded 2-core CI box; a slow example is not a failure.
hypothesis.settings.register_profile("cachewarm", deadline=None)
hypothesis.settings.load_profile("cachewarm")

# Cluster and Sentinel fixtures; they start servers only when a test asks for them.
pytest_plugins = ["tests.integration.topologies"]
