"""trio_conn: keep one WebSocket connection alive under Trio, with an explicit state machine."""

#: The version of trio_conn (PEP 440); the one place it is written (pyproject.toml reads it).
__version__ = "0.2.0.dev0"

from ._config import ConnectionConfig
from ._connection import ManagedConnection
from ._exceptions import (
    ConnectionClosed,
    ConnectionRejected,
    HeartbeatTimeout,
    NotConnected,
    ProxyRefused,
    SendInterrupted,
    TrioConnError,
)
from ._failure import classify
from ._group import ConnectionGroup, GroupStatistics, open_connection_group
from ._heartbeat import Heartbeat, MessageHeartbeat, PingHeartbeat
from ._logging import configure_logging
from ._open import open_connection
from ._policy import Backoff, ErrorKind, RetryPolicy
from ._records import ConnectionStatistics, FailureInfo, RecoveryRecord, TransitionRecord
from ._redact import redact_url
from ._secrets import register_secrets
from ._sink import scrub_secrets
from ._state import TRANSITIONS, ConnectionState, InvalidTransition, StateMachine, Transition
from ._transport import Session

__all__ = [
    "TRANSITIONS",
    "Backoff",
    "ConnectionClosed",
    "ConnectionConfig",
    "ConnectionGroup",
    "ConnectionRejected",
    "ConnectionState",
    "ConnectionStatistics",
    "ErrorKind",
    "FailureInfo",
    "GroupStatistics",
    "Heartbeat",
    "HeartbeatTimeout",
    "InvalidTransition",
    "ManagedConnection",
    "MessageHeartbeat",
    "NotConnected",
    "PingHeartbeat",
    "ProxyRefused",
    "RecoveryRecord",
    "RetryPolicy",
    "SendInterrupted",
    "Session",
    "StateMachine",
    "Transition",
    "TransitionRecord",
    "TrioConnError",
    "__version__",
    "classify",
    "configure_logging",
    "open_connection",
    "open_connection_group",
    "redact_url",
    "register_secrets",
    "scrub_secrets",
]
