"""The application's own lines: short secrets, lines before and after a connection's
block, public helpers, and a structlog pipeline the application built itself.

Every line runs through a real connection to the fault server; what is checked
is the rendered text, in each format.
"""

from __future__ import annotations

import datetime
import io
import json
import re

import pytest
import structlog
import trio
import trio.testing

from tests.test_secrets import FORMATS, Format
from trio_conn import (
    ConnectionState,
    _secrets,
    configure_logging,
    open_connection,
    redact_url,
    register_secrets,
    scrub_secrets,
)
from trio_conn.testing import FaultServer, open_fault_server

S = ConnectionState
PASSWORD = "hunter2"  # the README's own example: 7 characters
API_KEY = "k9x2q7"
TOKEN = "TOKENabcdef123456"


def url_of(server: FaultServer, *, password: str = PASSWORD, query: str = "") -> str:
    return f"ws://bot:{password}@127.0.0.1:{server.port}/feed?token={TOKEN}{query}"


@pytest.mark.parametrize("fmt", FORMATS)
async def test_short_secrets_are_hidden_as_whole_words_in_every_value_of_an_app_line(
    fmt: Format, autojump_clock: trio.testing.MockClock
) -> None:
    # Secrets that are also words the sink's own fields hold: the year of the
    # timestamp and a level name stay readable there, hidden everywhere else.
    year = str(datetime.datetime.now(datetime.UTC).year)
    stream = io.StringIO()
    configure_logging(fmt, stream=stream, service_name="svc")
    log = structlog.get_logger("app")
    async with (
        open_fault_server() as server,
        open_connection(
            url_of(server, query=f"&since={year}&mode=warning"),
            open_stream=server.open_stream,
            headers=[("X-Api-Key", API_KEY)],
            name="feed",
        ) as conn,
    ):
        await conn.wait_for_state(S.CONNECTED)
        log.warning(
            f"logged in as bot with {PASSWORD}",
            pw=PASSWORD,
            text=f"key={API_KEY}; since {year}",
            nested={"keys": [API_KEY, f"{PASSWORD}!"]},
            kept="hunter22 and xk9x2q7 are other words",
        )
    (line,) = [line for line in stream.getvalue().splitlines() if "logged in" in line]
    # The time and the level are the sink's own words: kept whole.
    if fmt == "console":
        head = re.match(r"\d\d:\d\d:\d\d\.\d{6} \[warning  \] ", line)
        assert head, line
        values = line[head.end() :]
    else:
        event = json.loads(line)
        timestamp = event.pop("timestamp", None) or event.pop("@timestamp")
        assert str(timestamp).startswith(f"{year}-")
        assert (event.pop("level", None) or event.pop("log.level")) == "warning"
        values = json.dumps(event)
    for secret in (PASSWORD, API_KEY, year, "warning"):
        assert not re.search(rf"(?<![0-9A-Za-z]){secret}(?![0-9A-Za-z])", values), values
    assert values.count("REDACTED") >= 6
    assert "hunter22 and xk9x2q7 are other words" in values


@pytest.mark.parametrize("fmt", ["json", "ecs"])
async def test_a_closed_connections_secrets_stay_hidden_for_the_next_lines(
    fmt: Format, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_secrets, "CLOSED_KEPT", 2)
    stream = io.StringIO()
    configure_logging(fmt, stream=stream)
    log = structlog.get_logger("app")
    async with open_fault_server() as server:
        passwords = ["alpha-7Kq2w", "bravo-9Xw4e", "charl-3Zp8r"]  # no 8 characters in common
        for password in passwords:
            url = url_of(server, password=password)
            async with open_connection(url, open_stream=server.open_stream) as conn:
                await conn.wait_for_state(S.CONNECTED)
            try:  # an application's error, caught after the block
                raise ValueError(f"could not use {url}")
            except ValueError:
                log.exception("app failure", url=url)
        # Two more closed since the first: it is no longer among the recently closed.
        log.info("much later", text=f"{passwords[0]} {passwords[1]} {passwords[2]}")
    failures = [line for line in stream.getvalue().splitlines() if "app failure" in line]
    assert len(failures) == 3
    for line in failures:
        assert not any(password in line for password in passwords), line
        assert TOKEN not in line
        assert "REDACTED" in line
    (later,) = [line for line in stream.getvalue().splitlines() if "much later" in line]
    assert passwords[0] in later  # bounded: the oldest closed connection was forgotten
    assert passwords[1] not in later
    assert passwords[2] not in later


async def test_an_application_hides_what_it_logs_before_opening(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stream = io.StringIO()
    configure_logging("json", stream=stream)
    log = structlog.get_logger("app")
    async with open_fault_server() as server:
        url = url_of(server)
        log.info("connecting", url=redact_url(url))
        forget = register_secrets(PASSWORD, API_KEY)
        log.info("raw", text=f"{url} key {API_KEY}")
        forget()
        forget()  # twice: nothing more to forget
        log.info("forgotten", text=API_KEY)
        with pytest.raises(TypeError, match="must be str"):
            register_secrets(b"bytes")  # type: ignore[arg-type]
    connecting, raw, forgotten = map(json.loads, stream.getvalue().splitlines())
    assert connecting["url"] == (
        f"ws://REDACTED:REDACTED@127.0.0.1:{server.port}/feed?token=REDACTED"
    )
    assert PASSWORD not in raw["text"]
    assert API_KEY not in raw["text"]
    assert raw["text"].endswith("key REDACTED")
    assert forgotten["text"] == API_KEY


@pytest.fixture
def app_pipeline(request: pytest.FixtureRequest) -> io.StringIO:
    """structlog configured by the application itself, ``scrub_secrets`` before the
    time and the renderer."""
    stream = io.StringIO()
    renderer = (
        structlog.processors.JSONRenderer()
        if request.param == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            scrub_secrets,
            structlog.processors.TimeStamper(fmt="iso"),
            renderer,
        ],
        logger_factory=structlog.WriteLoggerFactory(stream),
    )
    return stream


@pytest.mark.parametrize("app_pipeline", ["json", "console"], indirect=True)
async def test_an_application_pipeline_scrubs_with_the_public_processor(
    app_pipeline: io.StringIO, autojump_clock: trio.testing.MockClock
) -> None:
    structlog.contextvars.bind_contextvars(api_key=TOKEN)
    log = structlog.get_logger("app")
    async with (
        open_fault_server() as server,
        open_connection(url_of(server), open_stream=server.open_stream, name="feed") as conn,
    ):
        await conn.wait_for_state(S.CONNECTED)
        await server.close_all(4000, f"bye {PASSWORD}")
        await conn.wait_for_state(S.CONNECTED)
        try:
            raise RuntimeError(f"failed with {TOKEN}")
        except RuntimeError:
            log.exception("app failure", pw=PASSWORD)
    text = app_pipeline.getvalue()
    assert "connection.state_changed" in text
    assert "app failure" in text
    assert "Traceback" in text  # the exception is rendered, scrubbed
    for secret in (TOKEN, PASSWORD):
        assert secret not in text
