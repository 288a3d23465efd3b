"""Real Delta Chat core against a local relay."""

import logging
from pathlib import Path

from deltachat_rpc_client import EventType

log = logging.getLogger(__name__)


def wait_for_event(account, kind, what):
    """Waits for an event of `kind`, logging the others (pytest shows them on failure)."""
    while True:
        event = account.wait_for_event()
        if event.kind == kind:
            return event
        if event.kind in (EventType.ERROR, EventType.WARNING):
            log.warning("%s while waiting for %s: %s", event.kind, what, event.msg)
        elif event.kind == EventType.INFO:
            log.info("%s", event.msg)


def test_account_configures_with_dclogin(relay, configured_account):
    account = configured_account()
    assert account.is_configured()
    settings = account.get_info()["used_transport_settings"]
    # Implicit TLS to both servers, as the dclogin link asks.
    assert f"imap:[127.0.0.1:{relay.info['imaps_port']}:tls]" in settings, settings
    assert f"smtp:[127.0.0.1:{relay.info['smtps_port']}:tls]" in settings, settings


def test_message_between_two_accounts_arrives(relay, configured_account):
    alice = configured_account()
    bob = configured_account()

    # Secure-Join gives the two an encrypted, verified chat, as in real use.
    qr = bob.get_qr_code()
    chat = alice.secure_join(qr)
    alice.wait_for_securejoin_joiner_success()
    chat.send_text("hello from alice over the local relay")

    while True:
        message = bob.wait_for_incoming_msg().get_snapshot()
        if message.text == "hello from alice over the local relay":
            break
        log.info("bob got another message first: %r", message.text)
    assert message.show_padlock, "message arrived unencrypted"
    assert message.sender.get_snapshot().address == alice.addr


def test_delta_chat_mail_passes_the_milter_unrefused(relay, configured_account):
    """Secure-Join and chat messages from real Delta Chat are all accepted
    by the milter (none refused and retried)."""
    alice = configured_account()
    bob = configured_account()
    chat = alice.secure_join(bob.get_qr_code())
    alice.wait_for_securejoin_joiner_success()
    chat.send_text("checked by the milter")
    while bob.wait_for_incoming_msg().get_snapshot().text != "checked by the milter":
        pass
    log = (Path(relay.info["log_dir"]) / "milter.log").read_text()
    decisions = [line for line in log.splitlines() if "decision=" in line]
    assert decisions, log
    assert not [line for line in decisions if "decision=accept" not in line], log
    # (Delta Chat 2.x encrypts even the first Secure-Join message, with a
    # key from the QR code, so no cleartext exception is needed here.)
    assert any("reason=encrypted" in line for line in decisions), log
