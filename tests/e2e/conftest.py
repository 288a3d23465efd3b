"""Fixtures for end-to-end tests with real Delta Chat core.

A relay is the same local relay `make run` starts: the harness binary
`chatmail-local-relay`, on free ports, in its own scratch directory. The
binary path comes from CHATMAIL_LOCAL_RELAY (set by the Makefile) or the
workspace's debug build.
"""

import ctypes
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from deltachat_rpc_client import DeltaChat, Rpc

REPO = Path(__file__).resolve().parents[2]
RELAY_START_TIMEOUT = 60


def relay_binary():
    path = os.environ.get("CHATMAIL_LOCAL_RELAY") or REPO / "target" / "debug" / "chatmail-local-relay"
    if not Path(path).exists():
        pytest.fail(f"{path} does not exist; build it with `cargo build -p chatmail-testrelay`")
    return str(path)


def _stop_with_parent():
    """In the relay's process, before exec: a SIGTERM when the test process
    dies (PR_SET_PDEATHSIG), so a killed pytest leaves no relay running (the
    relay in turn stops its servers)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalRelay:
    """A running chatmail-local-relay process and its relay.json.

    `params`: extra chatmail.ini [params]; `peers`: {domain: smtp_port} of
    other local relays mail for that domain goes to; `smtp_port`: a fixed
    incoming SMTP port (so a peer can be told it before this relay starts).
    """

    def __init__(self, accounts=4, domain="chatmail.test", params=None, peers=None, smtp_port=0):
        # Unix socket paths are short; pytest's tmp_path can be too deep.
        self.run_dir = Path(tempfile.mkdtemp(prefix="chatmail-e2e-", dir="/tmp"))
        self.run_dir.chmod(0o755)
        env = dict(os.environ, CHATMAIL_RUN_DIR=str(self.run_dir), CHATMAIL_TEST_ACCOUNTS=str(accounts))
        for name in ("SMTP", "SUBMISSION", "SMTPS", "IMAP", "IMAPS", "HTTPS"):
            env[f"CHATMAIL_{name}_PORT"] = "0"
        env["CHATMAIL_SMTP_PORT"] = str(smtp_port)
        env["CHATMAIL_DOMAIN"] = domain
        if params:
            env["CHATMAIL_PARAMS"] = ";".join(f"{k}={v}" for k, v in params.items())
        if peers:
            env["CHATMAIL_PEERS"] = ",".join(f"{d}={p}" for d, p in peers.items())
        self.output = open(self.run_dir / "harness.out", "w")
        self.process = subprocess.Popen(
            [relay_binary()], env=env, stdout=self.output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=_stop_with_parent,
        )
        json_path = self.run_dir / "relay.json"
        deadline = time.monotonic() + RELAY_START_TIMEOUT
        while not json_path.exists():
            if self.process.poll() is not None:
                raise RuntimeError(f"local relay exited early:\n{self.harness_output()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"local relay not ready after {RELAY_START_TIMEOUT}s:\n{self.harness_output()}")
            time.sleep(0.05)
        self.info = json.loads(json_path.read_text())
        self.accounts = list(self.info["accounts"])

    def harness_output(self):
        return (self.run_dir / "harness.out").read_text(errors="replace")

    def take_account(self):
        """Credentials and dclogin link of an unused test account."""
        return self.accounts.pop(0)

    def log(self, name):
        """Text of one of the relay's logs (milter.log, postfix.log, …)."""
        path = Path(self.info["log_dir"]) / name
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self):
        parts = [f"===== harness output =====\n{self.harness_output()}"]
        log_dir = Path(self.info["log_dir"]) if hasattr(self, "info") else self.run_dir / "log"
        for name in ("dovecot.log", "postfix.log", "milter.log", "auth.log", "metadata.log", "bots.log"):
            path = log_dir / name
            text = path.read_text(errors="replace") if path.exists() else "(missing)"
            parts.append(f"===== {path} =====\n{text}")
        return "\n".join(parts)

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.output.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


def _failed(request):
    return any(getattr(request.node, f"report_{when}", None) and getattr(request.node, f"report_{when}").failed
               for when in ("setup", "call"))


def _finish(request, relays):
    for local_relay in relays:
        local_relay.stop()
    for local_relay in relays:
        if _failed(request):
            print(f"\nrelay logs ({local_relay.run_dir}):\n{local_relay.logs()}")
        else:
            shutil.rmtree(local_relay.run_dir, ignore_errors=True)


@pytest.fixture
def relay(request):
    """A relay with default settings, or with `@pytest.mark.relay_params(key=value, …)`."""
    marker = request.node.get_closest_marker("relay_params")
    local_relay = LocalRelay(params=marker.kwargs if marker else None)
    yield local_relay
    _finish(request, [local_relay])


@pytest.fixture
def relay_pair(request):
    """Two relays of different domains that deliver to each other (as MX
    records would make them), each checking the other's DKIM signatures."""
    port1, port2 = free_port(), free_port()
    relay1 = LocalRelay(domain="relay1.test", smtp_port=port1, peers={"relay2.test": port2})
    try:
        relay2 = LocalRelay(domain="relay2.test", smtp_port=port2, peers={"relay1.test": port1})
    except Exception:
        relay1.stop()
        raise
    yield relay1, relay2
    _finish(request, [relay1, relay2])


@pytest.fixture
def dc(tmp_path, request):
    # The server comes from the same virtualenv as the client (pinned together).
    server = Path(sys.executable).parent / "deltachat-rpc-server"
    if not server.exists():
        server = shutil.which("deltachat-rpc-server") or "deltachat-rpc-server"
    rpc = Rpc(accounts_dir=str(tmp_path / "accounts"), rpc_server_path=str(server))
    with rpc:
        yield DeltaChat(rpc)


def configure(dc, credentials):
    """A started Delta Chat account configured from `credentials` (addr, dclogin)."""
    account = dc.add_account()
    account.add_transport_from_qr(credentials["dclogin"])
    account.set_config("displayname", credentials["addr"].split("@")[0])
    account.start_io()
    # Core 2.x no longer answers get_config("addr") for multi-transport
    # accounts; keep the address the test relay gave out.
    account.addr = credentials["addr"]
    return account


@pytest.fixture
def configured_account(dc, relay):
    """Returns a factory: each call configures a new Delta Chat account on the relay."""
    return lambda: configure(dc, relay.take_account())


@pytest.fixture
def account_on(dc):
    """Returns a factory: account_on(relay) configures a new account on `relay`."""
    return lambda local_relay: configure(dc, local_relay.take_account())
