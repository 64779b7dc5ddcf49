"""trio_conn: keep one WebSocket connection alive under Trio, with an explicit state machine."""

from ._config import ConnectionConfig
from ._connection import (
    ConnectionStatistics,
    FailureInfo,
    ManagedConnection,
    Session,
    open_connection,
)
from ._exceptions import HeartbeatTimeout, NotConnected, SendInterrupted, TrioConnError
from ._heartbeat import Heartbeat, MessageHeartbeat, PingHeartbeat
from ._logging import configure_logging
from ._policy import Backoff, ErrorKind, RetryPolicy
from ._state import TRANSITIONS, ConnectionState, InvalidTransition, StateMachine, Transition
from ._transport import classify

__all__ = [
    "TRANSITIONS",
    "Backoff",
    "ConnectionConfig",
    "ConnectionState",
    "ConnectionStatistics",
    "ErrorKind",
    "FailureInfo",
    "Heartbeat",
    "HeartbeatTimeout",
    "InvalidTransition",
    "ManagedConnection",
    "MessageHeartbeat",
    "NotConnected",
    "PingHeartbeat",
    "RetryPolicy",
    "SendInterrupted",
    "Session",
    "StateMachine",
    "Transition",
    "TrioConnError",
    "classify",
    "configure_logging",
    "open_connection",
]
