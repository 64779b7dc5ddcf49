"""Shared fixtures: log capture and a scenario helper for managed connections."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, cast

import pytest
import structlog

from trio_conn._secrets import release_retired


@pytest.fixture
def events() -> Iterator[list[dict[str, Any]]]:
    """Every structlog event emitted during the test, as dicts."""
    with structlog.testing.capture_logs() as captured:
        yield cast(list[dict[str, Any]], captured)  # capture_logs keeps the event dicts


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """No test sees another's structlog configuration, context or logger level."""
    websocket_logger = logging.getLogger("trio-websocket")
    saved_level = websocket_logger.level
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    websocket_logger.setLevel(saved_level)
    release_retired()  # closed connections' secrets would hide text in later tests


class Records(logging.Handler):
    """Keeps every record it is given."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def stdlib_records() -> Iterator[list[logging.LogRecord]]:
    """The records of the ``trio_conn`` logger, as an application's handler gets them."""
    handler = Records()
    logger = logging.getLogger("trio_conn")
    saved = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler.records
    logger.removeHandler(handler)
    logger.setLevel(saved)
