"""Fixtures for the integration tests: each test starts its own `inferq serve` processes on
ephemeral ports with a fresh data dir, and every process must exit 0 on SIGTERM at the end.

INFERQ_BIN names the binary (tests/run.sh sets it); the default is build/inferq in the repository.

INFERQ_TEST_STORE=postgres runs every server on the postgres store: one throwaway PostgreSQL
cluster for the session (pg_cluster.py) and a fresh database per test, which all servers of
that test share. Tests of behaviour that only the local SQLite store has carry
`@pytest.mark.local_store_only(reason)` and are skipped, with that reason, in that run.
"""

import os
import shutil
from pathlib import Path

import pytest

from pg_cluster import PgCluster
from support import Server
from tls_support import TestCA

TEST_STORE = os.environ.get("INFERQ_TEST_STORE", "local")


def pytest_configure(config):
    config.addinivalue_line("markers", "local_store_only(reason): the test checks behaviour of "
                            "the local SQLite store that the postgres store does not have")
    if TEST_STORE not in ("local", "postgres"):
        raise pytest.UsageError(f"INFERQ_TEST_STORE={TEST_STORE!r}: expected local or postgres")


def pytest_collection_modifyitems(config, items):
    if TEST_STORE != "postgres":
        return
    for item in items:
        marker = item.get_closest_marker("local_store_only")
        if marker:
            reason = marker.kwargs.get("reason") or (marker.args[0] if marker.args else "")
            item.add_marker(pytest.mark.skip(reason=f"local store only: {reason}"))


@pytest.fixture(scope="session")
def pg_cluster():
    """A PostgreSQL cluster on a Unix socket in a temp dir, for the whole session."""
    cluster = PgCluster()
    yield cluster
    cluster.destroy()


@pytest.fixture
def pg_store(request):
    """The --store URI of a fresh database when INFERQ_TEST_STORE=postgres, else None."""
    if TEST_STORE != "postgres":
        return None
    return request.getfixturevalue("pg_cluster").new_database()


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, "report_" + report.when, report)


def flag_args(flags):
    """Turn {"claim_timeout": 1} into ["--claim-timeout", "1"], and {"access_log": True} into
    ["--access-log"] for a flag that takes no value."""
    args = []
    for name, value in flags.items():
        args.append("--" + name.replace("_", "-"))
        if value is not True:
            args.append(str(value))
    return args


def share_admin_key(servers, store, data_dir):
    """Give a new node on a postgres store the admin key of the test's first node there.

    Only the first node of a database creates an admin key; the others take the keys from the
    database, as an operator copies the cluster's admin key to a new node.
    """
    if not store or store == "local":
        return
    for other in servers:
        key_file = other.data_dir / "admin.key"
        if getattr(other, "store", None) == store and key_file.exists():
            data_dir.mkdir(parents=True, exist_ok=True)
            target = data_dir / "admin.key"
            if not target.exists():
                shutil.copyfile(key_file, target)
                target.chmod(0o600)
            return


@pytest.fixture
def start_server(request, tmp_path, pg_store):
    """Return a function that starts a server: start_server(data_dir=None, tls=False, **flags).

    Flags are written in Python form (max_retries=0 becomes --max-retries 0). Without
    data_dir each call gets its own directory under tmp_path. tls=True makes a test CA (one
    per test) and a server certificate for 127.0.0.1 signed by it, and passes them as
    --tls-cert and --tls-key unless tls_cert is given; server.ca is the CA.
    """
    servers = []
    cas = []

    def start(data_dir=None, tls=False, **flags):
        if data_dir is None:
            data_dir = tmp_path / f"data{len(servers)}"
        ca = None
        if tls:
            if not cas:
                cas.append(TestCA(tmp_path / "tls"))
            ca = cas[0]
            if "tls_cert" not in flags:
                cert, key = ca.issue(f"server{len(servers)}")
                flags = {"tls_cert": cert, "tls_key": key, **flags}
        if pg_store and "store" not in flags:
            flags["store"] = pg_store
        share_admin_key(servers, flags.get("store"), Path(data_dir))
        server = Server(data_dir, flag_args(flags), ca)
        server.store = flags.get("store")
        servers.append(server)
        return server.start()

    yield start

    failures = []
    for server in servers:
        if server.proc is None or server.killed and not server.running:
            continue
        status = server.stop()
        if status != 0:
            failures.append(f"server on {server.data_dir}: exit status {status} after SIGTERM, "
                            f"expected 0\n{server.log_tail()}")
    call_report = getattr(request.node, "report_call", None)
    if call_report is not None and call_report.failed:
        for server in servers:
            print(f"--- server log ({server.data_dir}) ---\n{server.log_tail(60)}")
    if failures:
        pytest.fail("\n".join(failures))


@pytest.fixture
def server(start_server):
    """A server with the default flags."""
    return start_server()


@pytest.fixture
def api(server):
    """A keep-alive client of the default server."""
    return server.api()
