"""A throwaway PostgreSQL cluster for the tests of the postgres store.

The cluster lives in a fresh temp dir and listens only on a Unix socket in that dir (no TCP
port at all). initdb refuses to run as root, so as root the PostgreSQL programs run as the
`postgres` user through runuser. The binaries are Debian's, off the PATH, in
/usr/lib/postgresql/15/bin (PG_BIN overrides).
"""

import os
import random
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_USER = "inferq"
START_TIMEOUT = 30


def _as_postgres(args):
    """Return args run as the postgres user when we are root, else unchanged."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--"] + args
    return args


class PgCluster:
    """One PostgreSQL server in its own temp dir; stop() removes everything."""

    def __init__(self):
        if not (PG_BIN / "initdb").exists():
            pytest.fail(f"PostgreSQL is not installed: {PG_BIN}/initdb is missing; install the "
                        "Debian package postgresql (scripts/deps.sh install)")
        self.dir = Path(tempfile.mkdtemp(prefix="inferq-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        # Only the name of the socket file depends on the port: nothing listens on TCP.
        self.port = random.randint(20000, 60000)
        self.databases = 0
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        os.chmod(self.dir, 0o755)
        self._run([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", PG_USER, "--auth=trust",
                   "-E", "UTF8", "--no-sync", "--no-instructions"])
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write("listen_addresses = ''\n"
                       f"unix_socket_directories = '{self.dir}'\n"
                       f"port = {self.port}\n"
                       "max_connections = 200\n"
                       # The tests kill processes, never the machine: the page cache keeps
                       # what PostgreSQL wrote, and commits still wait for the WAL write.
                       "fsync = off\n"
                       "full_page_writes = off\n")
        self.start()

    def _run(self, args, check=True):
        return subprocess.run(_as_postgres(args), check=check, capture_output=True, text=True,
                              timeout=START_TIMEOUT)

    def start(self):
        self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w",
                   "-t", str(START_TIMEOUT), "start"])

    def stop(self, mode="fast"):
        self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"],
                  check=False)

    def running(self):
        r = self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "status"], check=False)
        return r.returncode == 0

    def psql(self, sql, database="postgres"):
        """Run sql and return its output rows as lists of strings."""
        r = subprocess.run([str(PG_BIN / "psql"), "-h", str(self.dir), "-p", str(self.port),
                            "-U", PG_USER, "-d", database, "-At", "-F", "|", "-v",
                            "ON_ERROR_STOP=1", "-c", sql],
                           check=True, capture_output=True, text=True, timeout=START_TIMEOUT)
        return [line.split("|") for line in r.stdout.splitlines() if line]

    def session(self, database):
        """Start a psql session on database that reads statements from its stdin, quietly.

        The caller writes statements to proc.stdin, reads rows from proc.stdout, and ends it by
        closing stdin and waiting; it holds its locks until then.
        """
        return subprocess.Popen([str(PG_BIN / "psql"), "-h", str(self.dir), "-p", str(self.port),
                                 "-U", PG_USER, "-d", database, "-qAt", "-v", "ON_ERROR_STOP=1"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def new_database(self):
        """Create an empty database and return the --store URI of it (Unix socket form)."""
        self.databases += 1
        name = f"t{self.databases}"
        self.psql(f"CREATE DATABASE {name}")
        return self.uri(name)

    def uri(self, name):
        return f"postgres:///{name}?host={self.dir}&port={self.port}&user={PG_USER}"

    def destroy(self):
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


def wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
