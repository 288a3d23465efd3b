#!/bin/sh
# Builds the Debian packages into target/debian/ (Debian 12, as root or not):
#   packaging/build-debs.sh
# Needs cargo-deb (`cargo install --locked cargo-deb@3.8.0`) and dovecot-dev
# (for the Dovecot ABI the plugin is built against).
set -eu
cd "$(dirname "$0")/.."

out=target/debian
abi_file=/usr/share/dovecot/dovecot-abi
[ -r "$abi_file" ] || { echo "build-debs: $abi_file missing: install dovecot-dev" >&2; exit 1; }
abi=$(cat "$abi_file")

cargo build --release --workspace --locked
rm -rf "$out"
mkdir -p "$out"
for crate in chatmail-milter chatmail-dovecot-plugin chatmail-bot-sandbox chatmail-accounts; do
    cargo deb --no-build -p "$crate" -o "$out/"
done

# The plugin only loads into the Dovecot it was built for: depend on that
# ABI (the virtual package Debian's dovecot-core provides).
deb=$(ls "$out"/dovecot-chatmail_*.deb)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dpkg-deb -R "$deb" "$work/pkg"
sed -i "s/^Depends: \(.*\)$/Depends: \1, dovecot-abi-$abi/" "$work/pkg/DEBIAN/control"
dpkg-deb --root-owner-group -b "$work/pkg" "$deb" >/dev/null
echo "build-debs: packages in $out:" >&2
ls -1 "$out"
