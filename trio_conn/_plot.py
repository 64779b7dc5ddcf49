"""``trio-conn report --plot``: each connection's state timeline as a PNG (needs matplotlib)."""

from __future__ import annotations

from pathlib import Path

from ._report import STATES, Report

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
    """Draw one row per connection, one bar per stay, coloured by state.

    Time starts at 0 at each connection's first event and advances by the
    durations in the log (so clocks of different processes do not matter).

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
    figure, axes = plt.subplots(figsize=(10, 1.0 + 0.6 * max(1, len(conn_ids))))
    for row, conn_id in enumerate(conn_ids):
        elapsed = 0.0
        for change in (c for c in report.changes if c.conn_id == conn_id):
            axes.broken_barh(
                [(elapsed, change.duration_s)],
                (row - 0.35, 0.7),
                facecolors=COLOURS[change.from_state],
            )
            elapsed += change.duration_s
    axes.set_yticks(range(len(conn_ids)), labels=conn_ids)
    axes.set_xlabel("seconds since the connection's first event")
    axes.legend(
        handles=[Patch(color=COLOURS[s], label=s) for s in STATES],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.25),
        ncol=len(STATES),
        fontsize="small",
    )
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
