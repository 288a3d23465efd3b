"""Sends an encrypted (RFC 3156 shaped) message A→B through an installed
chatmail relay on 127.0.0.1 and checks B's INBOX over IMAP; also checks
that cleartext is refused with 523. Used by packaging/test-install.sh.

Usage: python3 send-encrypted.py DOMAIN
"""

import imaplib
import subprocess
import secrets
import smtplib
import string
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "e2e"))
from plain_client import encrypted_message, unverified_tls  # noqa: E402


def account(domain):
    name = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(9))
    return f"{name}@{domain}", secrets.token_urlsafe(12)


def main():
    domain = sys.argv[1]
    (alice, alice_pw), (bob, bob_pw) = account(domain), account(domain)
    for addr, pw in ((alice, alice_pw), (bob, bob_pw)):
        imap = imaplib.IMAP4_SSL("127.0.0.1", 993, ssl_context=unverified_tls())
        imap.login(addr, pw)  # the first login creates the account
        if addr == bob:
            register_push_token(imap)
            if "--turn" in sys.argv:
                check_turn(imap)
        imap.logout()
    subject = "pkg-" + secrets.token_hex(4)
    # Bob waits in IMAP IDLE, as Delta Chat does: the plugin's instant
    # wake-up tells him of each message at once (Dovecot alone: 0.5 s later).
    idle = IdleSession(bob, bob_pw)
    waits = []
    with smtplib.SMTP("127.0.0.1", 587, timeout=30) as smtp:
        smtp.starttls(context=unverified_tls())
        smtp.login(alice, alice_pw)
        for n in range(1, 4):
            smtp.sendmail(alice, [bob], encrypted_message(alice, bob, subject if n == 1 else f"{subject}-{n}"))
            sent = time.monotonic()
            idle.wait_exists(n)
            waits.append(time.monotonic() - sent)
        try:
            smtp.sendmail(alice, [bob], f"From: <{alice}>\r\nTo: <{bob}>\r\nSubject: plain\r\n\r\nhi\r\n")
            sys.exit("cleartext was accepted")
        except smtplib.SMTPDataError as refused:
            assert refused.smtp_code == 523, refused
    idle.done()
    if min(waits) >= 0.4:
        sys.exit(f"IDLE heard of new mail only after {[round(w, 3) for w in waits]} s: no instant wake-up")
    imap = imaplib.IMAP4_SSL("127.0.0.1", 993, ssl_context=unverified_tls())
    imap.login(bob, bob_pw)
    imap.select("INBOX")
    typ, data = imap.search(None, "ALL")
    assert len(data[0].split()) == 3, data
    typ, msg = imap.fetch(data[0].split()[0], "(RFC822)")
    raw = msg[0][1].decode(errors="replace")
    assert subject in raw, raw[:2000]
    assert "DKIM-Signature:" in raw and f"d={domain}" in raw, raw[:2000]
    if "--limits" in sys.argv:
        check_limits(alice, alice_pw, bob, sys.argv[sys.argv.index("--limits") + 1])
    print(f"ok: {alice} -> {bob}: delivered, DKIM-signed, IDLE woken after "
          f"{', '.join(f'{w * 1000:.0f}' for w in waits)} ms; cleartext refused with 523")


def register_push_token(imap):
    """As Delta Chat does on a relay that offers XDELTAPUSH: the device
    token goes to the INBOX's /private/devicetoken (chatmail-metadata)."""
    typ, caps = imap.capability()
    assert b"XDELTAPUSH" in caps[0].split() and b"METADATA" in caps[0].split(), caps
    for name in ("SETMETADATA", "GETMETADATA"):
        imaplib.Commands.setdefault(name, ("AUTH", "SELECTED"))
    typ, data = imap._simple_command("SETMETADATA", "INBOX", '(/private/devicetoken "openpgp:package-test")')
    assert typ == "OK", (typ, data)
    typ, data = imap._simple_command("GETMETADATA", '""', "(/shared/vendor/deltachat/maxsmtprecipients)")
    # The value may come as a literal: imaplib then gives (line, data) tuples.
    answer = repr(imap.untagged_responses.get("METADATA"))
    assert typ == "OK" and "maxsmtprecipients" in answer and "1000" in answer, (typ, answer)


