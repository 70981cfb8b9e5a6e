"""Fixtures for the integration tests: each test starts its own `inferq serve` processes on
ephemeral ports with a fresh data dir, and every process must exit 0 on SIGTERM at the end.

INFERQ_BIN names the binary (tests/run.sh sets it); the default is build/inferq in the repository.
"""

import pytest

from support import Server
from tls_support import TestCA


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


@pytest.fixture
def start_server(request, tmp_path):
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
        server = Server(data_dir, flag_args(flags), ca)
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
