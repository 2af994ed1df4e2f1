"""A real PostgreSQL server for the tests: `initdb` and `pg_ctl` in a temp folder, reached over a unix socket.

The suite starts one server per test session and gives each test its own fresh
database (`CREATE DATABASE ... TEMPLATE`, a file copy), so tests never see each
other's rows and need no cleanup. The server listens on no TCP port at all
(`listen_addresses = ''`): its socket lives in the temp folder, so several test
runs on one machine (other worktrees, CI) can never collide on a port.

Durability is switched off (`fsync = off`): a test server's data dies with the
test, and fsyncs would only make every CREATE DATABASE slower.

`initdb` and `pg_ctl` refuse to run as root, and CI runs as root, so under
root the server runs as an unprivileged user (`postgres` when the Debian
package made one, `nobody` otherwise) that owns the temp folder.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

SUPERUSER = "postgres"
PORT = 5432  # only names the socket file (.s.PGSQL.5432) in our own folder; no TCP port is opened
_NEEDED = ("initdb", "pg_ctl", "postgres")
# A test server's settings: small, quick, and logging enough to explain a failed start.
_SETTINGS = f"""
listen_addresses = ''
port = {PORT}
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 32MB
max_connections = 200
log_min_messages = warning
"""


class PostgresNotInstalledError(RuntimeError):
    """No PostgreSQL server binaries were found on this machine."""


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name)) or (0,)


def candidate_bindirs() -> Iterator[Path]:
    """Where the server binaries may be: `pg_config --bindir`, PATH, then Debian's versioned folders, newest first."""
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            out = subprocess.run(  # noqa: S603 - the pg_config found on PATH, no shell
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10
            )
            yield Path(out.stdout.strip())
    initdb = shutil.which("initdb")
    if initdb is not None:
        yield Path(initdb).resolve().parent
    yield from sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)


def find_bindir() -> Path:
    """The first folder holding initdb, pg_ctl and postgres; PostgresNotInstalledError when there is none."""
    for bindir in candidate_bindirs():
        if all((bindir / name).is_file() for name in _NEEDED):
            return bindir
    raise PostgresNotInstalledError(
        "PostgreSQL is not installed: no initdb, pg_ctl and postgres in `pg_config --bindir`, PATH "
        "or /usr/lib/postgresql/*/bin"
    )


def _server_user() -> pwd.struct_passwd | None:
    """Who runs the server: None (ourselves) unless we are root, which initdb refuses."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise PostgresNotInstalledError("running as root, and there is no 'postgres' or 'nobody' user to run the server")


@dataclass
class PostgresServer:
    """One running server; `database()` hands out fresh databases on it."""

    bindir: Path
    root: Path
    user: pwd.struct_passwd | None
    _templates: set[str] = field(default_factory=set)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    @classmethod
    def start(cls, bindir: Path) -> PostgresServer:
        """initdb and start a server in a new temp folder; its log tail is in the error if it does not start."""
        user = _server_user()
        # /tmp, not $TMPDIR: the server's user must reach it, and a unix socket path has ~100 bytes at most.
        root = Path(tempfile.mkdtemp(prefix="imagine-pg-", dir="/tmp" if Path("/tmp").is_dir() else None))  # noqa: S108
        if user is not None:
            os.chown(root, user.pw_uid, user.pw_gid)
        server = cls(bindir, root, user)
        try:
            server._run("initdb", "--pgdata", str(server.data), "--username", SUPERUSER, "--auth", "trust")
            server._run("initdb", "--version")  # fails loudly here rather than later if the binary is broken
            with (server.data / "postgresql.conf").open("a", encoding="utf-8") as conf:
                conf.write(_SETTINGS + f"unix_socket_directories = '{root}'\n")
            server._run("pg_ctl", "--pgdata", str(server.data), "--log", str(server.log), "--wait", "start")
        except BaseException:
            server.stop()
            raise
        return server

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bindir / program), *args]
        # As an unprivileged user when we are root (None: as ourselves, subprocess's default).
        user: int | None = None
        group: int | None = None
        extra_groups: list[int] | None = None
        if self.user is not None:
            user, group, extra_groups = self.user.pw_uid, self.user.pw_gid, []
        # initdb picks its locale from the environment: C keeps it the same on every machine.
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"}
        result = subprocess.run(  # noqa: S603 - our own binaries, no shell
            command,
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            user=user,
            group=group,
            extra_groups=extra_groups,
        )
        if result.returncode != 0:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{program} failed ({result.returncode}): {result.stderr.strip()}\n{tail}".strip())

    def stop(self) -> None:
        """Stop the server (fast: open connections are cut) and remove its folder."""
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self._run("pg_ctl", "--pgdata", str(self.data), "--mode", "fast", "--wait", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@/{database}?host={self.root}&port={PORT}"

    async def _admin(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.url("postgres"))

    async def make_template(self, name: str, prepare: Callable[[str], Awaitable[object]] | None = None) -> None:
        """Create database `name` once per session; `prepare(url)` (async) fills it before it becomes a template."""
        if name in self._templates:
            return
        admin = await self._admin()
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        if prepare is not None:
            await prepare(self.url(name))
        self._templates.add(name)

    @contextlib.asynccontextmanager
    async def database(self, template: str = "template1") -> AsyncIterator[str]:
        """A new database copied from `template`, dropped (connections and all) afterwards; yields its URL."""
        name = f"test_{uuid.uuid4().hex[:16]}"
        admin = await self._admin()
        try:
            await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        finally:
            await admin.close()
        try:
            yield self.url(name)
        finally:
            admin = await self._admin()
            try:
                await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            finally:
                await admin.close()
