"""Project checks: `nox` runs tests, lint and typecheck, under the interpreter nox runs on."""

import shutil
from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "package"]
nox.options.reuse_venv = "yes"


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite (virtual time; a few marked tests use the real clock)."""
    session.install("-e", ".[test,plot]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check (with the ASYNC rules) and ruff format --check."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package, the tests and the benchmarks; pyright's
    --verifytypes: every public name of trio_conn with a known type."""
    session.install("-e", ".[test,typecheck,plot]")
    session.run("mypy", "--strict", "trio_conn", "tests")
    session.run("pyright", "--verifytypes", "trio_conn", "--ignoreexternal")
    session.chdir("bench")  # the benchmarks import their helpers as top-level modules
    session.run("mypy", "--strict", ".")


@nox.session
def chaos(session: nox.Session) -> None:
    """The full chaos run: 10 connections, 550 faults (CHAOS_SEED=N replays a seed)."""
    session.install("-e", ".[test]")
    session.run(
        "pytest",
        "tests/test_chaos.py",
        "-s",
        *session.posargs,
        env={"TRIO_CONN_CHAOS": "full"},
    )


@nox.session
def bench(session: nox.Session) -> None:
    """Quick benchmarks (the full ones: the commands in README "Performance")."""
    session.install("-e", ".[bench]")
    session.chdir("bench")
    session.run("python", "throughput.py", "--rounds", "5", "--messages", "5000")
    session.run("python", "events.py", "--events", "5000", "--runs", "5")
    session.run("python", "reconnect.py", "--reconnects", "50", "--runs", "5")
    session.run("python", "idle_scale.py", "--counts", "1000", "--intervals", "15", "--runs", "3")


@nox.session
def package(session: nox.Session) -> None:
    """Build the wheel and the sdist, check them (twine --strict), install the
    wheel into a fresh virtual environment and run ``trio-conn demo`` from it."""
    session.install("build", "twine")
    tmp = Path(session.create_tmp())
    dist = tmp / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    session.run("python", "-m", "build", "--outdir", str(dist))
    built = sorted(str(path) for path in dist.iterdir())
    session.run("twine", "check", "--strict", *built)
    (wheel,) = (path for path in built if path.endswith(".whl"))
    venv = tmp / "fresh"
    shutil.rmtree(venv, ignore_errors=True)
    session.run("python", "-m", "venv", str(venv))
    bin_dir = venv / "bin"
    session.run(str(bin_dir / "python"), "-m", "pip", "install", "-q", wheel, external=True)
    session.run(str(bin_dir / "trio-conn"), "--version", external=True)
    session.run(str(bin_dir / "trio-conn"), "demo", "--log-format", "json", external=True)
