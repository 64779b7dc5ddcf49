"""Prometheus metrics for trio_conn connections (``pip install 'trio-conn[prometheus]'``).

One :class:`PrometheusMetrics` per registry (process), given to every
connection and group it should observe::

    import prometheus_client
    from trio_conn import open_connection, open_connection_group
    from trio_conn.metrics import PrometheusMetrics

    metrics = PrometheusMetrics()            # registered on prometheus_client.REGISTRY
    prometheus_client.start_http_server(9464)
    async with open_connection(url, name="feed", metrics=metrics) as conn: ...
    async with open_connection_group(metrics=metrics) as group: ...  # conn_id = key

It is a custom collector: it keeps plain numbers, updated from the records the
lifecycle publishes (the ones the log and ``on_transition`` get) and each
heartbeat round trip, and builds its metric families when scraped. Messages
and bytes are not pushed at all: the transport counts them in plain integers
and a scrape reads them. A scrape runs in another thread (the HTTP server's):
a lock guards the numbers, held by a connection for a few additions and by a
scrape only while it copies them (never while it formats them).

Label cardinality is bounded: at most ``max_connections`` ``conn_id`` values
(live connections plus the ``keep_closed`` most recently closed ones, whose
counters stay); beyond, a connection is counted under ``conn_id="other"``.
"""

from __future__ import annotations

import itertools
import math
import threading
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from typing import Final

try:
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.metrics_core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
except ImportError as _missing:  # pragma: no cover - the extra is part of the test setup
    raise ImportError(
        "trio_conn.metrics needs prometheus-client: pip install 'trio-conn[prometheus]'"
    ) from _missing

from ._meters import Traffic
from ._policy import ErrorKind
from ._records import Record, TransitionRecord
from ._state import ConnectionState

__all__ = [
    "DEFAULT_HEARTBEAT_BUCKETS",
    "DEFAULT_RETRY_BUCKETS",
    "OVERFLOW_CONN_ID",
    "PrometheusMetrics",
]

