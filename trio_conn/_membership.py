"""What a group keeps of its members: their options, the rule for keys, its statistics."""

from __future__ import annotations

import enum
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from ._config import ConnectionConfig
from ._heartbeat import Heartbeat
from ._records import FailureInfo, TransitionRecord
from ._request import StreamOpener
from ._session_spec import HeadersSource
from ._state import ConnectionState
from ._transport import Session

if TYPE_CHECKING:
    from ._connection import ManagedConnection

#: ``async fn(conn) -> None``: a member's handler.
Handler = Callable[["ManagedConnection"], Awaitable[None]]

#: Longest key (it is every event's ``conn_id``).
MAX_KEY_LENGTH: Final = 200


class Unset(enum.Enum):
    """The type of :data:`UNSET`: an option not given (None means something)."""

    UNSET = enum.auto()


#: "Not given": the group's default in ``add``, the member's own in ``restart``.
UNSET: Final = Unset.UNSET


@dataclass(frozen=True, slots=True)
class MemberOptions:
    """Everything a member is started with: kept for ``restart``."""

    url: str
    config: ConnectionConfig
    heartbeat: Heartbeat | None
    headers: HeadersSource
    on_connect: Callable[[Session], Awaitable[None]] | None
    on_failed: Callable[[FailureInfo], Awaitable[bool]] | None
    on_transition: Callable[[TransitionRecord], None] | None
    handler: Handler | None
    ssl_context: ssl.SSLContext | None
    subprotocols: Sequence[str]
    compression: str | None
    proxy: bool | str | None
    open_stream: StreamOpener | None


@dataclass(frozen=True, slots=True)
class GroupStatistics:
    """An immutable snapshot of a group, from :meth:`ConnectionGroup.statistics`.

    :ivar members: ``int``, the number of members.
    :ivar by_state: ``Mapping[ConnectionState, int]``, members per state;
        every state is a key (0 when none is in it).
    :ivar attempts: ``int``, connection attempts of every member the group
        has had, removed and replaced ones included: it never goes back.
    :ivar total_failures: ``int``, failures of every member the group has
        had, likewise.
    :ivar failed: ``tuple[str, ...]``, keys of the members in FAILED, sorted.
    :ivar closed: ``tuple[str, ...]``, keys of the members in CLOSED (their
        handler returned or raised), sorted.
    :ivar admission_backlog: ``float``, seconds (Trio's clock) until an
        attempt asked for now would be admitted; 0.0 at once, and always 0.0
        without admission control.
    """

    members: int
    by_state: Mapping[ConnectionState, int]
    attempts: int
    total_failures: int
    failed: tuple[str, ...]
    closed: tuple[str, ...]
    admission_backlog: float


def check_key(key: object) -> None:
    if not isinstance(key, str):
        raise TypeError(f"a member's key must be a str, got {type(key).__name__}")
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise ValueError(
            f"a member's key must be 1 to {MAX_KEY_LENGTH} printable characters "
            f"(it is every event's conn_id), got {key[:40]!r}"
        )
