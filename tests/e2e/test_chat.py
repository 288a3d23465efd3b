"""Delta Chat users chatting through local relays: onboarding, Secure-Join,
1:1 and group chats, attachments, read receipts, chatmail features, the
milter's refusals and rate limit as a client meets them, and two relays.

Every wait logs the events it skips; pytest prints them (and the fixtures
print the relay logs) when a test fails.
"""

import hashlib
import json
import logging
import queue
import random
import re
import smtplib
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from deltachat_rpc_client import EventType
from deltachat_rpc_client._utils import AttrDict

from conftest import configure
from plain_client import unverified_tls

log = logging.getLogger(__name__)

TIMEOUT = 120


def next_event(account, timeout):
    """The account's next event, or None after `timeout` seconds without one
    (the client's own wait_for_event would block for good)."""
    try:
        return AttrDict(account._rpc.get_queue(account.id).get(timeout=max(0.01, timeout)))
    except queue.Empty:
        return None


def wait_for(account, what, matches, timeout=TIMEOUT):
    """Waits for an event for which `matches(event)` is true and returns it,
    logging every other event on the way."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        event = next_event(account, deadline - time.monotonic())
        if event is None:
            break
        if matches(event):
            return event
        level = logging.WARNING if event.kind in (EventType.ERROR, EventType.WARNING) else logging.INFO
        log.log(level, "%s (%s) while waiting for %s: %s", account.addr, event.kind, what, event.get("msg", event))
    pytest.fail(f"{account.addr}: no {what} within {timeout}s")


def wait_for_text(account, text, timeout=TIMEOUT):
    """Waits until `account` receives a message with `text`; returns its snapshot."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        event = wait_for(account, f"message {text!r}", lambda e: e.kind == EventType.INCOMING_MSG, max(0.01, deadline - time.monotonic()))
        snapshot = account.get_message_by_id(event.msg_id).get_snapshot()
        if snapshot.text == text:
            return snapshot
        log.info("%s got %r while waiting for %r", account.addr, snapshot.text, text)
    pytest.fail(f"{account.addr}: {text!r} did not arrive within {timeout}s")


def secure_join(joiner, inviter):
    """`joiner` scans `inviter`'s QR code; returns joiner's verified 1:1 chat."""
    chat = joiner.secure_join(inviter.get_qr_code())
    wait_for(joiner, "Secure-Join to complete", lambda e: e.kind == EventType.SECUREJOIN_JOINER_PROGRESS and e.progress == 1000)
    return chat


def inbox_files(relay, addr):
    """Messages in `addr`'s INBOX on the relay (maildir new/ and cur/)."""
    root = Path(relay.info["run_dir"]) / "mailboxes" / addr
    return [f for sub in ("new", "cur") if (root / sub).exists() for f in (root / sub).iterdir()]


def test_onboarding_with_new_creates_a_working_account(relay, dc):
    """`POST /new` hands out fresh credentials; Delta Chat logs in with them
    (the relay creates the account on that first login)."""
    url = f"https://127.0.0.1:{relay.info['https_port']}/new"
    with urllib.request.urlopen(urllib.request.Request(url, method="POST"), context=unverified_tls(), timeout=30) as reply:
        credentials = json.loads(reply.read())
    addr, password = credentials["email"], credentials["password"]
    assert addr.endswith("@" + relay.info["domain"]), credentials
    # The relay's own dclogin link, with the new address and password.
    template = relay.info["accounts"][0]["dclogin"]
    query = template.split("?", 1)[1]
    params = [(k, v) for k, v in urllib.parse.parse_qsl(query) if k != "p"]
    dclogin = f"dclogin:{addr}?" + urllib.parse.urlencode([("p", password)] + params)
    account = configure(dc, {"addr": addr, "dclogin": dclogin})
    assert account.is_configured()
    assert (Path(relay.info["run_dir"]) / "mailboxes" / addr / "password").exists()


@pytest.mark.relay_params(max_message_size=4194304)
def test_secure_join_then_both_ways_with_a_large_attachment_and_read_receipts(relay, configured_account, tmp_path):
    alice = configured_account()
    bob = configured_account()
    chat = secure_join(alice, bob)
    chat.send_text("hello bob")
    got = wait_for_text(bob, "hello bob")
    assert got.show_padlock, "arrived unencrypted"
    assert got.sender.get_snapshot().address == alice.addr

    bob_chat = bob.get_chat_by_id(got.chat_id)
    bob_chat.send_text("hello alice")
    reply = wait_for_text(alice, "hello alice")
    assert reply.show_padlock

    # Read receipt: bob reads alice's message, alice's core learns it.
    bob.mark_seen_messages([bob.get_message_by_id(got.id)])
    wait_for(alice, "read receipt", lambda e: e.kind == EventType.MSG_READ)

    # An attachment whose message (base64 twice: MIME, then ASCII armor)
    # comes near max_message_size (4 MiB).
    # Random bytes: the client compresses before encrypting.
    payload = random.Random(7).randbytes(2_600_000)
    path = tmp_path / "payload.bin"
    path.write_bytes(payload)
    chat.send_message(text="the file", file=str(path))
    # Core 2.x announces a large attachment with a small pre-message and
    # fills in the file when the full message has arrived.
    event = wait_for(bob, "the file's pre-message", lambda e: e.kind == EventType.INCOMING_MSG)
    deadline = time.monotonic() + TIMEOUT
    while True:
        received = bob.get_message_by_id(event.msg_id).get_snapshot()
        if received.file and Path(received.file).exists() and Path(received.file).stat().st_size == len(payload):
            break
        assert time.monotonic() < deadline, f"the attachment did not arrive: {received}"
        next_event(bob, 1)
    assert received.text == "the file" and received.show_padlock, received
    assert hashlib.sha256(Path(received.file).read_bytes()).hexdigest() == hashlib.sha256(payload).hexdigest()
    sizes = [int(m) for m in re.findall(r"from=<%s>, size=(\d+)" % re.escape(alice.addr), relay.log("postfix.log"))]
    assert max(sizes) > 0.8 * 4194304, f"largest message from alice: {max(sizes)} bytes"


