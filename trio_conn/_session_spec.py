"""What every attempt of one connection needs: fixed for the connection's life."""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeAlias

from ._config import ConnectionConfig
from ._handle import Session
from ._heartbeat import Heartbeat
from ._proxy import ProxySpec
from ._request import StreamOpener, Target

__all__ = ["Headers", "HeadersSource", "SessionSpec"]

Headers: TypeAlias = list[tuple[str, str]]
HeadersSource: TypeAlias = Headers | Callable[[], Awaitable[Headers]] | None


@dataclass(frozen=True, slots=True)
class SessionSpec:
    """What every attempt of one connection needs; fixed for the connection's life."""

    target: Target
    config: ConnectionConfig
    heartbeat: Heartbeat | None
    headers: HeadersSource = field(repr=False)  # values are secrets
    on_connect: Callable[[Session], Awaitable[None]] | None
    ssl_context: ssl.SSLContext | None
    open_stream: StreamOpener
    subprotocols: tuple[str, ...]
    compression: bool
    #: The proxy every attempt goes through, or None.
    proxy: ProxySpec | None = None
