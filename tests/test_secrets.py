"""Secrets never reach a line: the secret set, the sink, and the leaks the issue reported.

The reported leaks run through real connections to the fault server, in each
format ``configure_logging`` builds; the property test generates secrets,
encodings, fragments and places, and finds no 8-character fragment of the
encoded secret in any line of any format.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import json
import re
import string
from collections.abc import Callable, Iterator
from typing import Any, Literal
from urllib.parse import quote, quote_plus

import pytest
import structlog
import trio
import trio.testing
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from tests.test_events import CONN_ID, fail_record
from trio_conn import (
    ConnectionConfig,
    ConnectionState,
    RetryPolicy,
    configure_logging,
    open_connection,
)
from trio_conn._events import ATTEMPTS_KEPT, ConnectionEvents
from trio_conn._redact import MAX_ERROR_MESSAGE, error_message
from trio_conn._secrets import (
    MIN_FRAGMENT,
    REDACTED,
    SECRETS,
    SecretSet,
    forms,
    release_retired,
)
from trio_conn.testing import open_fault_server

S = ConnectionState
Format = Literal["json", "ecs", "console"]
FORMATS: tuple[Format, ...] = ("json", "ecs", "console")


def lower_hex(text: str) -> str:
    """Percent-escapes with lower-case hex digits (RFC 3986 section 2.1 allows both)."""
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), text)


def grams(text: str) -> set[str]:
    return {text[i : i + MIN_FRAGMENT] for i in range(len(text) - MIN_FRAGMENT + 1)}


def leaked(secret_text: str, line: str) -> set[str]:
    """The 8-character fragments of ``secret_text`` found in ``line`` (raw or decoded)."""
    found = grams(secret_text) & grams(line)
    try:
        values: list[str] = []
        _strings(json.loads(line), values)
    except ValueError:  # console: the line itself, and its repr-escaped values
        values = [line.encode("latin-1", "backslashreplace").decode("unicode_escape", "replace")]
    for value in values:
        found |= grams(secret_text) & grams(value)
    return found


def _strings(value: Any, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            out.append(key)
            _strings(item, out)
    elif isinstance(value, list):
        for item in value:
            _strings(item, out)


# --- the set itself ---------------------------------------------------------------------


def test_every_form_and_fragment_is_found() -> None:
    secrets = SecretSet()
    token = "tok/en+va l=ue=="
    secrets.add([token])
    raw = token.encode()
    carriers = [
        token,
        quote(token, safe=""),
        lower_hex(quote(token, safe="")),
        quote(token),
        quote_plus(token),
        json.dumps(token)[1:-1],
        base64.b64encode(raw).decode(),
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode(),
        token[3:13],  # a fragment, cut at both ends
    ]
    for carrier in carriers:
        assert secrets.scrub(f"said <{carrier}> twice") == f"said <{REDACTED}> twice", carrier


def test_short_secrets_only_whole_and_only_in_text_fields() -> None:
    secrets = SecretSet()
    secrets.add(["fresh", "2026"])
    assert (
        secrets.scrub("got fresh; refreshed in 2026") == f"got {REDACTED}; refreshed in {REDACTED}"
    )
    assert secrets.scrub("2026-11-29 fresh", short=False) == "2026-11-29 fresh"
    secrets.add(["abc"])  # shorter than MIN_SECRET: ignored
    assert secrets.scrub("abc") == "abc"


def test_removing_keeps_fragments_another_secret_still_holds() -> None:
    secrets = SecretSet()
    first = secrets.add(["shared-prefix-AAAA"])
    secrets.add(["shared-prefix-BBBB"])
    secrets.remove(first)
    assert secrets.scrub("shared-prefix-AAAA") == f"{REDACTED}AAAA"  # the common part stays
    assert secrets.scrub("refix-AA") == "refix-AA"  # a fragment only the first had is gone


def test_a_connection_keeps_only_the_last_attempts_values() -> None:
    events = ConnectionEvents(CONN_ID, "wss://example.com/ws")
    baseline = len(SECRETS)
    tokens = [
        f"Bearer {hashlib.sha256(bytes([n % 256, n // 256])).hexdigest()[:24]}" for n in range(500)
    ]
    sizes = []
    for token in tokens:
        events.add_secrets([token], attempt=True)
        sizes.append(len(SECRETS) - baseline)
    # Bounded by what the last few attempts' values can hold, however many attempts.
    per_value = sum(max(1, len(form) - MIN_FRAGMENT + 1) for form in forms(tokens[0].split()[1]))
    assert max(sizes) <= ATTEMPTS_KEPT * per_value
    for token in tokens[:-ATTEMPTS_KEPT]:
        assert SECRETS.scrub(token.split()[1]) == token.split()[1]
    for token in tokens[-ATTEMPTS_KEPT:]:
        assert SECRETS.scrub(token.split()[1]) == REDACTED
    events.forget_secrets()
    # Closed, it is one of the recently closed: the same few values, no more.
    assert len(SECRETS) - baseline <= ATTEMPTS_KEPT * per_value
    assert SECRETS.scrub(tokens[-1].split()[1]) == REDACTED
    release_retired()
    assert len(SECRETS) == baseline


def test_an_error_message_is_scrubbed_before_it_is_cut() -> None:
    secret = "straddling-secret-0123456789"
    events = ConnectionEvents(CONN_ID, f"wss://example.com/ws?key={secret}")
    for shift in range(-30, 5):
        text = "x" * (MAX_ERROR_MESSAGE + shift - len(secret) // 2) + secret + " tail"
        message = error_message(ConnectionResetError(text))
        assert len(message) <= MAX_ERROR_MESSAGE
        assert not any(secret[:n] in message for n in range(4, len(secret) + 1)), shift
    events.forget_secrets()


# --- the reported leaks, through real connections, in every format ----------------------


def lines_of(fmt: Format, stream: io.StringIO) -> list[str]:
    lines = stream.getvalue().splitlines()
    assert lines
    if fmt != "console":
        assert all(isinstance(json.loads(line), dict) for line in lines)  # still valid JSON
    return lines


async def lines_when_echoed(
    fmt: Format, header: tuple[str, str], code: int, reason: str
) -> list[str]:
    """The lines written in ``fmt`` by a connection sending ``header`` whose server
    closes it with ``code`` and ``reason`` (an echo of the header's secret)."""
    stream = io.StringIO()
    configure_logging(fmt, stream=stream)
    async with (
        open_fault_server() as server,
        open_connection(
            server.url,
            open_stream=server.open_stream,
            headers=[header],
            config=ConnectionConfig(retry=RetryPolicy(jitter=0.0)),
        ) as conn,
    ):
        await conn.wait_for_state(S.CONNECTED)
        await server.close_all(code, reason)
        await conn.wait_for_state(S.RECONNECTING)
    return lines_of(fmt, stream)


@pytest.mark.parametrize("fmt", FORMATS)
async def test_a_padded_bearer_token_echoed_in_a_close_reason(
    fmt: Format, autojump_clock: trio.testing.MockClock
) -> None:
    token = base64.b64encode(b"trio-conn-tokn-1").decode()
    assert token.endswith("==")
    lines = await lines_when_echoed(
        fmt, ("Authorization", f"Bearer {token}"), 4001, f"bad token {token}"
    )
    assert any("4001" in line for line in lines)
    for line in lines:
        assert not leaked(token, line), line
        assert not leaked(token.rstrip("="), line), line


@pytest.mark.parametrize("fmt", FORMATS)
async def test_a_cookie_echoed_percent_encoded_in_lower_case(
    fmt: Format, autojump_clock: trio.testing.MockClock
) -> None:
    cookie = "s3ss/i0n:v@lue+1"
    echoed = lower_hex(quote(cookie, safe=""))
    assert echoed != quote(cookie, safe="")
    lines = await lines_when_echoed(fmt, ("Cookie", f"sid={cookie}"), 4002, f"unknown sid={echoed}")
    assert any("4002" in line for line in lines)
    for line in lines:
        assert not leaked(echoed, line), line
        assert not leaked(cookie, line), line


async def test_fresh_tokens_per_attempt_keep_the_secret_set_bounded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    minted = iter(range(10**6))

    async def headers() -> list[tuple[str, str]]:
        return [("Authorization", f"Bearer minted-{next(minted):08d}-token")]

    baseline = len(SECRETS)
    sizes = []
    async with (
        open_fault_server() as server,
        open_connection(
            server.url,
            open_stream=server.open_stream,
            headers=headers,
            heartbeat=None,
            config=ConnectionConfig(retry=RetryPolicy(jitter=0.0), stable_after=0.5),
        ) as conn,
    ):
        for _ in range(60):
            await conn.wait_for_state(S.CONNECTED)
            sizes.append(len(SECRETS) - baseline)
            await trio.sleep(1)  # stable: the next drop is a first failure
            await server.drop()
            await conn.wait_for_state(S.RECONNECTING)
    assert len(sizes) == 60
    per_value = sum(max(1, len(form) - MIN_FRAGMENT + 1) for form in forms("minted-00000000-token"))
    assert 0 < max(sizes) <= ATTEMPTS_KEPT * per_value
    # Kept while it is one of the last connections to close, no more than while open.
    assert len(SECRETS) - baseline <= max(sizes)
    release_retired()
    assert len(SECRETS) == baseline


# --- the property: any secret, any encoding, any fragment, any place, any format ---------

SECRET = st.text(
    alphabet=st.sampled_from(string.ascii_letters + string.digits + "-_.~/+=:@%\"\\'é€&<>"),
    min_size=MIN_FRAGMENT,
    max_size=40,
)
ENCODINGS: dict[str, Callable[[str], str]] = {
    "raw": lambda s: s,
    "percent": lambda s: quote(s, safe=""),
    "percent-lower": lambda s: lower_hex(quote(s, safe="")),
    "percent-slash-kept": lambda s: quote(s),
    "plus": quote_plus,
    "json": lambda s: json.dumps(s)[1:-1],
    "json-ascii": lambda s: json.dumps(s, ensure_ascii=True)[1:-1],
    "backslash": lambda s: s.encode("unicode_escape").decode("ascii"),
    "base64": lambda s: base64.b64encode(s.encode()).decode(),
    "base64-unpadded": lambda s: base64.b64encode(s.encode()).decode().rstrip("="),
    "base64-url": lambda s: base64.urlsafe_b64encode(s.encode()).decode(),
    "json-go": lambda s: re.sub(  # Go's encoding/json: UTF-8, "&<>" escaped
        r"[&<>]", lambda m: f"\\u{ord(m.group()):04x}", json.dumps(s, ensure_ascii=False)[1:-1]
    ),
    "json-php": lambda s: json.dumps(s)[1:-1].replace("/", "\\/"),
    "json-upper-hex": lambda s: re.sub(
        r"\\u[0-9a-f]{4}", lambda m: "\\u" + m.group()[2:].upper(), json.dumps(s)[1:-1]
    ),
    "percent-mixed-case": lambda s: re.sub(
        r"%[0-9A-F]{2}", lambda m: m.group().lower() if m.start() % 2 else m.group(), quote(s, "")
    ),
}
PLACES = ("error", "reason", "application", "traceback")


@functools.cache
def baseline() -> frozenset[str]:
    """The 8-character fragments every run writes anyway (field names, sentences, REDACTED)."""
    out = io.StringIO()
    for fmt in FORMATS:
        structlog.reset_defaults()
        configure_logging(fmt, stream=out, level="debug")
        emit(ConnectionEvents(CONN_ID, "wss://example.com/ws?key=placeholder"), "xxxxxxxx", "error")
        emit(ConnectionEvents(CONN_ID, "wss://example.com/ws"), "xxxxxxxx", "application")
        emit(ConnectionEvents(CONN_ID, "wss://example.com/ws"), "xxxxxxxx", "traceback")
    structlog.reset_defaults()
    return frozenset(grams(out.getvalue()))


def emit(events: ConnectionEvents, carried: str, place: str) -> None:
    if place == "error":
        events.state_changed(fail_record("lost", ConnectionResetError(f"peer said {carried}!")))
    elif place == "reason":
        events.state_changed(fail_record(f"closed by the server: {carried}"))
    elif place == "application":
        structlog.get_logger().warning("upstream answered", body=f"<{carried}>")
    else:
        try:
            raise ValueError(f"rejected {carried}")
        except ValueError:
            structlog.get_logger().exception("job failed")


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    secret=SECRET,
    via=st.sampled_from(["query", "password", "header", "cookie"]),
    encoding=st.sampled_from(sorted(ENCODINGS)),
    cut=st.tuples(st.integers(0, 40), st.integers(0, 40)),
    place=st.sampled_from(PLACES),
    fmt=st.sampled_from(FORMATS),
)
def test_no_fragment_of_any_encoding_reaches_any_format(
    secret: str, via: str, encoding: str, cut: tuple[int, int], place: str, fmt: Format
) -> None:
    if via in ("header", "cookie"):  # a header value: Latin-1, no separators to split on
        assume(all(ord(ch) < 256 for ch in secret))
        assume(not re.search(r"[;,\s]", secret) and "=" not in secret)
    encoded = ENCODINGS[encoding](secret)
    start = min(cut[0], max(0, len(encoded) - MIN_FRAGMENT))
    carried = encoded[start : max(start + MIN_FRAGMENT, len(encoded) - cut[1])]
    assume(not grams(carried) & baseline())  # text the line says anyway ("connection", "REDACTED")
    structlog.reset_defaults()
    stream = io.StringIO()
    configure_logging(fmt, stream=stream, level="debug")
    if via == "query":
        events = ConnectionEvents(CONN_ID, f"wss://example.com/ws?key={quote(secret, safe='')}")
    elif via == "password":
        events = ConnectionEvents(CONN_ID, f"wss://bob:{quote(secret, safe='')}@example.com/ws")
    else:
        events = ConnectionEvents(CONN_ID, "wss://example.com/ws")
        events.add_secrets([secret if via == "header" else f"sid={secret}"])
    try:
        emit(events, carried, place)
    finally:
        events.forget_secrets()
    lines = stream.getvalue().splitlines()
    assert lines
    for line in lines:
        assert not leaked(carried, line), (line, carried)
        if fmt != "console":
            json.loads(line)  # scrubbing never breaks a JSON line


