"""Delta Chat core against the relay's server metadata (chatmail-metadata):
core reads the TURN server and its time-limited credentials over IMAP
METADATA, and a real coturn (Debian's, `use-auth-secret` with the relay's
secret) grants an allocation with exactly those credentials.

Push device tokens are not registered from here: core 2.65's JSON-RPC has
no call that sets a push token (only the mobile apps' FFI does), so the
token path is tested with raw IMAP in tests/tests/push.rs.
"""

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import LocalRelay, _finish, _stop_with_parent, configure, free_port

TURN_SECRET = "e2e-turn-secret-0123456789abcdef"


@pytest.fixture
def coturn(tmp_path):
    """A coturn on loopback that checks credentials against TURN_SECRET; its port."""
    binary = shutil.which("turnserver")
    assert binary, "coturn is not installed (scripts/setup-host.sh installs it)"
    port = free_port()
    log = open(tmp_path / "turnserver.log", "w")
    process = subprocess.Popen(
        [binary, "-n", "--listening-ip=127.0.0.1", f"--listening-port={port}", "--use-auth-secret",
         f"--static-auth-secret={TURN_SECRET}", "--realm=chatmail.test", "--no-tls", "--no-dtls", "--no-cli",
         "--allow-loopback-peers", "--log-file=stdout", "--simple-log",
         f"--pidfile={tmp_path / 'turnserver.pid'}", f"--userdb={tmp_path / 'turndb'}"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=_stop_with_parent,
    )
    deadline = time.monotonic() + 20
    while "listener opened" not in (tmp_path / "turnserver.log").read_text(errors="replace").lower() \
            and "total general servers" not in (tmp_path / "turnserver.log").read_text(errors="replace").lower():
        assert process.poll() is None, (tmp_path / "turnserver.log").read_text(errors="replace")
        assert time.monotonic() < deadline, "coturn did not start"
        time.sleep(0.1)
    yield port
    process.terminate()
    process.wait(timeout=10)
    log.close()


def allocate(port, username, password):
    """turnutils_uclient: one allocation and a few relayed packets; its exit code and output."""
    result = subprocess.run(
        ["turnutils_uclient", "-u", username, "-w", password, "-p", str(port), "-n", "1", "-m", "1", "-y", "127.0.0.1"],
        capture_output=True, text=True, timeout=60,
    )
    return result.returncode, result.stdout + result.stderr


def test_core_gets_turn_credentials_that_coturn_accepts(coturn, dc, tmp_path, request):
    # chatmail-metadata runs as the mail user: pytest's tmp_path is not its to read.
    secret_dir = Path(tempfile.mkdtemp(prefix="chatmail-turn-", dir="/tmp"))
    secret_dir.chmod(0o755)
    secret_file = secret_dir / "turn-secret"
    secret_file.write_text(TURN_SECRET + "\n")
    secret_file.chmod(0o644)
    relay = LocalRelay(params={"turn_server": f"127.0.0.1:{coturn}", "turn_secret_file": str(secret_file)})
    try:
        account = configure(dc, relay.take_account())
        # Core reads the metadata when its IMAP connection comes up.
        deadline = time.monotonic() + 60
        while True:
            servers = account.ice_servers()
            ours = [s for s in servers if any(f"127.0.0.1:{coturn}" in url for url in s.get("urls", []))]
            if ours:
                break
            assert time.monotonic() < deadline, f"core never took the relay's TURN server: {servers}"
            time.sleep(0.5)
        turn = ours[0]
        assert any(url.startswith("turn:") for url in turn["urls"]), turn
        username, password = turn["username"], turn["credential"]
        assert int(username) > time.time() + 4 * 86400, turn
        code, output = allocate(coturn, username, password)
        assert code == 0, output
        # The check is real: a wrong password gets no allocation.
        code, output = allocate(coturn, username, password[:-2] + "xx")
        assert code != 0, output
    finally:
        _finish(request, [relay])
        shutil.rmtree(secret_dir, ignore_errors=True)
