"""The ``trio-conn`` command: ``demo``, ``connect URL`` and ``report FILE...``.

Events go to stderr (console renderer on a terminal, JSON otherwise, or what
``--log-format`` says); what the command produces (the demo's story, received
messages, the report) goes to stdout.
"""

from __future__ import annotations

import argparse
import base64
import json
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import trio

from . import __version__
from ._config import ConnectionConfig
from ._connection import open_connection
from ._heartbeat import Heartbeat, MessageHeartbeat, PingHeartbeat
from ._logging import FORMATS, LEVELS, LogFormat, configure_logging
from ._proxy import parse_proxy
from ._redact import header_secrets, redact_url, url_secrets
from ._report_command import run_report
from ._request import check_headers, check_subprotocols, parse_url
from ._secrets import REDACTED, SECRETS
from ._sink import scrub_line
from ._terminal import printable
from ._transport import Data, Session

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.run(args)
    except ValueError as exc:  # bad input found after parsing: a clear line, no traceback
        print(f"trio-conn: error: {scrub_line(printable(str(exc)))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:  # Ctrl-C before the signal handler was installed
        return EXIT_INTERRUPTED
    return status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trio-conn",
        description="Keep a WebSocket connection alive, and read what its logs say.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="a scripted story against a fault-injecting server")
    _logging_options(demo)
    demo.set_defaults(run=_run_demo)

    connect = commands.add_parser("connect", help="a managed connection to a real endpoint")
    connect.add_argument("url", help="ws:// or wss:// URL")
    connect.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="request header, repeatable; values are never logged",
    )
    connect.add_argument(
        "--send",
        action="append",
        default=[],
        metavar="MESSAGE",
        help="message sent after every connect (e.g. a subscription), repeatable",
    )
    connect.add_argument(
        "--heartbeat",
        choices=("ping", "message", "none"),
        default="ping",
        help="ping/pong frames (default), an application message, or none",
    )
    connect.add_argument(
        "--heartbeat-message",
        metavar="JSON",
        default='{"op": "ping"}',
        help='with --heartbeat message: the JSON sent as a beat (default {"op": "ping"})',
    )
    connect.add_argument(
        "--heartbeat-reply",
        metavar="JSON",
        default='{"op": "pong"}',
        help="with --heartbeat message: a JSON object; a message containing all of its "
        'keys and values is a reply (default {"op": "pong"})',
    )
    defaults = ConnectionConfig()
    for option, field, kind in (
        ("--heartbeat-interval", "heartbeat_interval", float),
        ("--heartbeat-timeout", "heartbeat_timeout", float),
        ("--max-heartbeat-failures", "max_heartbeat_failures", int),
        ("--max-connection-failures", "max_connection_failures", int),
        ("--connect-timeout", "connect_timeout", float),
    ):
        connect.add_argument(
            option,
            type=kind,
            default=getattr(defaults, field),
            help=f"default {getattr(defaults, field)}",
        )
    connect.add_argument(
        "--subprotocol",
        action="append",
        default=[],
        metavar="NAME",
        help="subprotocol to offer (Sec-WebSocket-Protocol), repeatable, in order of preference",
    )
    connect.add_argument(
        "--no-compression",
        action="store_true",
        help="do not offer permessage-deflate (RFC 7692)",
    )
    connect.add_argument(
        "--max-message-size",
        type=int,
        default=defaults.max_message_size,
        metavar="BYTES",
        help=f"largest message accepted; a larger one closes with 1009 "
        f"(default {defaults.max_message_size})",
    )
    connect.add_argument(
        "--proxy",
        metavar="URL",
        help="http://, https:// or socks5:// proxy, with optional user:password@ "
        "(default: the https_proxy/http_proxy/all_proxy environment variables, no_proxy "
        "honoured); 'none': connect directly",
    )
    connect.add_argument("--name", help="connection id in every event")
    _logging_options(connect)
    connect.set_defaults(run=_run_connect)

    report = commands.add_parser("report", help="figures from event logs (json or ecs)")
    report.add_argument("files", nargs="+", metavar="FILE", help="event log files; - for stdin")
    report.add_argument("--json", action="store_true", help="machine-readable output")
    report.add_argument(
        "--plot", type=Path, metavar="PNG", help="draw each connection's state timeline"
    )
    report.add_argument(
        "--flap-threshold",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="a connected stay shorter than this that ends in reconnecting is a flap "
        "(default 30, the default stable_after)",
    )
    report.set_defaults(run=run_report)
    return parser


def _logging_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        help="event format on stderr (default: console on a terminal, json otherwise)",
    )
    parser.add_argument("--log-level", choices=tuple(LEVELS), default="info")


def _configure_events(args: argparse.Namespace, stream: TextIO) -> LogFormat:
    log_format: LogFormat = args.log_format or ("console" if stream.isatty() else "json")
    # The CLI owns its process: its configuration replaces any other.
    configure_logging(
        log_format, level=args.log_level, stream=stream, service_name="trio-conn", force=True
    )
    return log_format


# -- demo --------------------------------------------------------------------------


def _run_demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo  # imports the fault server: only for this command

    log_format = _configure_events(args, sys.stderr)
    # In the console format the events are sentences on the same terminal:
    # the story does not tell the transitions a second time.
    trio.run(run_demo, sys.stdout, log_format != "console")
    return 0


# -- connect -----------------------------------------------------------------------


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
        beat = json.dumps(json.loads(args.heartbeat_message), separators=(",", ":"))
    except ValueError as exc:
        raise ValueError(f"--heartbeat-message must be JSON ({exc})") from None
    return MessageHeartbeat(lambda: beat, reply_matcher(args.heartbeat_reply))


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


def _run_connect(args: argparse.Namespace) -> int:
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
    config = ConnectionConfig(
        heartbeat_interval=args.heartbeat_interval,
        heartbeat_timeout=args.heartbeat_timeout,
        max_heartbeat_failures=args.max_heartbeat_failures,
        max_connection_failures=args.max_connection_failures,
        connect_timeout=args.connect_timeout,
        max_message_size=args.max_message_size,
    )
    heartbeat = _heartbeat(args)
    _configure_events(args, sys.stderr)
    options = _ConnectOptions(
        config=config,
        heartbeat=heartbeat,
        headers=headers,
        to_send=list(args.send),
        name=args.name,
        subprotocols=subprotocols,
        compression=None if args.no_compression else "deflate",
        proxy=proxy,
    )
    signum = trio.run(_connect, args.url, options)
    return 0 if signum is None else 128 + signum  # the shell's convention: 130 for Ctrl-C


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


async def _connect(url: str, options: _ConnectOptions) -> int | None:
    """Print every message until SIGINT or SIGTERM; return that signal's number."""
    received: list[int] = []

    async def on_connect(session: Session) -> None:
        for message in options.to_send:
            await session.send(message)

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def stop_on_signal() -> None:
                async for signum in signals:
                    received.append(signum)
                    nursery.cancel_scope.cancel()  # leaving the block closes: CLOSED
                    return

            nursery.start_soon(stop_on_signal)
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
            ) as conn:
                async for message in conn:
                    print(format_message(message), flush=True)
    return received[0] if received else None


if __name__ == "__main__":  # pragma: no cover - python -m trio_conn.cli
    sys.exit(main())
