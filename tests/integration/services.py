"""Throwaway real services for integration tests: a PostgreSQL cluster and an MLflow tracking server.

Both listen on a free loopback port, live in a temporary directory, are waited on with bounded
timeouts and are always torn down. Where PostgreSQL is missing or cannot start, the test fails
under CI (``CI=true``: .ci/services installs it) and skips with the reason elsewhere.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PG_START_TIMEOUT_S = 60
MLFLOW_START_TIMEOUT_S = 120


def unavailable(reason: str) -> None:
    """Fail under CI (the service is part of the CI contract), skip with ``reason`` elsewhere."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: run .ci/services first)", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def postgres_bin() -> Path | None:
    """Directory with initdb/pg_ctl: Debian's /usr/lib/postgresql/<v>/bin (newest), else PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: [int(x) if x.isdigit() else 0 for x in Path(p).parts[-3].split(".")])
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb and shutil.which("pg_ctl") else None


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class Postgres:
    """A running throwaway cluster; ``url(db)`` is a SQLAlchemy URL (trust auth, loopback).

    The driver is named (``+psycopg2``): SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3.
    """

    port: int
    user: str
    root: Path

    def url(self, database: str) -> str:
        return f"postgresql+psycopg2://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user, dbname="postgres",
                                connect_timeout=10)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return self.url(name)


@contextlib.contextmanager
def postgres_cluster() -> Iterator[Postgres]:
    """initdb + pg_ctl start on a free loopback port; pg_ctl stop (then immediate) and delete on exit.

    As root, postgres runs as the ``postgres`` account (it refuses root) through ``runuser``.
    """
    bindir = postgres_bin()
    if bindir is None:
        unavailable("PostgreSQL is not installed (no initdb/pg_ctl under /usr/lib/postgresql/*/bin or on PATH)")
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        unavailable("psycopg2 is not installed; pip install -e '.[test]'")
    as_root = os.geteuid() == 0
    prefix: list[str] = []
    if as_root:
        try:
            import pwd

            account = pwd.getpwnam("postgres")
        except KeyError:
            unavailable("running as root and there is no 'postgres' account to run PostgreSQL as")
        runuser = shutil.which("runuser")
        if runuser is None:
            unavailable("running as root and runuser is missing; cannot start PostgreSQL as 'postgres'")
        prefix = [runuser, "-u", "postgres", "--"]
    # under /tmp (world-traversable), not pytest's 0700 tmp_path, so the postgres account can reach it
    root = Path(tempfile.mkdtemp(prefix="modcompress-pg-"))
    data, log = root / "data", root / "postgres.log"
    if as_root:
        os.chown(root, account.pw_uid, account.pw_gid)
    port = free_port()
    user = "modcompress"

    def run(*args: str, timeout: float) -> subprocess.CompletedProcess:
        return subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=timeout, cwd=root)

    started = False
    try:
        init = run(str(bindir / "initdb"), "-D", str(data), "-U", user, "-A", "trust", "-E", "UTF8", "--no-sync",
                   timeout=120)
        if init.returncode != 0:
            unavailable(f"initdb failed: {(init.stderr or init.stdout).strip()[-300:]}")
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off"
        start = run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t",
                    str(PG_START_TIMEOUT_S), "start", timeout=PG_START_TIMEOUT_S + 15)
        started = True
        if start.returncode != 0:
            unavailable(f"PostgreSQL did not start: {(start.stderr or start.stdout).strip()[-200:]}\n{_tail(log)}")
        yield Postgres(port, user, root)
    finally:
        if started:
            stop = run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", "20", "stop", timeout=40)
            if stop.returncode != 0:
                run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "-t", "10", "stop", timeout=30)
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class MlflowServer:
    url: str
    artifact_root: Path
    log: Path


@contextlib.contextmanager
def mlflow_server(backend_uri: str, workdir: Path) -> Iterator[MlflowServer]:
    """``mlflow server`` on a free loopback port, healthy (GET /health) within a bounded wait; stopped on exit."""
    port = free_port()
    artifacts = workdir / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    log = workdir / "mlflow-server.log"
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri,
           "--default-artifact-root", f"file:{artifacts}", "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1"]
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True)
    try:
        deadline = time.monotonic() + MLFLOW_START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited with {proc.returncode}:\n{_tail(log)}", pytrace=False)
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server not healthy after {MLFLOW_START_TIMEOUT_S} s:\n{_tail(log)}",
                            pytrace=False)
            time.sleep(0.5)
        yield MlflowServer(url, artifacts, log)
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group (it has worker children), then SIGKILL after a bounded wait."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