@pytest.fixture(autouse=True)
def _no_stray_secrets() -> Iterator[None]:
    """Every test leaves the process's secret set as it found it."""
    before = len(SECRETS)
    yield
    release_retired()  # closed connections' secrets stay a while: not a test's leftovers
    assert len(SECRETS) == before, "a test left secrets registered"


def test_the_check_sees_through_json_and_repr_escapes() -> None:
    secret = 'quoted"back\\slash'
    assert leaked(secret, json.dumps({"m": f"a {secret} b"}))  # JSON-escaped in the line
    assert leaked(secret, f"x msg={secret!r}")  # the console's repr
    assert not leaked(secret, json.dumps({"m": "a REDACTED b"}))


@pytest.mark.parametrize("fmt", FORMATS)
def test_context_and_bound_fields_are_scrubbed_and_the_shortcut_never_shows(fmt: Format) -> None:
    secret = "ctx-secret-7f3a9b2c"
    stream = io.StringIO()
    configure_logging(fmt, stream=stream)
    events = ConnectionEvents(CONN_ID, f"wss://example.com/ws?key={secret}")
    try:
        structlog.contextvars.bind_contextvars(request=f"req with {secret}")
        events.bind({"account": f"acct {secret}"})
        events.state_changed(fail_record("plain"))
        events.state_changed(fail_record("plain"))  # the second takes the cached path
    finally:
        events.forget_secrets()
    text = stream.getvalue()
    assert text.count("req with REDACTED") == 2
    assert text.count("acct REDACTED") == 2
    assert secret not in text
    assert "\x00" not in text
    assert "scrubbed" not in text


def test_the_shortcut_never_reaches_an_application_pipeline() -> None:
    events = ConnectionEvents(CONN_ID, "wss://example.com/ws?key=some-secret-value")
    try:
        with capture_logs() as logs:
            events.state_changed(fail_record("plain"))
    finally:
        events.forget_secrets()
    assert not any(key.startswith("\x00") for key in logs[0])
