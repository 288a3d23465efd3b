"""Sends an encrypted (RFC 3156 shaped) message A→B through an installed
chatmail relay on 127.0.0.1 and checks B's INBOX over IMAP; also checks
that cleartext is refused with 523. Used by packaging/test-install.sh.

Usage: python3 send-encrypted.py DOMAIN
"""

import imaplib
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
        imap.logout()
    subject = "pkg-" + secrets.token_hex(4)
    with smtplib.SMTP("127.0.0.1", 587, timeout=30) as smtp:
        smtp.starttls(context=unverified_tls())
        smtp.login(alice, alice_pw)
        smtp.sendmail(alice, [bob], encrypted_message(alice, bob, subject))
        try:
            smtp.sendmail(alice, [bob], f"From: <{alice}>\r\nTo: <{bob}>\r\nSubject: plain\r\n\r\nhi\r\n")
            sys.exit("cleartext was accepted")
        except smtplib.SMTPDataError as refused:
            assert refused.smtp_code == 523, refused
    imap = imaplib.IMAP4_SSL("127.0.0.1", 993, ssl_context=unverified_tls())
    imap.login(bob, bob_pw)
    deadline = time.monotonic() + 30
    while True:
        imap.select("INBOX")
        typ, data = imap.search(None, "ALL")
        if data[0]:
            typ, msg = imap.fetch(data[0].split()[0], "(RFC822)")
            raw = msg[0][1].decode(errors="replace")
            assert subject in raw, raw[:2000]
            assert "DKIM-Signature:" in raw and f"d={domain}" in raw, raw[:2000]
            print(f"ok: {alice} -> {bob}: delivered, DKIM-signed; cleartext refused with 523")
            return
        if time.monotonic() > deadline:
            sys.exit(f"message did not reach {bob}")
        time.sleep(0.5)


if __name__ == "__main__":
    main()
