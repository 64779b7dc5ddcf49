"""Shared pieces of the benchmarks: the server process, statistics, quiet logging."""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import structlog

HERE = Path(__file__).parent


class Server:
    """bench/server.py running in a second process."""

    def __init__(self, process: subprocess.Popen[str], port: int) -> None:
        self.process = process
        self.port = port
        self.url = f"ws://127.0.0.1:{port}/"

    def cpu_seconds(self) -> float:
        """User + system CPU time the server has used so far (10 ms resolution)."""
        with open(f"/proc/{self.process.pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def kill(self) -> None:
        """SIGKILL, as a crash: every connection ends without a close frame."""
        self.process.kill()
        self.process.wait()

    def terminate(self, timeout: float = 10.0) -> None:
        """SIGTERM (``--arrivals``: writes what is left, then exits); SIGKILL after ``timeout``."""
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()


def start_server(port: int = 0, arrivals: str | Path | None = None) -> Server:
    """Start bench/server.py (on ``port``, 0: a free one) and wait until it listens.

    ``arrivals``: the file it appends accept and handshake times to (server.py's
    ``--arrivals``); stop such a server with :meth:`Server.terminate` to have
    the last of them written.
    """
    command = [sys.executable, str(HERE / "server.py"), "--port", str(port)]
    if arrivals is not None:
        command += ["--arrivals", str(arrivals)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        word, listening = process.stdout.readline().split()
        assert word == "ready"
    except BaseException:
        process.kill()
        process.wait()
        raise
    return Server(process, int(listening))


@contextmanager
def server(port: int = 0, arrivals: str | Path | None = None) -> Iterator[Server]:
    """Run bench/server.py in a second process (arguments: :func:`start_server`'s)."""
    running = start_server(port, arrivals)
    try:
        yield running
    finally:
        running.kill()


@contextmanager
def server_process() -> Iterator[int]:
    """Run bench/server.py in a second process; yield its port."""
    with server() as running:
        yield running.port


def quiet_logging() -> None:
    """Drop trio_conn's events: benchmarks measure the connection, not the log."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))


def raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def rss_bytes() -> int:
    """Resident set size of this process, from /proc."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def trio_conn_build() -> dict[str, Any]:
    """Which trio_conn is measured: the git HEAD, local changes, and its transport.

    The package is installed editable from the work tree, so uncommitted
    changes under trio_conn/ are what runs; ``transport_imports`` lists the
    WebSocket libraries ``trio_conn/_transport.py`` imports at this moment.
    """
    root = HERE.parent

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", "-C", str(root), *args], capture_output=True, text=True, check=True
            ).stdout.rstrip("\n")
        except (OSError, subprocess.CalledProcessError):
            return "?"

    source = (root / "trio_conn" / "_transport.py").read_text(encoding="utf-8")
    library = r"^\s*(?:from|import)\s+(trio_websocket|wsproto|websockets)\b"
    imports = sorted(set(re.findall(library, source, re.MULTILINE)))
    changed = git("status", "--porcelain", "--", "trio_conn")
    return {
        "git_head": git("rev-parse", "--short", "HEAD"),
        "trio_conn_changed_files": [line[3:] for line in changed.splitlines()],
        "transport_imports": imports,
        "transport_sha1": hashlib.sha1(source.encode()).hexdigest()[:12],
    }


def describe_build(build: dict[str, Any]) -> str:
    """One line for the top of a report: which trio_conn these figures are of."""
    changed = build["trio_conn_changed_files"]
    imports = ", ".join(build["transport_imports"]) or "no WebSocket library"
    local = f" + uncommitted changes to {', '.join(changed)}" if changed else ""
    return (
        f"trio_conn at {build['git_head']}{local}; "
        f"its _transport.py ({build['transport_sha1']}) imports {imports}"
    )


def machine() -> str:
    return (
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} cores, {platform.machine()}"
    )
