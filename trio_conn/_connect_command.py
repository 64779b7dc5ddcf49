"""``trio-conn connect``: a managed connection to a real endpoint, its messages on stdout.

Every input is checked before anything starts (one clear line, exit 2);
secrets of the URL, the proxy and every ``-H`` argument are registered
first. Messages are printed escaped and scrubbed; events go to stderr.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

import structlog
import trio

from ._config import ConnectionConfig
from ._connection import ManagedConnection
from ._heartbeat import Heartbeat, MessageHeartbeat, PingHeartbeat
from ._logging import LogFormat, configure_logging
from ._open import open_connection
from ._proxy import choose_proxy, parse_proxy
from ._records import TransitionRecord
from ._redact import header_secrets, redact_url, url_secrets
from ._request import check_headers, check_subprotocols, parse_url
from ._secrets import REDACTED, SECRETS
from ._sink import scrub_line
from ._state import ConnectionState
from ._terminal import printable
from ._transport import Data, Session
from ._vocabulary import WAITING_IN_FAILED

#: ``connect --exit-on-failed``: the connection reached FAILED.
EXIT_FAILED = 3


def configure_events(args: argparse.Namespace, stream: TextIO) -> LogFormat:
    log_format: LogFormat = args.log_format or ("console" if stream.isatty() else "json")
    # The CLI owns its process: its configuration replaces any other.
    configure_logging(
        log_format, level=args.log_level, stream=stream, service_name="trio-conn", force=True
    )
    return log_format


def parse_header(text: str, index: int = 0) -> tuple[str, str]:
    """``'Name: value'`` -> ``("Name", "value")``.

    :param index: the argument's place among the ``-H`` options, for the message.
    :raises ValueError: no colon or an empty name. The message names the
        argument by its place only: without a colon there is no telling the
        name from the value ("Authorization Bearer <token>").
    """
    name, colon, value = text.partition(":")
    if not colon:
        raise ValueError(
            f"-H[{index}] must be 'Name: value' and has no ':' "
            "(the argument is not shown: it may hold a secret)"
        )
    if not name.strip():
        raise ValueError(f"-H[{index}] must be 'Name: value' and its name (before ':') is empty")
    return name.strip(), value.strip()


def reply_matcher(pattern_json: str) -> Callable[[Data], bool]:
    """A predicate: the message is a JSON object containing every item of ``pattern``.

    :raises ValueError: ``pattern_json`` is not a JSON object.
    """
    # Messages never echo the argument: a heartbeat may carry a token.
    try:
        pattern = json.loads(pattern_json)
    except ValueError as exc:
        raise ValueError(f"--heartbeat-reply must be JSON ({exc})") from None
    if not isinstance(pattern, dict):
        raise ValueError(
            f"--heartbeat-reply must be a JSON object, got a JSON {type(pattern).__name__}"
        )

    def matches(message: Data) -> bool:
        try:
            obj = json.loads(message)
        except ValueError:
            return False
        return isinstance(obj, dict) and all(obj.get(k) == v for k, v in pattern.items())

    return matches


def _heartbeat(args: argparse.Namespace) -> Heartbeat | None:
    if args.heartbeat == "none":
        return None
    if args.heartbeat == "ping":
        return PingHeartbeat()
    try:
        message = args.heartbeat_message or '{"op": "ping"}'
        beat = json.dumps(json.loads(message), separators=(",", ":"))
    except ValueError as exc:
        raise ValueError(f"--heartbeat-message must be JSON ({exc})") from None
    return MessageHeartbeat(lambda: beat, reply_matcher(args.heartbeat_reply or '{"op": "pong"}'))


def format_message(message: Data) -> str:
    """One line of stdout: text scrubbed of secrets with every non-printable
    character escaped (trio_conn/_terminal.py), bytes as ``base64:...``.

    Bytes are scrubbed before they are encoded: a secret in them, at any
    offset and in any form the scrubber knows, becomes `` REDACTED `` between
    the base64 of the pieces around it (``base64:aGk= REDACTED IQ==``).
    """
    if isinstance(message, bytes):
        # surrogateescape: every byte survives the round trip, UTF-8 or not.
        text = message.decode("utf-8", "surrogateescape")
        pieces = scrub_line(text).split(REDACTED)
        encoded = (
            base64.b64encode(piece.encode("utf-8", "surrogateescape")).decode("ascii")
            for piece in pieces
        )
        return scrub_line("base64:" + f" {REDACTED} ".join(encoded))
    return printable(scrub_line(message))


def run_connect(args: argparse.Namespace) -> int:
    # The arguments' secrets are registered first, so that no message about
    # them, nor any line printed while connected, can show one.
    held = SECRETS.add(
        [
            *url_secrets(args.url),
            *(url_secrets(args.proxy) if args.proxy else []),
            *(part for text in args.header for part in header_secrets(_value_part(text))),
        ]
    )
    try:
        return _checked_connect(args)
    finally:
        SECRETS.remove(held)


def _value_part(header: str) -> str:
    """What of a ``-H`` argument may be secret: after the colon; all of it without one."""
    name, colon, value = header.partition(":")
    return value if colon else name


def _checked_connect(args: argparse.Namespace) -> int:
    # Every input checked before anything starts: one clear line, exit 2.
    parse_url(args.url, redact_url(args.url))
    headers = check_headers(
        [parse_header(text, index) for index, text in enumerate(args.header)], "-H"
    )
    subprotocols = check_subprotocols(args.subprotocol)
    proxy: bool | str | None = True
    if args.proxy is not None:
        proxy = None if args.proxy.lower() == "none" else args.proxy
        if proxy is not None:
            parse_proxy(proxy, "--proxy")
    else:  # the environment's, checked now: a bad one is one line too, not a traceback
        target = parse_url(args.url, redact_url(args.url))
        choose_proxy(True, target.host, target.secure)
    options_of_fields = {
        "heartbeat_interval": args.heartbeat_interval,
        "heartbeat_timeout": args.heartbeat_timeout,
        "max_heartbeat_failures": args.max_heartbeat_failures,
        "max_connection_failures": args.max_connection_failures,
        "connect_timeout": args.connect_timeout,
        "max_message_size": args.max_message_size,
    }
    try:
        config = ConnectionConfig(**options_of_fields)
    except ValueError as exc:  # named as the person typed it: --heartbeat-interval
        text = str(exc)
        for field in options_of_fields:
            text = text.replace(f"ConnectionConfig.{field}", "--" + field.replace("_", "-"))
        raise ValueError(text) from None
    if args.heartbeat != "message" and (
        args.heartbeat_message is not None or args.heartbeat_reply is not None
    ):
        raise ValueError(
            "--heartbeat-message and --heartbeat-reply only go with --heartbeat message"
        )
    heartbeat = _heartbeat(args)
    log_format = configure_events(args, sys.stderr)
    options = _ConnectOptions(
        config=config,
        heartbeat=heartbeat,
        headers=headers,
        to_send=list(args.send),
        name=args.name,
        subprotocols=subprotocols,
        compression=None if args.no_compression else "deflate",
        exit_on_failed=args.exit_on_failed,
        human_stderr=log_format == "console",
        proxy=proxy,
    )
    status: int = trio.run(_connect, args.url, options)
    return status


@dataclass(frozen=True, slots=True)
class _ConnectOptions:
    config: ConnectionConfig
    heartbeat: Heartbeat | None
    headers: list[tuple[str, str]]
    to_send: list[str]
    name: str | None
    subprotocols: tuple[str, ...]
    compression: str | None
    proxy: bool | str | None
    exit_on_failed: bool = False
    #: Events on stderr for people (console): the FAILED line is printed as
    #: it is; else it is an event too, so the stream stays one JSON per line.
    human_stderr: bool = True


def _failed_line(reason: str, probe_in: float | None, exit_on_failed: bool) -> str:
    """What a person reads on stderr when the connection reaches FAILED."""
    if exit_on_failed:
        then = f"exiting with status {EXIT_FAILED} (--exit-on-failed)"
    elif probe_in is None:
        then = "it will not retry by itself: restart trio-conn once the cause is fixed"
    else:
        # UTC, as the console format's times of day.
        at = time.strftime("%H:%M:%S", time.gmtime(time.time() + probe_in))
        then = f"probing again in {probe_in:.0f} s (at {at} UTC); Ctrl-C to stop"
    return f"trio-conn: failed ({reason}); {then}"


async def _connect(url: str, options: _ConnectOptions) -> int:
    """Print every message until SIGINT or SIGTERM (exit status 128 + its number,
    the shell's convention: 130 for Ctrl-C) or, with ``--exit-on-failed``,
    FAILED (:data:`EXIT_FAILED`); return the exit status."""
    statuses: list[int] = []
    failed = trio.Event()

    async def on_connect(session: Session) -> None:
        for message in options.to_send:
            await session.send(message)

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def stop_on_signal() -> None:
                async for signum in signals:
                    statuses.append(128 + signum)
                    nursery.cancel_scope.cancel()  # leaving the block closes: CLOSED
                    return

            nursery.start_soon(stop_on_signal)

            def on_transition(record: TransitionRecord) -> None:
                if record.to_state is not ConnectionState.FAILED:
                    return
                next_at = conn_ref[0].statistics().next_retry_at if conn_ref else None
                probe_in = None if next_at is None else max(0.0, next_at - trio.current_time())
                line = _failed_line(record.reason, probe_in, options.exit_on_failed)
                if options.human_stderr:
                    print(scrub_line(printable(line)), file=sys.stderr, flush=True)
                else:  # one more JSON line, which report counts as another event
                    fields: dict[str, object] = {"detail": line.removeprefix("trio-conn: ")}
                    if probe_in is not None:
                        fields["probe_in_s"] = round(probe_in, 3)
                    structlog.get_logger("trio_conn").warning(
                        WAITING_IN_FAILED, conn_id=conn_ref[0].name if conn_ref else "?", **fields
                    )
                failed.set()

            async def stop_on_failed() -> None:
                await failed.wait()
                statuses.append(EXIT_FAILED)
                nursery.cancel_scope.cancel()

            if options.exit_on_failed:
                nursery.start_soon(stop_on_failed)
            conn_ref: list[ManagedConnection] = []
            async with open_connection(
                url,
                config=options.config,
                heartbeat=options.heartbeat,
                headers=options.headers,
                on_connect=on_connect if options.to_send else None,
                name=options.name,
                subprotocols=options.subprotocols,
                compression=options.compression,
                proxy=options.proxy,
                on_transition=on_transition,
            ) as conn:
                conn_ref.append(conn)
                async for message in conn:
                    try:
                        print(format_message(message), flush=True)
                    except BrokenPipeError:  # `| head -1`: the reader is done, so are we
                        silence_stdout()
                        nursery.cancel_scope.cancel()
                        break
    return statuses[0] if statuses else 0


def silence_stdout() -> None:
    """stdout's reader went away (a closed pipe): point stdout at /dev/null, so
    that nothing more, not even the interpreter's last flush, raises."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
