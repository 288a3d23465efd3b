"""Bots speak Delta Chat: a user scans a bot's invite link, Secure-Join is
answered by the relay for the bot, and the bot's replies arrive encrypted
and signed, in 1:1 and group chats. Mail that is not encrypted to the bot
and signed by its sender never runs the bot; actions outside the allowed
set are refused; the per-contact send limit holds.
"""

import imaplib
import re
import smtplib
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from deltachat_rpc_client import EventType

from conftest import relay_binary
from plain_client import encrypted_message, unverified_tls
from test_chat import TIMEOUT, next_event, wait_for, wait_for_text

BOTS = Path(__file__).resolve().parents[2] / "bots"
ECHO = BOTS / "echo"


def install_bot(relay, credentials, tmp_path, toml=None, bot=ECHO, code="bot.wasm"):
    """Installs a bot (the echo bot unless told) for `credentials`' account
    the way its owner would (a package mail stored in the DeltaBot folder)
    and returns the invite link from the install report."""
    addr = credentials["addr"]
    password = credentials["password"]
    toml_path = bot / "bot.toml"
    if toml is not None:
        toml_path = tmp_path / "bot.toml"
        toml_path.write_text(toml)
    binary = Path(relay_binary()).parent / "chatmail-bots"
    package = subprocess.run([str(binary), "package", addr, str(bot / code), str(toml_path)], capture_output=True, check=True).stdout
    with imaplib.IMAP4_SSL("127.0.0.1", relay.info["imaps_port"], ssl_context=unverified_tls()) as imap:
        imap.login(addr, password)
        imap.create("DeltaBot")
        imap.append("DeltaBot", None, None, package)
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            imap.select("INBOX")
            _, found = imap.search(None, '(SUBJECT "Bot installed")')
            if found[0]:
                _, data = imap.fetch(found[0].split()[-1], "(BODY[TEXT])")
                report = data[0][1].decode("utf-8", errors="replace")
                link = re.search(r"https://i\.delta\.chat/#\S+", report)
                assert link, report
                return link.group(0)
            time.sleep(0.2)
    pytest.fail(f"no install report for {addr}:\n{relay.log('bots.log')}")


def join_bot(account, link):
    """`account` scans the bot's invite link; returns its 1:1 chat with the bot."""
    chat = account.secure_join(link)
    wait_for(account, "Secure-Join with the bot", lambda e: e.kind == EventType.SECUREJOIN_JOINER_PROGRESS and e.progress == 1000)
    return chat


