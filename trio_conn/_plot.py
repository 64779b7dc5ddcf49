"""``trio-conn report --plot``: each connection's state timeline as a PNG (needs matplotlib)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._report import STATES, Report
from ._terminal import printable

COLOURS = {
    "disconnected": "#9e9e9e",
    "connecting": "#64b5f6",
    "connected": "#43a047",
    "reconnecting": "#fb8c00",
    "failed": "#e53935",
    "closed": "#424242",
}


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def plot_timeline(report: Report, path: Path) -> None:
    """Write :func:`draw_timeline`'s figure to ``path`` as a PNG.

    :raises PlotUnavailable: matplotlib is missing (``pip install 'trio-conn[plot]'``).
    :raises OSError: ``path`` cannot be written.
    """
    figure = draw_timeline(report)
    try:
        figure.savefig(path, dpi=100)
    finally:
        import matplotlib.pyplot as plt

        plt.close(figure)


def draw_timeline(report: Report) -> Any:
    """The timeline as a matplotlib ``Figure`` (the caller saves and closes it):
    one row per connection, one bar per stay, coloured by state.

    Time starts at 0 at each connection's first event and advances by the
    durations in the log (so clocks of different processes do not matter).
    Stays too short to see (under 0.4 % of the longest timeline) are drawn
    that wide, outlined; the legend sits above the axes and names the states
    that occur.

    :raises PlotUnavailable: matplotlib is missing (``pip install 'trio-conn[plot]'``).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display needed
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError as exc:
        raise PlotUnavailable("--plot needs matplotlib: pip install 'trio-conn[plot]'") from exc

    conn_ids = list(report.connections)
    rows = max(1, len(conn_ids))
    # Constrained layout with the legend outside, above the axes: it can
    # cover neither a bar nor the x-axis label, however few the rows.
    figure, axes = plt.subplots(figsize=(10, 1.9 + 0.5 * rows), layout="constrained")
    span = max(
        (sum(c.duration_s for c in report.changes if c.conn_id == conn_id) for conn_id in conn_ids),
        default=0.0,
    )
    # A stay shorter than this (0.4 % of the longest timeline, about 3 pixels)
    # is drawn this wide, outlined and on top, so that a connecting stay of a
    # few milliseconds is seen; the axis still reads true time.
    least = span * 0.004
    seen: set[str] = set()
    for row, conn_id in enumerate(conn_ids):
        elapsed = 0.0
        tiny: list[tuple[float, str]] = []
        for change in (c for c in report.changes if c.conn_id == conn_id):
            seen.add(change.from_state)
            if change.duration_s < least:
                tiny.append((elapsed, change.from_state))
            else:
                axes.broken_barh(
                    [(elapsed, change.duration_s)],
                    (row - 0.35, 0.7),
                    facecolors=COLOURS[change.from_state],
                )
            elapsed += change.duration_s
        for start, state in tiny:
            axes.broken_barh(
                [(start, least)],
                (row - 0.35, 0.7),
                facecolors=COLOURS[state],
                edgecolors="black",
                linewidth=0.4,
                zorder=3,
            )
    # parse_math=False: a "$" in a connection id is text, not mathtext to parse.
    axes.set_yticks(range(len(conn_ids)), labels=[printable(c) for c in conn_ids], parse_math=False)
    axes.set_ylim(-0.6, rows - 0.4)
    axes.invert_yaxis()  # the first connection on top, as in the text report
    axes.set_xlabel("seconds since the connection's first event")
    figure.legend(
        handles=[Patch(color=COLOURS[s], label=s) for s in STATES if s in seen],
        loc="outside upper center",
        ncol=len(STATES),
        fontsize="small",
        frameon=False,
    )
    return figure
