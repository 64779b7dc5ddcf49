"""The ``trio-conn`` command: ``demo``, ``connect URL`` and ``report FILE...``.

Events go to stderr (console renderer on a terminal, JSON otherwise, or what
``--log-format`` says); what the command produces (the demo's story, received
messages, the report) goes to stdout.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import trio

from . import __version__
from ._config import ConnectionConfig
from ._connect_command import EXIT_FAILED, configure_events, run_connect, silence_stdout
from ._logging import FORMATS, LEVELS
from ._report_command import run_report
from ._sink import scrub_line
from ._terminal import printable

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.run(args)
    except BrokenPipeError:  # `| head`: stdout's reader is done, so are we
        silence_stdout()
        return 0
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
        help='with --heartbeat message: the JSON sent as a beat (default {"op": "ping"})',
    )
    connect.add_argument(
        "--heartbeat-reply",
        metavar="JSON",
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
    connect.add_argument(
        "--exit-on-failed",
        action="store_true",
        help=f"close and exit with status {EXIT_FAILED} when the connection reaches failed "
        "(default: say when it will probe again, and wait)",
    )
    connect.add_argument("--name", help="connection id in every event")
    _logging_options(connect)
    connect.set_defaults(run=run_connect)

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
    parser.add_argument(
        "--log-level",
        choices=tuple(LEVELS),
        default="info",
        help="the least severe events written (default info)",
    )


# -- demo --------------------------------------------------------------------------


def _run_demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo  # imports the fault server: only for this command

    log_format = configure_events(args, sys.stderr)
    # In the console format the events are sentences on the same terminal:
    # the story does not tell the transitions a second time.
    trio.run(run_demo, sys.stdout, log_format != "console")
    return 0


if __name__ == "__main__":  # pragma: no cover - python -m trio_conn.cli
    sys.exit(main())
