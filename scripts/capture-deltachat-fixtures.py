#!/usr/bin/env python3
"""Captures messages real Delta Chat core sends, as milter test fixtures.

Starts a local relay with CHATMAIL_CAPTURE=1 (Postfix copies every accepted
message to a mailbox no client reads), lets two and then three Delta Chat
accounts do Secure-Join, chat 1:1 and in a group, send an attachment, and
writes the captured messages to milter/tests/fixtures/deltachat/.

Run from the repository root after `make test` has built everything:
    .venv/bin/python scripts/capture-deltachat-fixtures.py
"""

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))

from conftest import LocalRelay  # noqa: E402
from deltachat_rpc_client import DeltaChat, Rpc  # noqa: E402

OUT = REPO / "milter" / "tests" / "fixtures" / "deltachat"


def configured(dc, relay):
    credentials = relay.take_account()
    account = dc.add_account()
    account.add_transport_from_qr(credentials["dclogin"])
    account.start_io()
    account.addr = credentials["addr"]
    return account


def wait_text(account, text):
    while account.wait_for_incoming_msg().get_snapshot().text != text:
        pass


def main():
    os.environ["CHATMAIL_CAPTURE"] = "1"
    relay = LocalRelay(accounts=3)
    accounts_dir = tempfile.mkdtemp(prefix="dc-capture-")
    server = Path(sys.executable).parent / "deltachat-rpc-server"
    try:
        with Rpc(accounts_dir=accounts_dir, rpc_server_path=str(server)) as rpc:
            dc = DeltaChat(rpc)
            alice, bob, carol = (configured(dc, relay) for _ in range(3))
            chat = alice.secure_join(bob.get_qr_code())
            alice.wait_for_securejoin_joiner_success()
            chat.send_text("hello bob")
            wait_text(bob, "hello bob")
            attachment = Path(accounts_dir) / "notes.txt"
            attachment.write_text("an attachment\n" * 50)
            chat.send_message(text="with a file", file=str(attachment))
            wait_text(bob, "with a file")

            group = alice.create_group("capture group")
            carol_chat = carol.secure_join(alice.get_qr_code())
            carol.wait_for_securejoin_joiner_success()
            carol_chat.send_text("hi alice")
            wait_text(alice, "hi alice")
            for member in (bob, carol):
                group.add_contact(alice.get_contact_by_addr(relay_addr(member)))
            group.send_text("hello group")
            wait_text(bob, "hello group")
            time.sleep(2)
        captured = sorted(
            p for sub in ("new", "cur") for p in (Path(relay.info["capture_maildir"]) / sub).glob("*") if p.is_file()
        )
        OUT.mkdir(parents=True, exist_ok=True)
        for old in OUT.glob("*.eml"):
            old.unlink()
        for index, path in enumerate(captured, 1):
            shutil.copy(path, OUT / f"{index:02d}.eml")
        print(f"captured {len(captured)} messages into {OUT}")
    finally:
        relay.stop()
        shutil.rmtree(accounts_dir, ignore_errors=True)


def relay_addr(account):
    return account.addr


if __name__ == "__main__":
    main()
