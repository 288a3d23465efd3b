"""Fixtures for end-to-end tests with real Delta Chat core.

A relay is the same local relay `make run` starts: the harness binary
`chatmail-local-relay`, on free ports, in its own scratch directory. The
binary path comes from CHATMAIL_LOCAL_RELAY (set by the Makefile) or the
workspace's debug build.
"""

import json
import os
import shutil
import signal
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


class LocalRelay:
    """A running chatmail-local-relay process and its relay.json."""

    def __init__(self, accounts=4):
        # Unix socket paths are short; pytest's tmp_path can be too deep.
        self.run_dir = Path(tempfile.mkdtemp(prefix="chatmail-e2e-", dir="/tmp"))
        self.run_dir.chmod(0o755)
        env = dict(os.environ, CHATMAIL_RUN_DIR=str(self.run_dir), CHATMAIL_TEST_ACCOUNTS=str(accounts))
        for name in ("SMTP", "SUBMISSION", "SMTPS", "IMAP", "IMAPS"):
            env[f"CHATMAIL_{name}_PORT"] = "0"
        self.output = open(self.run_dir / "harness.out", "w")
        self.process = subprocess.Popen(
            [relay_binary()], env=env, stdout=self.output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
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

    def logs(self):
        parts = [f"===== harness output =====\n{self.harness_output()}"]
        log_dir = Path(self.info["log_dir"]) if hasattr(self, "info") else self.run_dir / "log"
        for name in ("dovecot.log", "postfix.log"):
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


@pytest.fixture
def relay(request):
    local_relay = LocalRelay()
    yield local_relay
    local_relay.stop()
    failed = any(getattr(request.node, f"report_{when}", None) and getattr(request.node, f"report_{when}").failed
                 for when in ("setup", "call"))
    if failed:
        print(f"\nrelay logs ({local_relay.run_dir}):\n{local_relay.logs()}")
    else:
        shutil.rmtree(local_relay.run_dir, ignore_errors=True)


@pytest.fixture
def dc(tmp_path, request):
    # The server comes from the same virtualenv as the client (pinned together).
    server = Path(sys.executable).parent / "deltachat-rpc-server"
    if not server.exists():
        server = shutil.which("deltachat-rpc-server") or "deltachat-rpc-server"
    rpc = Rpc(accounts_dir=str(tmp_path / "accounts"), rpc_server_path=str(server))
    with rpc:
        yield DeltaChat(rpc)


@pytest.fixture
def configured_account(dc, relay):
    """Returns a factory: each call configures a new Delta Chat account on the relay."""

    def make():
        credentials = relay.take_account()
        account = dc.add_account()
        account.add_transport_from_qr(credentials["dclogin"])
        account.set_config("displayname", credentials["addr"].split("@")[0])
        account.start_io()
        # Core 2.x no longer answers get_config("addr") for multi-transport
        # accounts; keep the address the test relay gave out.
        account.addr = credentials["addr"]
        return account

    return make
