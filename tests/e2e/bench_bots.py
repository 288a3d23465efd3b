"""Benchmark: a Delta Chat user writes to the echo bot and waits for its
reply — p50/p99 of the round trip over BENCH_MESSAGES messages, and where
the time goes, from the bot daemon's own log lines of the same messages:

  sandbox    the worker run (process start, module load, the bot itself): wall_us
  crypto     the gate (decrypt, verify) + composing the reply (sign, encrypt): gate_us + compose_us
  mail path  the rest: Delta Chat core, submission, milter, Postfix, LMTP,
             the Dovecot plugin's spool job, the daemon's pickup, IMAP IDLE

Baseline in the same run: the same user pings a second Delta Chat account
that answers by hand (a client, no bot): the round trip without the bot host.

Run (after `make build venv`):
  .venv/bin/python tests/e2e/bench_bots.py
Environment: BENCH_MESSAGES (default 50).
"""

import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import LocalRelay, configure  # noqa: E402
from deltachat_rpc_client import DeltaChat, EventType, Rpc  # noqa: E402
from test_bots import install_bot, join_bot  # noqa: E402

MESSAGES = int(os.environ.get("BENCH_MESSAGES", "50"))


def wait_incoming(account, text, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        event = account.wait_for_event()
        if event.kind == EventType.INCOMING_MSG and account.get_message_by_id(event.msg_id).get_snapshot().text == text:
            return
    raise RuntimeError(f"{account.addr}: {text!r} did not arrive")


def timed(send, receiver, expected):
    """Seconds from each of MESSAGES sends until `receiver` has the text
    `expected.format(i)`, one message at a time."""
    times = []
    for i in range(MESSAGES):
        started = time.monotonic()
        send(i)
        wait_incoming(receiver, expected.format(i))
        times.append(time.monotonic() - started)
    return times


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def main():
    # Sends one at a time, but 2 × MESSAGES of them: the per-sender rate
    # limit (60/min) is raised so it does not pace the measurement.
    relay = LocalRelay(accounts=4, params={"max_user_send_per_minute": "6000"})
    try:
        server = Path(sys.executable).parent / "deltachat-rpc-server"
        with tempfile.TemporaryDirectory() as tmp, Rpc(accounts_dir=str(Path(tmp) / "accounts"), rpc_server_path=str(server)) as rpc:
            dc = DeltaChat(rpc)
            link = install_bot(relay, relay.take_account(), Path(tmp), toml=(Path(__file__).resolve().parents[2] / "bots" / "echo" / "bot.toml").read_text().replace(
                "mails_per_hour = 60", "mails_per_hour = 1000").replace("mails_per_day = 120", "mails_per_day = 1000").replace("bytes_per_hour", "sends_per_hour = 1000\nbytes_per_hour"))
            alice = configure(dc, relay.take_account())
            chat = join_bot(alice, link)
            bob = configure(dc, relay.take_account())
            bob_chat = bob.secure_join(alice.get_qr_code())
            while True:
                event = bob.wait_for_event()
                if event.kind == EventType.SECUREJOIN_JOINER_PROGRESS and event.progress == 1000:
                    break

            bot_times = timed(lambda i: chat.send_text(f"ping {i}"), alice, "echo: ping {}")
            person_times = timed(lambda i: bob_chat.send_text(f"ping {i}"), alice, "ping {}")

            log = relay.log("bots.log")
            runs = [m for m in re.finditer(r"op=run .*result=ran .*gate_us=(\d+) wall_us=(\d+)", log)]
            sends = [int(m.group(1)) for m in re.finditer(r"op=submit .*result=sent .*compose_us=(\d+) submit_us=\d+", log)]
            sandbox = sum(int(m.group(2)) for m in runs[-MESSAGES:]) / 1e6
            crypto = (sum(int(m.group(1)) for m in runs[-MESSAGES:]) + sum(sends[-MESSAGES:])) / 1e6
            total = sum(bot_times)
            print(f"messages: {MESSAGES} (one at a time)")
            print(f"user -> echo bot -> user:  p50 {statistics.median(bot_times):.3f} s  p99 {percentile(bot_times, 0.99):.3f} s")
            print(f"user -> user (one hop, baseline): p50 {statistics.median(person_times):.3f} s  p99 {percentile(person_times, 0.99):.3f} s")
            print(f"share of the bot round trip: sandbox {100 * sandbox / total:.1f} %, crypto {100 * crypto / total:.1f} %, mail path {100 * (total - sandbox - crypto) / total:.1f} %")
            print(f"per message: sandbox {1000 * sandbox / MESSAGES:.1f} ms, crypto {1000 * crypto / MESSAGES:.1f} ms")
    finally:
        relay.stop()


if __name__ == "__main__":
    main()
