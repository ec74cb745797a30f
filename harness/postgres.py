"""PostgreSQL for tests and benchmarks: scratch databases (made and migrated, dropped after)
and a throwaway cluster of our own."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from controlplane.data import migrate
from harness.ports import free_port


async def create_database(
    admin_dsn: str, database_url: str, prefix: str = "agentos_bench"
) -> tuple[str, str]:
    """A new migrated database named `<prefix>_<random>` on the server of `database_url`;
    returns (name, SQLAlchemy URL)."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = make_url(database_url).set(database=name).render_as_string(hide_password=False)
    await asyncio.to_thread(migrate.upgrade, url)
    return name, url


async def drop_database(admin_dsn: str, name: str) -> None:
    """Drop `name`, retrying for a while: someone may be restarting the shared PostgreSQL."""
    for attempt in range(30):
        try:
            admin = await asyncpg.connect(admin_dsn)
        except (OSError, asyncpg.PostgresError):
            if attempt == 29:
                print(f"could not drop database {name}: drop it by hand", file=sys.stderr)
                return
            await asyncio.sleep(1)
            continue
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
        return


class PrivatePostgres:
    """A throwaway PostgreSQL cluster (same binary and flags as hack/services.sh), for runs
    while others restart the shared one. Runs as the `postgres` user when we are root."""

    BIN = Path("/usr/lib/postgresql/15/bin")

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="agentos-bench-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def database_url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _pg(self, tool: str, *args: str, check: bool = True) -> None:
        quiet = subprocess.DEVNULL
        command = [*self._as, str(self.BIN / tool), "-D", str(self.data), *args]
        subprocess.run(command, stdout=quiet, stderr=quiet, check=check)

    def start(self) -> None:
        if self._as:
            shutil.chown(self.dir, "postgres", "postgres")
        self._pg("initdb", "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8")
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c fsync=off"
            " -c max_connections=300"
        )
        self._pg("pg_ctl", "-l", str(self.dir / "log"), "-w", "start", "-o", options)

    def stop(self) -> None:
        self._pg("pg_ctl", "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.dir, ignore_errors=True)