def wait_for_log(relay, name, pattern, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = relay.log(name)
        if re.search(pattern, text):
            return text
        time.sleep(0.2)
    pytest.fail(f"{pattern!r} not in {name} within {timeout}s:\n{relay.log(name)}")


def test_a_user_joins_the_echo_bot_and_chats_with_it_encrypted(relay, configured_account, tmp_path):
    bot = relay.take_account()
    link = install_bot(relay, bot, tmp_path)
    assert bot["addr"].replace("@", "%40") in link, link
    alice = configured_account()
    chat = join_bot(alice, link)
    chat.send_text("hello")
    reply = wait_for_text(alice, "echo: hello")
    assert reply.chat_id == chat.id, "the reply lands in the 1:1 chat with the bot"
    assert reply.show_padlock, "encrypted and signed by the bot's key"
    assert reply.sender.get_snapshot().address == bot["addr"]
    log = relay.log("bots.log")
    # Secure-Join v3 (the link offers v=3): the request for the bot's key
    # came encrypted with the invite's secret, then the usual auth step.
    assert "&v=3&" in link, link
    assert re.search(r"op=securejoin .*step=vc-request-pubkey result=answered", log), log
    assert not re.search(r"step=vc-request result=", log), "no legacy cleartext request"
    assert re.search(r"op=securejoin .*step=vc-request-with-auth result=answered verified=yes", log), log
    assert re.search(r"op=action .*action=reply result=done", log), log

    # A group with the bot: its replies go to the group, to every member.
    bob = configured_account()
    bob.secure_join(alice.get_qr_code())
    joined = wait_for(alice, "bob's Secure-Join", lambda e: e.kind == EventType.SECUREJOIN_INVITER_PROGRESS and e.progress == 1000)
    group = alice.create_group("Bot group")
    group.add_contact(chat.get_contacts()[0])
    group.add_contact(alice.get_contact_by_id(joined.contact_id))
    group.send_text("hi group")
    for member in (alice, bob):
        reply = wait_for_text(member, "echo: hi group")
        assert reply.show_padlock
        assert member.get_chat_by_id(reply.chat_id).get_basic_snapshot().name == "Bot group"


def test_mail_the_bot_cannot_verify_does_not_run_it(relay, configured_account, tmp_path):
    bot = relay.take_account()
    install_bot(relay, bot, tmp_path)
    sender = relay.take_account()
    # Shaped like encrypted mail (the milter passes it), but not to the
    # bot's key: the gate keeps it from the bot.
    with smtplib.SMTP_SSL("127.0.0.1", relay.info["smtps_port"], context=unverified_tls()) as smtp:
        smtp.login(sender["addr"], sender["password"])
        smtp.sendmail(sender["addr"], [bot["addr"]], encrypted_message(sender["addr"], bot["addr"], "forged"))
    log = wait_for_log(relay, "bots.log", r"op=gate .*result=refused reason=undecryptable")
    assert "result=ran" not in log, log


def test_actions_outside_the_set_are_refused_and_the_send_limit_holds(relay, configured_account, tmp_path):
    bot = relay.take_account()
    toml = (ECHO / "bot.toml").read_text().replace("bytes_per_hour", "sends_per_hour = 2\nbytes_per_hour")
    link = install_bot(relay, bot, tmp_path, toml=toml)
    alice = configured_account()
    # Without v=3 core runs the legacy protocol (a cleartext vc-request),
    # as clients before Secure-Join v3 do: the bot answers that too.
    chat = join_bot(alice, link.replace("&v=3", ""))
    wait_for_log(relay, "bots.log", r"op=securejoin .*step=vc-request result=answered")
    chat.send_text('/raw {"action":"forward","to":"everyone@example.org"}')
    wait_for_log(relay, "bots.log", r"op=action .*result=refused reason=.*not an action this relay allows")
    chat.send_text("one")
    wait_for_text(alice, "echo: one")
    chat.send_text("two")
    wait_for_text(alice, "echo: two")
    chat.send_text("three")
    wait_for_log(relay, "bots.log", r"op=action .*action=reply result=refused reason=.*send-limit")
    # Nothing more arrives.
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        event = next_event(alice, deadline - time.monotonic())
        if event is not None and event.kind == EventType.INCOMING_MSG:
            assert alice.get_message_by_id(event.msg_id).get_snapshot().text != "echo: three"


def test_the_bot_adds_only_a_contact_who_wrote_to_it_to_a_group(relay, configured_account, tmp_path):
    bot = relay.take_account()
    link = install_bot(relay, bot, tmp_path)
    # Alice wrote to the bot directly: she consented to hear from it.
    alice = configured_account()
    join_bot(alice, link).send_text("hello")
    wait_for_text(alice, "echo: hello")
    carol = configured_account()  # never wrote to the bot

    bob = configured_account()
    bob_chat = join_bot(bob, link)
    group = bob.create_group("Bot group")
    group.add_contact(bob_chat.get_contacts()[0])
    group.send_text("hi group")
    wait_for_text(bob, "echo: hi group")  # the bot accepted the group

    group.send_text(f'/raw {{"action":"add-member","contact":"{carol.addr}"}}')
    wait_for_log(relay, "bots.log", r"op=action .*action=add-member result=refused reason=.*no.consent")

    group.send_text(f'/raw {{"action":"add-member","contact":"{alice.addr}"}}')
    wait_for_log(relay, "bots.log", r"op=action .*action=add-member result=done")
    # Alice is now in the group, with a padlock, and Bob sees her as a member.
    event = wait_for(alice, "the group", lambda e: e.kind == EventType.INCOMING_MSG and alice.get_chat_by_id(e.chat_id).get_basic_snapshot().name == "Bot group")
    assert alice.get_message_by_id(event.msg_id).get_snapshot().show_padlock
    alice_group = alice.get_chat_by_id(event.chat_id)
    members = {c.get_snapshot().address for c in alice_group.get_contacts()}
    assert {bob.addr, bot["addr"]} <= members, members
    deadline = time.monotonic() + TIMEOUT
    while alice.addr not in {c.get_snapshot().address for c in group.get_contacts()}:
        assert time.monotonic() < deadline, "bob's group never listed alice"
        next_event(bob, 0.5)
    # Alice can write to the group; Bob gets it.
    alice_group.send_text("thanks for adding me")
    wait_for_text(bob, "thanks for adding me")


def test_the_bot_deletes_its_message_and_answers_webxdc_updates(relay, configured_account, tmp_path):
    bot = relay.take_account()
    link = install_bot(relay, bot, tmp_path)
    alice = configured_account()
    chat = join_bot(alice, link)
    chat.send_text("hello")
    reply = wait_for_text(alice, "echo: hello")

    # `/delete`, quoting the bot's message: the bot deletes it for everyone.
    chat.send_message(text="/delete", quoted_msg=reply.id)
    wait_for_log(relay, "bots.log", r"op=action .*action=delete result=done")
    echoed = alice.get_message_by_id(reply.id)
    deadline = time.monotonic() + TIMEOUT
    while echoed.exists():
        assert time.monotonic() < deadline, "the bot's message was not deleted on alice's side"
        next_event(alice, 0.5)

    # A webxdc app in the chat: the bot answers each status update with one
    # that carries it back, to the same app instance.
    xdc = tmp_path / "app.xdc"
    with zipfile.ZipFile(xdc, "w") as archive:
        archive.writestr("index.html", "<!doctype html><title>app</title>")
        archive.writestr("manifest.toml", 'name = "Echo app"\n')
    app = chat.send_message(text="an app", file=str(xdc))
    wait_for_text(alice, "echo: an app")
    app.send_webxdc_status_update({"payload": {"ping": 1}}, "ping")
    wait_for_log(relay, "bots.log", r"op=action .*action=webxdc-update result=done")
    deadline = time.monotonic() + TIMEOUT
    while True:
        payloads = [u["payload"] for u in app.get_webxdc_status_updates(0)]
        if any(isinstance(p, dict) and "echo" in p for p in payloads):
            break
        assert time.monotonic() < deadline, f"no update from the bot: {payloads}"
        next_event(alice, 0.5)
    echo = next(p["echo"] for p in payloads if isinstance(p, dict) and "echo" in p)
    assert {"ping": 1} in [u.get("payload") for u in echo["updates"]], echo


def test_a_javascript_bot_answers_and_keeps_state(relay, configured_account, tmp_path):
    """bot.js instead of bot.wasm: the relay's JavaScript engine runs it in
    the same sandbox; the echo answers like the Rust one, the counter's
    storage survives between runs."""
    echo = relay.take_account()
    # As a hobbyist would, from their own computer: bots/install-bot.py
    # stores the package over IMAP and prints the install report.
    installed = subprocess.run(
        [sys.executable, str(BOTS / "install-bot.py"), echo["addr"], echo["password"], str(BOTS / "js-echo" / "bot.js"),
         str(BOTS / "js-echo" / "bot.toml"), "--host", "127.0.0.1", "--port", str(relay.info["imaps_port"]), "--insecure"],
        capture_output=True, text=True, timeout=TIMEOUT + 30)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert "Bot installed" in installed.stdout and "Script (bot.js" in installed.stdout, installed.stdout
    link = re.search(r"https://i\.delta\.chat/#\S+", installed.stdout).group(0)
    alice = configured_account()
    chat = join_bot(alice, link)
    chat.send_text("hello from js")
    reply = wait_for_text(alice, "echo: hello from js")
    assert reply.chat_id == chat.id
    assert reply.show_padlock, "encrypted and signed by the bot's key"
    assert re.search(r"op=install .*result=installed .*script_bytes=", relay.log("bots.log"))

    counter = relay.take_account()
    link = install_bot(relay, counter, tmp_path, bot=BOTS / "js-counter", code="bot.js")
    chat = join_bot(alice, link)
    chat.send_text("one")
    wait_for_text(alice, "message number 1")
    chat.send_text("two")
    wait_for_text(alice, "message number 2")
