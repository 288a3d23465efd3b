"""Benchmark: Delta Chat core against a local relay, as chatmail's own
benchmark measures it — account setup, ping-pong round trip, send 10 /
receive 10 — p50 over repeated runs on one relay, each next to a baseline
measured in the same run: the same mail path driven by a minimal client
(smtplib for submission, IMAP polled every 10 ms), so the ratio shows what
the client's work (keys, encryption, IMAP IDLE) adds to the relay's path.

Run (after `make build venv`):
  .venv/bin/python tests/e2e/bench_deltachat.py
Environment: BENCH_ROUNDS (default 10), BENCH_PING_PONG_PAUSE (seconds
before each ping-pong round, default 1.5).
"""

import imaplib
import os
import smtplib
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import LocalRelay, configure  # noqa: E402
from plain_client import encrypted_message, unverified_tls  # noqa: E402
from deltachat_rpc_client import DeltaChat, EventType, Rpc  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "10"))
PING_PONG_PAUSE = float(os.environ.get("BENCH_PING_PONG_PAUSE", "1.5"))


class RawClient:
    """One account driven over plain SMTP submission and IMAP."""

    def __init__(self, relay, credentials):
        self.addr, self.password = credentials["addr"], credentials["password"]
        self.relay = relay
        self.smtp = smtplib.SMTP("127.0.0.1", relay.info["submission_port"], timeout=30)
        self.smtp.starttls(context=unverified_tls())
        self.smtp.login(self.addr, self.password)
        self.imap = imaplib.IMAP4_SSL("127.0.0.1", relay.info["imaps_port"], ssl_context=unverified_tls())
        self.imap.login(self.addr, self.password)
        self.imap.select("INBOX")

    def send(self, to, subject):
        self.smtp.sendmail(self.addr, [to], encrypted_message(self.addr, to, subject))

    def wait_for(self, count):
        """Polls until INBOX holds `count` messages, then empties it."""
        while True:
            self.imap.noop()
            typ, data = self.imap.search(None, "ALL")
            if len(data[0].split()) >= count:
                self.imap.store("1:*", "+FLAGS", "\\Deleted")
                self.imap.expunge()
                return
            time.sleep(0.01)

    def close(self):
        self.smtp.quit()
        self.imap.logout()


def wait_text(account, text):
    while True:
        event = account.wait_for_event()
        if event.kind == EventType.INCOMING_MSG and account.get_message_by_id(event.msg_id).get_snapshot().text == text:
            return


def p50(samples):
    return statistics.median(samples)


def main():
    relay = LocalRelay(accounts=2 * ROUNDS + 8)
    try:
        server = Path(sys.executable).parent / "deltachat-rpc-server"
        with Rpc(accounts_dir=str(Path(relay.run_dir) / "dc-accounts"), rpc_server_path=str(server)) as rpc:
            dc = DeltaChat(rpc)
            results = []

            # Account setup: Delta Chat configuring from a dclogin link (the
            # relay creates the account on its first login) vs a raw first
            # IMAP and SMTP login of another fresh account.
            setup, setup_raw = [], []
            for _ in range(ROUNDS):
                start = time.monotonic()
                configure(dc, relay.take_account()).stop_io()
                setup.append(time.monotonic() - start)
                start = time.monotonic()
                RawClient(relay, relay.take_account()).close()
                setup_raw.append(time.monotonic() - start)
            results.append(("account setup", p50(setup), p50(setup_raw)))

            alice = configure(dc, relay.take_account())
            bob = configure(dc, relay.take_account())
            chat = alice.secure_join(bob.get_qr_code())
            alice.wait_for_securejoin_joiner_success()
            bob_chat = None
            raw_a = RawClient(relay, relay.take_account())
            raw_b = RawClient(relay, relay.take_account())

            # Ping-pong: A sends, B answers on arrival, A receives the answer.
            # A pause before each round, as between the messages of a chat:
            # back to back, core's own send rate limit (about one message a
            # second once its burst is spent) would set the pace, not the relay.
            rtt, rtt_raw = [], []
            for n in range(ROUNDS):
                time.sleep(PING_PONG_PAUSE)
                start = time.monotonic()
                chat.send_text(f"ping {n}")
                wait_text(bob, f"ping {n}")
                if bob_chat is None:
                    bob_chat = bob.get_chat_by_contact(bob.get_contact_by_addr(alice.addr))
                bob_chat.send_text(f"pong {n}")
                wait_text(alice, f"pong {n}")
                rtt.append(time.monotonic() - start)
                start = time.monotonic()
                raw_a.send(raw_b.addr, f"ping-{n}-{uuid.uuid4().hex[:6]}")
                raw_b.wait_for(1)
                raw_b.send(raw_a.addr, f"pong-{n}-{uuid.uuid4().hex[:6]}")
                raw_a.wait_for(1)
                rtt_raw.append(time.monotonic() - start)
            results.append(("ping-pong round trip", p50(rtt), p50(rtt_raw)))

            # Send 10, receive 10: from the first send until the tenth arrived.
            # Each burst starts with the sender's send-rate burst (10) refilled.
            time.sleep(12)
            burst, burst_raw = [], []
            for n in range(max(3, ROUNDS // 3)):
                start = time.monotonic()
                for i in range(10):
                    chat.send_text(f"burst {n}.{i}")
                received = 0
                while received < 10:
                    event = bob.wait_for_event()
                    if event.kind == EventType.INCOMING_MSG:
                        received += 1
                burst.append(time.monotonic() - start)
                start = time.monotonic()
                for i in range(10):
                    raw_a.send(raw_b.addr, f"burst-{n}-{i}-{uuid.uuid4().hex[:6]}")
                raw_b.wait_for(10)
                burst_raw.append(time.monotonic() - start)
                # Stay inside the send-rate burst (10) of the next round.
                time.sleep(12)
            results.append(("send 10 / receive 10", p50(burst), p50(burst_raw)))
            raw_a.close()
            raw_b.close()

        print(f"{'measure':<24} {'Delta Chat p50 s':>16} {'raw client p50 s':>16} {'ratio':>7}")
        for name, dc_p50, raw_p50 in results:
            print(f"{name:<24} {dc_p50:>16.3f} {raw_p50:>16.3f} {dc_p50 / raw_p50:>7.2f}")
        print(f"rounds: {ROUNDS}; ratio = Delta Chat / raw client (same relay, same run)")
    finally:
        relay.stop()


if __name__ == "__main__":
    main()
