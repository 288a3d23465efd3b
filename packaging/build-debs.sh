#!/bin/sh
# Builds the Debian packages for one Debian release:
#   packaging/build-debs.sh            the host's release
#   packaging/build-debs.sh trixie     Debian 13 (Dovecot 2.4), into target/debs/trixie/
#   packaging/build-debs.sh bookworm   Debian 12 (Dovecot 2.3), into target/debs/bookworm/
# Only dovecot-chatmail differs between releases (the plugin is built against
# that release's Dovecot headers and depends on its ABI); the other packages'
# programs are built once, on the host (Debian 12's glibc, so they run on
# both). Needs cargo-deb (`cargo install --locked cargo-deb@3.8.0`); for the
# host's release dovecot-dev, for the other one network access to the Debian
# mirror (its dovecot-dev is downloaded and unpacked, not installed).
set -eu
cd "$(dirname "$0")/.."

host_release=$(. /etc/os-release && echo "$VERSION_CODENAME")
release=${1:-$host_release}
mirror=$(sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)
mirror=${mirror:-http://deb.debian.org/debian}

case "$release" in
bookworm) out=target/debs/bookworm; variant=""; revision=1; dovecot_target=target ;;
trixie) out=target/debs/trixie; variant=trixie; revision=1+deb13; dovecot_target=target/dovecot-2.4 ;;
*) echo "build-debs: unknown release $release (bookworm or trixie)" >&2; exit 2 ;;
esac

# The Dovecot headers and ABI of the release: the host's dovecot-dev, or the
# release's dovecot-dev unpacked into a cache directory.
if [ "$release" = "$host_release" ]; then
    include=/usr/include/dovecot
    abi_file=/usr/share/dovecot/dovecot-abi
    [ -r "$abi_file" ] || { echo "build-debs: $abi_file missing: install dovecot-dev" >&2; exit 1; }
else
    cache=${CHATMAIL_DEV_CACHE:-/var/tmp/chatmail-dovecot-dev}/$release
    if [ ! -r "$cache/root/usr/share/dovecot/dovecot-abi" ]; then
        echo "build-debs: fetching $release's dovecot-dev from $mirror" >&2
        rm -rf "$cache"
        mkdir -p "$cache/lists/partial" "$cache/archives/partial" "$cache/root"
        printf 'deb %s %s main\ndeb %s %s-updates main\n' "$mirror" "$release" "$mirror" "$release" > "$cache/sources.list"
        apt_opts="-o Dir::Etc::SourceList=$cache/sources.list -o Dir::Etc::SourceParts=/dev/null
            -o Dir::State::Lists=$cache/lists -o Dir::Cache::Archives=$cache/archives -o APT::Get::List-Cleanup=0"
        # shellcheck disable=SC2086 # apt_opts is a list of words
        apt-get -q $apt_opts update >"$cache/apt.log" 2>&1 || { echo "build-debs: apt-get update for $release failed (log: $cache/apt.log)" >&2; exit 1; }
        # shellcheck disable=SC2086
        (cd "$cache" && apt-get -q $apt_opts download dovecot-dev) >>"$cache/apt.log" 2>&1 \
            || { echo "build-debs: downloading $release's dovecot-dev failed (log: $cache/apt.log)" >&2; exit 1; }
        dpkg-deb -x "$cache"/dovecot-dev_*.deb "$cache/root"
    fi
    include=$cache/root/usr/include/dovecot
    abi_file=$cache/root/usr/share/dovecot/dovecot-abi
fi
abi=$(cat "$abi_file")

cargo build --release --workspace --locked
if [ "$dovecot_target" != target ]; then
    # The plugin for the other release's Dovecot, in a target directory of
    # its own (the host's build stays as it is).
    DOVECOT_INCLUDE=$include cargo build --release --locked -p chatmail-dovecot-plugin --target-dir "$dovecot_target"
    # Where the trixie variant of dovecot-chatmail takes it from.
    mkdir -p target/release/dovecot-2.4
    cp "$dovecot_target"/release/libchatmail_dovecot_plugin.so "$dovecot_target"/release/libchatmail_settings.so target/release/dovecot-2.4/
fi
rm -rf "$out"
mkdir -p "$out"
for crate in chatmail-milter chatmail-dovecot-plugin chatmail-bot-sandbox chatmail-accounts; do
    if [ "$crate" = chatmail-dovecot-plugin ] && [ -n "$variant" ]; then
        cargo deb --no-build -p "$crate" --variant "$variant" --deb-revision "$revision" -o "$out/"
    else
        cargo deb --no-build -p "$crate" --deb-revision "$revision" -o "$out/"
    fi
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# rewrite PACKAGE SED-SCRIPT: edits the package's control file.
rewrite() {
    deb=$(ls "$out/$1"_*.deb)
    rm -rf "$work/pkg"
    dpkg-deb -R "$deb" "$work/pkg"
    sed -i "$2" "$work/pkg/DEBIAN/control"
    dpkg-deb --root-owner-group -b "$work/pkg" "$deb" >/dev/null
}
# The plugin only loads into the Dovecot it was built for: depend on that
# ABI (the virtual package Debian's dovecot-core provides).
rewrite dovecot-chatmail "s/^Depends: \(.*\)$/Depends: \1, dovecot-abi-$abi/"
# chatmail-relay depends on exactly its siblings (Cargo.toml says revision 1).
if [ "$revision" != 1 ]; then
    rewrite chatmail-relay "/^Depends:/s/(= \([^)]*\)-1)/(= \1-$revision)/g"
fi
echo "build-debs: packages for $release (Dovecot ABI $abi) in $out:" >&2
ls -1 "$out"