#: Heartbeat round-trip histogram bounds, in seconds.
DEFAULT_HEARTBEAT_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Retry-delay histogram bounds, in seconds (the backoff rows cap at 15, 30 and
#: 60 s; a probe from FAILED is not a retry delay).
DEFAULT_RETRY_BUCKETS: Final = (0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0)
#: The ``conn_id`` of every connection beyond ``max_connections``.
OVERFLOW_CONN_ID: Final = "other"

_S = ConnectionState
_RECOVERY_OUTCOMES = ("success", "declined", "error")
_KINDS = tuple(kind.value for kind in ErrorKind)


class _Histogram:
    """One series' histogram: a count per bucket (the last above every bound) and the sum."""

    __slots__ = ("counts", "sum")

    def __init__(self, buckets: int) -> None:
        self.counts: list[int] = [0] * (buckets + 1)  # the last: above every bound (+Inf)
        self.sum: float = 0.0


class _Series:
    """Everything one ``conn_id`` label value holds (several connections for ``other``)."""

    __slots__ = (
        "attached",
        "attempts",
        "closed",
        "failures",
        "heartbeat_misses",
        "live",
        "recoveries",
        "retry",
        "rtt",
        "state_seconds",
        "states",
        "traffic",
        "transitions",
    )

    def __init__(self, rtt_buckets: int, retry_buckets: int) -> None:
        self.attached: int = 0  # connections running under this label now
        self.closed: int = 0  # connections that closed under it (not counted for "other")
        self.states: dict[ConnectionState, int] = dict.fromkeys(_S, 0)
        self.transitions: dict[tuple[str, str, str], int] = {}
        self.state_seconds: dict[ConnectionState, float] = dict.fromkeys(_S, 0.0)
        self.attempts: int = 0
        self.heartbeat_misses: int = 0
        self.failures: dict[str, int] = {}
        self.recoveries: dict[str, int] = dict.fromkeys(_RECOVERY_OUTCOMES, 0)
        self.rtt: _Histogram = _Histogram(rtt_buckets)
        self.retry: _Histogram = _Histogram(retry_buckets)
        self.traffic: tuple[int, int, int, int] = (0, 0, 0, 0)  # of the connections gone
        self.live: list[Traffic] = []


class _Meter:
    """One connection's meter: what the supervisor calls (through its guard)."""

    __slots__ = ("_label", "_owner", "_series", "_state", "_traffic")

    def __init__(
        self, owner: PrometheusMetrics, label: str, series: _Series, traffic: Traffic
    ) -> None:
        self._owner = owner
        self._label = label
        self._series = series
        self._traffic = traffic
        self._state = _S.DISCONNECTED  # every connection starts there

    def record(self, record: Record) -> None:
        """Count one record the lifecycle published (a transition or the hook's answer)."""
        series = self._series
        with self._owner.lock:
            if not isinstance(record, TransitionRecord):
                if record.refreshed:
                    outcome = "success"
                elif record.error is None and record.detail is None:
                    outcome = "declined"
                else:
                    outcome = "error"
                series.recoveries[outcome] += 1
                return
            from_state, to_state, kind = record.from_state, record.to_state, record.kind
            series.states[self._state] -= 1
            series.states[to_state] += 1
            self._state = to_state
            key = (from_state.value, to_state.value, "" if kind is None else kind.value)
            series.transitions[key] = series.transitions.get(key, 0) + 1
            series.state_seconds[from_state] += max(0.0, record.duration)
            if to_state is _S.CONNECTING:
                series.attempts += 1
            elif to_state is _S.RECONNECTING and kind is not None:
                series.failures[kind.value] = series.failures.get(kind.value, 0) + 1
            if record.retry_in is not None:
                self._owner.observe(series.retry, self._owner.retry_buckets, record.retry_in)

    def heartbeat_rtt(self, seconds: float) -> None:
        """Observe one answered heartbeat's round trip, in seconds."""
        owner = self._owner
        with owner.lock:
            owner.observe(self._series.rtt, owner.heartbeat_buckets, seconds)

    def heartbeat_missed(self) -> None:
        """Count one unanswered heartbeat."""
        with self._owner.lock:
            self._series.heartbeat_misses += 1

    def closed(self) -> None:
        """The connection is CLOSED: its series is kept among the recently closed."""
        self._owner.detach(self._label, self._series, self._traffic, self._state)


class PrometheusMetrics:
    """A Prometheus collector of trio_conn connections, registered on ``registry``.

    Give it to :func:`~trio_conn.open_connection` or
    :func:`~trio_conn.open_connection_group` as ``metrics=``; one object
    serves every connection of the process. Expose the registry as usual
    (``prometheus_client.start_http_server(port)``, or
    ``generate_latest(registry)`` in an endpoint of your own).

    Every series carries ``conn_id``: the connection's ``name`` (a group
    member's key). Pass stable names: a generated one is new per connection.

    :param registry: the ``prometheus_client.CollectorRegistry`` to register
        on; default ``prometheus_client.REGISTRY``. Pass None not to register
        (call ``registry.register(metrics)`` yourself).
    :param max_connections: ``int`` >= 0, most ``conn_id`` values held at once
        (running connections plus the closed ones kept); a connection beyond
        is counted under ``conn_id="other"`` for its life. Default 1000.
    :param keep_closed: ``int`` >= 0, how many closed connections' series
        stay (their counters final, their state gauge at ``closed``), the
        oldest dropped first; a connection that starts with the same
        ``conn_id`` continues its series. Default 100.
    :param heartbeat_buckets: increasing upper bounds (seconds) of the
        heartbeat round-trip histogram; default
        :data:`DEFAULT_HEARTBEAT_BUCKETS`.
    :param retry_buckets: increasing upper bounds (seconds) of the
        retry-delay histogram; default :data:`DEFAULT_RETRY_BUCKETS`.
    :raises ValueError: a bad argument, or the registry already holds these
        metric names (one ``PrometheusMetrics`` per registry).
    :raises TypeError: an argument of the wrong type.
    """

    def __init__(
        self,
        *,
        registry: CollectorRegistry | None = REGISTRY,
        max_connections: int = 1000,
        keep_closed: int = 100,
        heartbeat_buckets: Sequence[float] = DEFAULT_HEARTBEAT_BUCKETS,
        retry_buckets: Sequence[float] = DEFAULT_RETRY_BUCKETS,
    ) -> None:
        for name, value in (("max_connections", max_connections), ("keep_closed", keep_closed)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an int, got {value!r}")
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        #: Histogram bounds, in seconds.
        self.heartbeat_buckets: tuple[float, ...] = _bounds("heartbeat_buckets", heartbeat_buckets)
        self.retry_buckets: tuple[float, ...] = _bounds("retry_buckets", retry_buckets)
        self.max_connections: int = max_connections
        self.keep_closed: int = keep_closed
        #: Guards every number; held briefly (see the module's docstring).
        self.lock: threading.Lock = threading.Lock()
        self._series: dict[str, _Series] = {}
        self._closed: OrderedDict[str, None] = OrderedDict()  # kept closed series, oldest first
        if registry is not None:
            registry.register(self)

    # -- what a connection calls -----------------------------------------------------

    def attach(self, conn_id: str, traffic: Traffic) -> _Meter:
        """Start observing connection ``conn_id`` (called by the connection when it starts)."""
        with self.lock:
            label = conn_id
            if label not in self._series and self._labelled() >= self.max_connections:
                if self._closed:
                    del self._series[self._closed.popitem(last=False)[0]]
                else:
                    label = OVERFLOW_CONN_ID
            series = self._series.get(label)
            if series is None:
                series = self._series[label] = _Series(
                    len(self.heartbeat_buckets), len(self.retry_buckets)
                )
            self._closed.pop(label, None)
            if label != OVERFLOW_CONN_ID:
                series.states[_S.CLOSED] -= series.closed  # its successor replaces it
                series.closed = 0
            series.attached += 1
            series.states[_S.DISCONNECTED] += 1
            series.live.append(traffic)
            return _Meter(self, label, series, traffic)

    def detach(self, label: str, series: _Series, traffic: Traffic, state: ConnectionState) -> None:
        """A connection closed: its traffic joins the series' totals; the series is
        kept among the ``keep_closed`` latest (``other`` stays while it is in use)."""
        totals = traffic.totals()
        with self.lock:
            series.live.remove(traffic)
            series.traffic = _add(series.traffic, totals)
            series.attached -= 1
            if label == OVERFLOW_CONN_ID:
                series.states[state] -= 1  # the shared series counts running connections
            else:
                series.closed += 1
            if series.attached or self._series.get(label) is not series:
                return
            if label == OVERFLOW_CONN_ID:
                return  # kept: its counters must never go back while in use
            self._closed[label] = None
            while len(self._closed) > self.keep_closed:
                del self._series[self._closed.popitem(last=False)[0]]

    def observe(self, histogram: _Histogram, bounds: tuple[float, ...], value: float) -> None:
        """Add ``value`` to ``histogram`` (the caller holds :attr:`lock`); a value
        that is no duration (NaN, infinite, negative) is ignored: it would poison the sum."""
        if not 0.0 <= value < math.inf:
            return
        histogram.counts[bisect_left(bounds, value)] += 1
        histogram.sum += value

    def _labelled(self) -> int:
        return len(self._series) - (OVERFLOW_CONN_ID in self._series)

    # -- what a registry calls -------------------------------------------------------

    def describe(self) -> Iterable[Metric]:
        """The metric families, without samples (the registry checks names with them)."""
        return _families(self, [])

    def collect(self) -> Iterable[Metric]:
        """The metric families with every series' samples (a scrape)."""
        with self.lock:
            snapshot = [(label, _copy(series)) for label, series in self._series.items()]
        return _families(self, snapshot)

    def __repr__(self) -> str:
        return f"<PrometheusMetrics of {len(self._series)} conn_id values>"


_Snapshot = tuple[_Series, tuple[int, int, int, int]]


def _copy(series: _Series) -> _Snapshot:
    """A copy of ``series``' numbers (under the lock), its traffic summed now."""
    copy = _Series(len(series.rtt.counts) - 1, len(series.retry.counts) - 1)
    copy.states = dict(series.states)
    copy.transitions = dict(series.transitions)
    copy.state_seconds = dict(series.state_seconds)
    copy.attempts = series.attempts
    copy.heartbeat_misses = series.heartbeat_misses
    copy.failures = dict(series.failures)
    copy.recoveries = dict(series.recoveries)
    for mine, theirs in ((copy.rtt, series.rtt), (copy.retry, series.retry)):
        mine.counts, mine.sum = list(theirs.counts), theirs.sum
    traffic = series.traffic
    for live in series.live:
        traffic = _add(traffic, live.totals())
    return copy, traffic


def _families(owner: PrometheusMetrics, snapshot: list[tuple[str, _Snapshot]]) -> Iterator[Metric]:
    c = ["conn_id"]
    state = GaugeMetricFamily(
        "trio_conn_connection_state",
        "Connections with this conn_id in this state (1 or 0; a count for conn_id=other).",
        labels=[*c, "state"],
    )
    transitions = CounterMetricFamily(
        "trio_conn_transitions",
        "State transitions by edge; kind is the failure's ErrorKind, empty when none.",
        labels=[*c, "from_state", "to_state", "kind"],
    )
    seconds = CounterMetricFamily(
        "trio_conn_state_seconds",
        "Seconds spent in each state, credited when the state is left.",
        labels=[*c, "state"],
    )
    attempts = CounterMetricFamily(
        "trio_conn_attempts", "Connection attempts (moves into connecting).", labels=c
    )
    failures = CounterMetricFamily(
        "trio_conn_failures", "Failed attempts and sessions, by ErrorKind.", labels=[*c, "kind"]
    )
    misses = CounterMetricFamily(
        "trio_conn_heartbeat_misses",
        "Heartbeats without proof of life by their deadline (the round trips are answered ones).",
        labels=c,
    )
    recoveries = CounterMetricFamily(
        "trio_conn_recoveries",
        "on_failed answers: success (refreshed), declined (False), error (raised, hung, non-bool).",
        labels=[*c, "outcome"],
    )
    rtt = HistogramMetricFamily(
        "trio_conn_heartbeat_round_trip_seconds", "Heartbeat round trips.", labels=c
    )
    retry = HistogramMetricFamily(
        "trio_conn_retry_delay_seconds", "Planned sleeps in reconnecting before a retry.", labels=c
    )
    traffic = [
        CounterMetricFamily(f"trio_conn_{name}", text, labels=c)
        for name, text in (
            ("received_messages", "Whole data messages received (heartbeat replies included)."),
            ("sent_messages", "Whole data messages sent (heartbeats included)."),
            ("received_bytes", "Bytes read from the stream (frames and handshake answer)."),
            ("sent_bytes", "Bytes written to the stream (every frame)."),
        )
    ]
    for label, (series, totals) in snapshot:
        for s in _S:
            state.add_metric([label, s.value], series.states[s])
            seconds.add_metric([label, s.value], series.state_seconds[s])
        for (from_state, to_state, kind), count in sorted(series.transitions.items()):
            transitions.add_metric([label, from_state, to_state, kind], count)
        attempts.add_metric([label], series.attempts)
        misses.add_metric([label], series.heartbeat_misses)
        for kind in _KINDS:  # every kind from the start: increase() sees the first one
            failures.add_metric([label, kind], series.failures.get(kind, 0))
        for outcome, count in series.recoveries.items():
            recoveries.add_metric([label, outcome], count)
        for family, histogram, bounds in (
            (rtt, series.rtt, owner.heartbeat_buckets),
            (retry, series.retry, owner.retry_buckets),
        ):
            cumulative, buckets = 0, []
            for bound, count in zip((*bounds, float("inf")), histogram.counts, strict=True):
                cumulative += count
                buckets.append((_le(bound), cumulative))
            family.add_metric([label], buckets, histogram.sum)
        for counter, value in zip(traffic, totals, strict=True):
            counter.add_metric([label], value)
    yield from (state, transitions, seconds, attempts, failures, misses, recoveries, rtt, retry)
    yield from traffic


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


def _add(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3])


def _bounds(name: str, values: Sequence[float]) -> tuple[float, ...]:
    try:
        bounds = tuple(float(value) for value in values)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a sequence of numbers, got {values!r:.60}") from None
    if not bounds or any(b >= c for b, c in itertools.pairwise(bounds)):
        raise ValueError(f"{name} must be increasing, non-empty, got {bounds!r:.80}")
    if bounds[-1] == float("inf") or any(b != b for b in bounds):
        raise ValueError(f"{name}: +Inf is added by itself; NaN is no bound, got {bounds!r:.80}")
    return bounds
