"""A throwaway PostgreSQL server for the `postgres` test tier (and bench/indexer_catchup.py).

`start_postgres()` runs `initdb` into a fresh temporary directory, starts `postgres` with `pg_ctl -w` on a
free TCP port of 127.0.0.1 (its unix socket in the same directory), and `PostgresServer.stop()` stops it
(`pg_ctl -m immediate`) and removes the directory. PostgreSQL refuses to run as root: a root process
(CI) runs the three programs as the `postgres` system user through `runuser`, in a directory that user
owns; any other user runs them as itself. `fresh_database()` creates an empty database and returns its
SQLAlchemy URL (`postgresql+psycopg://...`), so each test gets its own index.

PostgreSQL binaries missing is an error (`PostgresUnavailableError`) with what to install, never a skip:
a tier that silently runs nothing would pass in CI without testing anything.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from wwwserve.devnet.ports import free_port

PROGRAMS = ("initdb", "pg_ctl", "postgres")
SYSTEM_USER = "postgres"  # the Debian package's system user, which runs the server when we are root


class PostgresUnavailableError(RuntimeError):
    """PostgreSQL's programs are not installed, or the server did not start."""


def _binaries() -> dict[str, str]:
    found = {name: shutil.which(name) for name in PROGRAMS}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise PostgresUnavailableError(
            f"the postgres test tier needs PostgreSQL's {', '.join(missing)} on PATH (Debian: apt-get install "
            "postgresql, then put /usr/lib/postgresql/<version>/bin on PATH); it is not skipped without them")
    return {name: path for name, path in found.items() if path is not None}


@dataclass
class PostgresServer:
    """A running throwaway server; `stop()` stops it and deletes its data."""

    root: Path  # temporary directory: data/, the socket, the log
    port: int
    user: str  # the OS user running the server, also the database superuser initdb created
    as_user: list[str]  # command prefix that runs a program as `user` ([] when that is us)
    binaries: dict[str, str]
    _names: Iterator[int] = field(default_factory=itertools.count)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def url(self, database: str = "postgres") -> str:
        """The SQLAlchemy URL of `database` (psycopg 3 driver, TCP on 127.0.0.1, no password: trust auth)."""
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    def fresh_database(self, prefix: str = "test") -> str:
        """Create an empty database and return its URL."""
        import psycopg

        name = f"{prefix}_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(host="127.0.0.1", port=self.port, user=self.user, dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """Stop the server (immediate: its data are thrown away) and remove its directory."""
        try:
            if (self.data_dir / "postmaster.pid").exists():
                subprocess.run([*self.as_user, self.binaries["pg_ctl"], "-D", str(self.data_dir), "-m", "immediate",
                                "-w", "stop"], check=False, capture_output=True, timeout=60)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def start_postgres(*, fsync: bool = False) -> PostgresServer:
    """initdb + `pg_ctl -w start` in a fresh temporary directory (see the module docstring).

    `fsync=False` (tests) lets commits skip the disk flush; benchmarks pass True, as a production server runs."""
    binaries = _binaries()
    as_user: list[str] = []
    user = pwd.getpwuid(os.getuid()).pw_name
    root = Path(tempfile.mkdtemp(prefix="wwwserve-pg-"))
    if os.geteuid() == 0:
        try:
            account = pwd.getpwnam(SYSTEM_USER)
        except KeyError as exc:
            shutil.rmtree(root, ignore_errors=True)
            raise PostgresUnavailableError(
                f"PostgreSQL refuses to run as root and there is no {SYSTEM_USER!r} system user to run it") from exc
        os.chown(root, account.pw_uid, account.pw_gid)
        user = SYSTEM_USER
        as_user = ["runuser", "-u", SYSTEM_USER, "--"]
    server = PostgresServer(root=root, port=free_port(), user=user, as_user=as_user, binaries=binaries)
    try:
        _run(server, [binaries["initdb"], "-D", str(server.data_dir), "-U", user, "--auth=trust",
                      "--encoding=UTF8", "--no-sync"])
        options = (f"-p {server.port} -k {root} -c listen_addresses=127.0.0.1 "
                   f"-c fsync={'on' if fsync else 'off'} -c max_connections=200")
        _run(server, [binaries["pg_ctl"], "-D", str(server.data_dir), "-l", str(root / "server.log"),
                      "-o", options, "-w", "-t", "60", "start"])
    except BaseException:
        server.stop()
        raise
    return server


def _run(server: PostgresServer, command: list[str]) -> None:
    done = subprocess.run([*server.as_user, *command], capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        log = server.root / "server.log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise PostgresUnavailableError(
            f"{' '.join(command[:2])} failed ({done.returncode}): {done.stderr.strip()[-2000:]}\n{tail}")


@contextlib.contextmanager
def running_postgres(*, fsync: bool = False) -> Iterator[PostgresServer]:
    """A throwaway server for the block; stopped and removed after it, also when the block fails."""
    server = start_postgres(fsync=fsync)
    try:
        yield server
    finally:
        server.stop()
