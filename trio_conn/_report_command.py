"""``trio-conn report``: read event logs, print the figures, draw the timeline.

Tools never crash on their input: a line no rule foresaw is malformed (see
trio_conn/_report.py); stdin closed or unreadable, a file that cannot be
read, a plot that cannot be written are one ``trio-conn: error:`` line
(``ValueError``, turned into exit 2 by ``cli.main``).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from ._report import build_report, render_text

EXIT_USAGE = 2


def _lines(paths: Sequence[str]) -> Iterator[str]:
    for path in paths:
        if path == "-":
            yield from _stdin_lines()
            continue
        try:
            with open(path, encoding="utf-8", errors="replace") as file:
                yield from file
        except OSError as exc:
            raise ValueError(f"cannot read {path}: {exc.strerror}") from None


def _stdin_lines() -> Iterator[str]:
    stdin = sys.stdin
    if stdin is None:  # started with stdin closed (<&-): Python sets it to None
        raise ValueError("cannot read -: stdin is closed")
    buffer = getattr(stdin, "buffer", None)
    # Bytes that are not UTF-8 make a line malformed, never the command fail.
    lines = (
        stdin if buffer is None else io.TextIOWrapper(buffer, encoding="utf-8", errors="replace")
    )
    try:
        yield from lines
    except OSError as exc:  # a directory on stdin (< /), a device that fails
        raise ValueError(f"cannot read -: {exc.strerror or exc}") from None


def run_report(args: argparse.Namespace) -> int:
    if not args.flap_threshold >= 0:
        raise ValueError(f"--flap-threshold must be >= 0, got {args.flap_threshold}")
    report = build_report(_lines(args.files), flap_threshold=args.flap_threshold)
    if args.json:
        output: Any = report.as_dict()
        print(json.dumps(output, indent=2, allow_nan=False))  # strict JSON (RFC 8259)
    else:
        sys.stdout.write(render_text(report))
    if report.malformed:
        lines = "line" if report.malformed == 1 else "lines"
        print(f"trio-conn: {report.malformed} malformed {lines} skipped", file=sys.stderr)
    if not report.connections:
        print("trio-conn: no connection event in the input", file=sys.stderr)
    if args.plot is not None:
        from ._plot import PlotUnavailable, plot_timeline

        try:
            plot_timeline(report, args.plot)
        except PlotUnavailable as exc:
            print(f"trio-conn: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except OSError as exc:  # no such directory, no permission, a full disk
            raise ValueError(f"cannot write {args.plot}: {exc.strerror or exc}") from None
    return 0
