#!/bin/sh
# scripts/test-trixie.sh: the end-to-end suites that exercise Dovecot (the
# plugin, accounts, quota, expiry, IMAP IDLE, push and METADATA) once more
# against Debian 13's Dovecot 2.4.1 and Postfix 3.10, inside a debootstrap'd
# Debian 13 root (scripts/in-trixie.sh). Part of `make test`; the host's run
# of the same suites covers Dovecot 2.3.
set -eu
cd "$(dirname "$0")/.."

suites="accounts expire idle plugin push quota"
# The test binaries as cargo built them (their names carry a hash).
binaries=$(cargo test --locked -p chatmail-testrelay --no-run 2>&1 | sed -n 's/^ *Executable tests\/\([a-z_]*\)\.rs (\(.*\))$/\1 \2/p')
failed=""
for suite in $suites; do
    binary=$(echo "$binaries" | awk -v s="$suite" '$1 == s { print $2 }')
    [ -n "$binary" ] || { echo "test-trixie: no test binary for $suite" >&2; exit 1; }
    echo "test-trixie: $suite on Dovecot 2.4" >&2
    scripts/in-trixie.sh "$binary" || failed="$failed $suite"
done
if [ -n "$failed" ]; then
    echo "test-trixie: FAILED on Dovecot 2.4:$failed" >&2
    exit 1
fi
echo "test-trixie: ok" >&2
