#!/usr/bin/env python3
"""Installs a bot on a chatmail-rs relay from your own computer.

    python3 install-bot.py ADDRESS PASSWORD bot.js bot.toml
    python3 install-bot.py ADDRESS PASSWORD bot.wasm bot.toml

ADDRESS and PASSWORD are the bot account's (the relay must allow it to run
bots). The script builds the package mail (the code and bot.toml as
attachments), stores it in the account's `DeltaBot` folder over IMAP (TLS,
port 993 of the address's domain unless --host/--port say otherwise), then
waits for the relay's install report and prints it: the invite link to
scan in Delta Chat, or the problems to fix (a syntax error with its line,
for instance). Storing a new package updates the bot; nothing else is
needed. Only Python's standard library is used.
"""

import argparse
import email.message
import email.policy
import imaplib
import ssl
import sys
import time
from pathlib import Path

FOLDER = "DeltaBot"


def package(address, code_path, toml_path):
    message = email.message.EmailMessage()
    message["From"] = address
    message["To"] = address
    message["Subject"] = "bot package"
    message.set_content("Bot package.\n")
    toml = Path(toml_path).read_text(encoding="utf-8")
    message.add_attachment(toml.encode("utf-8"), maintype="application", subtype="toml", filename="bot.toml")
    code = Path(code_path).read_bytes()
    if code_path.endswith(".js"):
        try:
            code.decode("utf-8")
        except UnicodeDecodeError:
            sys.exit(f"{code_path} is not UTF-8 text")
        message.add_attachment(code, maintype="text", subtype="javascript", filename="bot.js")
    else:
        message.add_attachment(code, maintype="application", subtype="wasm", filename="bot.wasm")
    return message.as_bytes()


def newest_report(imap, since):
    imap.select("INBOX")
    _, found = imap.search(None, '(OR SUBJECT "Bot installed" SUBJECT "Bot not installed")')
    for number in reversed(found[0].split()):
        _, data = imap.fetch(number, "(INTERNALDATE BODY.PEEK[])")
        stamp = imaplib.Internaldate2tuple(data[0][0])
        if stamp and time.mktime(stamp) >= since - 5:
            return email.message_from_bytes(data[0][1], policy=email.policy.default)
    return None


def main():
    parser = argparse.ArgumentParser(description="Install a bot on a chatmail-rs relay.")
    parser.add_argument("address")
    parser.add_argument("password")
    parser.add_argument("code", help="bot.js or bot.wasm")
    parser.add_argument("toml", help="bot.toml")
    parser.add_argument("--host", help="IMAP server (default: the address's domain)")
    parser.add_argument("--port", type=int, default=993)
    parser.add_argument("--insecure", action="store_true", help="do not check the TLS certificate (test relays)")
    parser.add_argument("--wait", type=int, default=60, help="seconds to wait for the install report")
    args = parser.parse_args()
    if not (args.code.endswith(".js") or args.code.endswith(".wasm")):
        sys.exit("the code must be a .js or a .wasm file")
    host = args.host or args.address.rsplit("@", 1)[-1]
    context = ssl.create_default_context()
    if args.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    mail = package(args.address, args.code, args.toml)
    started = time.time()
    with imaplib.IMAP4_SSL(host, args.port, ssl_context=context) as imap:
        imap.login(args.address, args.password)
        imap.create(FOLDER)  # fails harmlessly when it exists
        status, answer = imap.append(FOLDER, None, None, mail)
        if status != "OK":
            sys.exit(f"storing the package failed: {answer}")
        print(f"package stored in {FOLDER}; waiting for the relay's install report ...")
        deadline = started + args.wait
        while time.time() < deadline:
            report = newest_report(imap, started)
            if report is not None:
                body = report.get_body(preferencelist=("plain",))
                text = body.get_content() if body else ""
                print(f"{report['Subject']}\n\n{text}")
                return 0 if report["Subject"].startswith("Bot installed") else 1
            time.sleep(1)
    sys.exit(f"no install report within {args.wait} s: are bots enabled for {args.address} on this relay?")


if __name__ == "__main__":
    sys.exit(main())
