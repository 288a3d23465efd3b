"""For test clients that are not Delta Chat (plain SMTP/IMAP in the tests,
the benchmark baseline, the package install test): a message shaped like
Delta Chat's encrypted mail, and TLS that accepts the test relays'
self-signed certificates."""

import base64
import ssl


def unverified_tls():
    """A TLS context that accepts any certificate (test relays' are self-signed)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def encrypted_message(sender, recipient, subject):
    """An RFC 3156 message whose OpenPGP packets have the right shape (the
    relay checks structure; nobody decrypts this one)."""
    packets = bytes([0xC1, 60]) + bytes([3] * 60)
    body = b"\x01" + subject.encode() + b"Z" * 200
    packets += bytes([0xD2, 0xFF]) + len(body).to_bytes(4, "big") + body
    encoded = base64.b64encode(packets).decode()
    armor = "\r\n".join(encoded[i:i + 76] for i in range(0, len(encoded), 76))
    return (
        f"From: <{sender}>\r\nTo: <{recipient}>\r\nSubject: [...]\r\nMessage-ID: <{subject}@bench.test>\r\n"
        f"Date: Mon, 23 Nov 2026 08:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n"
        "--B\r\nContent-Type: application/octet-stream\r\n\r\n"
        f"-----BEGIN PGP MESSAGE-----\r\n\r\n{armor}\r\n-----END PGP MESSAGE-----\r\n\r\n--B--\r\n"
    )