def test_group_of_three_and_a_member_leaves(relay, configured_account):
    alice = configured_account()
    bob = configured_account()
    carol = configured_account()
    group = alice.create_group("three")
    qr = group.get_qr_code()
    for member in (bob, carol):
        member.secure_join(qr)
        wait_for(member, "joining the group", lambda e: e.kind == EventType.SECUREJOIN_JOINER_PROGRESS and e.progress == 1000)
    group.send_text("hello group")
    bob_msg = wait_for_text(bob, "hello group")
    carol_msg = wait_for_text(carol, "hello group")
    bob_group = bob.get_chat_by_id(bob_msg.chat_id)
    carol_group = carol.get_chat_by_id(carol_msg.chat_id)
    assert bob_group.num_contacts() == 3 and carol_group.num_contacts() == 3
    assert bob_msg.show_padlock and carol_msg.show_padlock

    carol_group.send_text("bye")
    wait_for_text(bob, "bye")
    carol_group.leave()
    deadline = time.monotonic() + TIMEOUT
    # Both sides are polled until the overall deadline (a quiet 10 s on one
    # of them while the other catches up is not a failure).
    while bob_group.num_contacts() != 2 or group.num_contacts() != 2:
        assert time.monotonic() < deadline, (
            f"carol's leaving did not reach both: alice's group has {group.num_contacts()}, bob's {bob_group.num_contacts()} members"
        )
        next_event(bob, 0.25)
        next_event(alice, 0.25)
    group.send_text("without carol")
    wait_for_text(bob, "without carol")


def test_relay_is_chatmail_and_the_client_shows_quota(relay, configured_account):
    alice = configured_account()
    bob = configured_account()
    # Recognised as chatmail (IMAP capability XCHATMAIL), the core deletes
    # what it fetched from the server at once: nothing is left in bob's INBOX.
    secure_join(alice, bob).send_text("fetch and delete")
    wait_for_text(bob, "fetch and delete")
    deadline = time.monotonic() + TIMEOUT
    while inbox_files(relay, bob.addr):
        assert time.monotonic() < deadline, f"still on the server: {inbox_files(relay, bob.addr)}"
        time.sleep(0.5)
    # The connectivity view shows the storage quota once the core fetched it
    # (IMAP GETQUOTAROOT): chatmail's 100 MiB default.
    deadline = time.monotonic() + TIMEOUT
    while True:
        html = alice._rpc.get_connectivity_html(alice.id)
        if "100 MiB" in html or "104857600" in html:
            break
        assert time.monotonic() < deadline, html
        time.sleep(1)


def test_cleartext_from_a_plain_smtp_client_gets_523(relay):
    # Delta Chat mail passes (the other tests); a plain client's cleartext does not.
    account = relay.take_account()
    message = f"From: <{account['addr']}>\r\nTo: <{account['addr']}>\r\nSubject: plain\r\n\r\nhello\r\n"
    with smtplib.SMTP("127.0.0.1", relay.info["submission_port"], timeout=30) as smtp:
        smtp.starttls(context=unverified_tls())
        smtp.login(account["addr"], account["password"])
        with pytest.raises(smtplib.SMTPDataError) as refused:
            smtp.sendmail(account["addr"], [account["addr"]], message)
    assert refused.value.smtp_code == 523
    assert b"Encryption Needed" in refused.value.smtp_error


def test_send_rate_burst_then_450_and_the_client_retries(relay, configured_account):
    """chatmail's limits (burst 10, then 60 per minute): a quick series of 14
    gets 450 after the burst; Delta Chat retries and every message arrives."""
    alice = configured_account()
    bob = configured_account()
    chat = secure_join(alice, bob)
    texts = [f"burst {n}" for n in range(14)]
    for text in texts:
        chat.send_text(text)
    seen = set()
    deadline = time.monotonic() + 240
    while seen != set(texts):
        event = wait_for(bob, "the burst", lambda e: e.kind == EventType.INCOMING_MSG, max(1, deadline - time.monotonic()))
        seen.add(bob.get_message_by_id(event.msg_id).get_snapshot().text)
    # The first refusal came only after a full burst of 10 from alice.
    lines = [line for line in relay.log("milter.log").splitlines() if f"from=<{alice.addr}>" in line]
    first_refusal = next((i for i, line in enumerate(lines) if "decision=ratelimit" in line), None)
    assert first_refusal is not None, "\n".join(lines)
    assert sum("decision=accept" in line for line in lines[:first_refusal]) >= 10, "\n".join(lines)
    assert re.search(r"450 4\.7\.1 .*Too much mail from", relay.log("postfix.log")), "no 450 in the Postfix log"


def test_two_relays_chat_encrypted(relay_pair, account_on):
    relay1, relay2 = relay_pair
    alice = account_on(relay1)
    bob = account_on(relay2)
    chat = secure_join(alice, bob)
    chat.send_text("from relay1")
    got = wait_for_text(bob, "from relay1")
    assert got.show_padlock
    bob.get_chat_by_id(got.chat_id).send_text("from relay2")
    assert wait_for_text(alice, "from relay2").show_padlock
    # Each relay signed what it sent and checked what it received.
    assert "dkim-pass:relay1.test" in relay2.log("milter.log"), relay2.log("milter.log")
    assert "dkim-pass:relay2.test" in relay1.log("milter.log"), relay1.log("milter.log")
