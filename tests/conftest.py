"""Shared fixtures: log capture and a scenario helper for managed connections."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import pytest
import structlog


@pytest.fixture
def events() -> Iterator[list[dict[str, Any]]]:
    """Every structlog event emitted during the test, as dicts."""
    with structlog.testing.capture_logs() as captured:
        yield cast(list[dict[str, Any]], captured)  # capture_logs keeps the event dicts
