"""trio_conn: keep one WebSocket connection alive under Trio, with an explicit state machine."""

from ._config import ConnectionConfig
from ._exceptions import HeartbeatTimeout, NotConnected, TrioConnError
from ._policy import Backoff, ErrorKind, RetryPolicy
from ._state import TRANSITIONS, ConnectionState, InvalidTransition, StateMachine, Transition

__all__ = [
    "TRANSITIONS",
    "Backoff",
    "ConnectionConfig",
    "ConnectionState",
    "ErrorKind",
    "HeartbeatTimeout",
    "InvalidTransition",
    "NotConnected",
    "RetryPolicy",
    "StateMachine",
    "Transition",
    "TrioConnError",
]