def check_limits(alice, alice_pw, bob, lmtp_socket):
    """chatmail.ini's max_message_size = 2M and max_mailbox_size = 5 (a plain
    number: megabytes, as chatmail means it) reach Postfix and Dovecot."""
    big = "X" * 76 + "\r\n"
    with smtplib.SMTP("127.0.0.1", 587, timeout=60) as smtp:
        smtp.starttls(context=unverified_tls())
        smtp.login(alice, alice_pw)
        message = encrypted_message(alice, bob, "too big") + big * (3 * 1024 * 1024 // len(big))
        try:
            smtp.sendmail(alice, [bob], message)
            sys.exit("a 3 MB message passed max_message_size = 2M")
        except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as refused:
            assert refused.smtp_code == 552, refused
    # Dovecot's quota, over the LMTP socket Postfix uses: 1.9 MB mails fit
    # twice into 5 MB; the third is refused with 552 and the rendered
    # quota_exceeded_message.
    codes = []
    answers = []
    body = big * (1900 * 1024 // len(big))
    for n in range(3):
        lmtp = smtplib.LMTP(lmtp_socket)
        lmtp.ehlo_or_helo_if_needed()
        message = f"From: <{alice}>\r\nTo: <{bob}>\r\nSubject: fill {n}\r\n\r\n{body}"
        try:
            lmtp.sendmail(alice, [bob], message)
            codes.append(250)
        except smtplib.SMTPRecipientsRefused as refused:
            codes.append(refused.recipients[bob][0])
            answers.append(refused.recipients[bob][1])
        except smtplib.SMTPDataError as refused:
            codes.append(refused.smtp_code)
            answers.append(refused.smtp_error)
        lmtp.quit()
    assert codes == [250, 250, 552], f"mailbox fill answered {codes}, expected 250, 250, 552"
    assert b"Mailbox full (quota of 5 MiB exceeded)" in answers[-1], answers


def check_turn(imap):
    """The TURN credentials the relay hands out (server metadata, as Delta
    Chat reads them) get an allocation from the installed coturn; wrong
    ones do not."""
    imaplib.Commands.setdefault("GETMETADATA", ("AUTH", "SELECTED"))
    imap.untagged_responses.pop("METADATA", None)
    typ, data = imap._simple_command("GETMETADATA", '""', "(/shared/vendor/deltachat/turn)")
    assert typ == "OK", (typ, data)
    value = None
    for part in imap.untagged_responses.get("METADATA", []):
        if isinstance(part, tuple) and b"/turn" in part[0]:
            value = part[1]  # a literal
        elif isinstance(part, bytes) and b"/turn" in part and part.count(b'"') >= 4:
            value = part.split(b'"')[-2]  # a quoted string
    assert value, imap.untagged_responses
    host, port, username, password = value.decode().split(":", 3)
    assert (host, port) == ("127.0.0.1", "3478"), value
    for attempt, (user, secret) in enumerate([(username, password), (username, password[:-2] + "xx")]):
        # Loopback peers are refused by the relay's coturn settings (403 at
        # channel bind): what counts here is that the allocation succeeds.
        out = subprocess.run(["turnutils_uclient", "-u", user, "-w", secret, "-p", port, "-n", "1", "-m", "1",
                              "-e", "127.0.0.1", host], capture_output=True, text=True, timeout=60)
        allocated = "Cannot complete Allocation" not in out.stdout + out.stderr
        assert allocated == (attempt == 0), (attempt, out.stdout[-2000:], out.stderr[-2000:])


class IdleSession:
    """An IMAP session in IDLE (RFC 2177) on INBOX; imaplib of Python 3.11
    has no IDLE, so it speaks it on imaplib's connection."""

    def __init__(self, user, password):
        self.imap = imaplib.IMAP4_SSL("127.0.0.1", 993, ssl_context=unverified_tls())
        self.imap.login(user, password)
        self.imap.select("INBOX")
        self.tag = self.imap._new_tag()
        self.imap.send(self.tag + b" IDLE\r\n")
        line = self.imap.readline()
        assert line.startswith(b"+"), line
        self.imap.sock.settimeout(30)

    def wait_exists(self, count):
        """Reads untagged responses until `* count EXISTS`."""
        while True:
            line = self.imap.readline()
            if not line:
                sys.exit("IMAP connection closed during IDLE")
            if line.strip() == f"* {count} EXISTS".encode():
                return

    def done(self):
        self.imap.send(b"DONE\r\n")
        while not self.imap.readline().startswith(self.tag):
            pass
        self.imap.logout()

if __name__ == "__main__":
    main()
