#!/bin/sh
# scripts/bench-in-trixie.sh BENCH [NAME=VALUE ...]
# Runs one of the benchmarks (chatmail-bench-auth, chatmail-bench-plugin, ...)
# against Debian 13's Dovecot 2.4 and Postfix 3.10: inside a debootstrap'd
# Debian 13 root (cached in $CHATMAIL_BENCH_ROOT, default
# /var/tmp/chatmail-bench-trixie) with the release build of this tree and the
# plugin built for Dovecot 2.4 (packaging/build-debs.sh trixie makes both).
# NAME=VALUE pairs are passed to the benchmark (e.g. BENCH_ROUNDS=9).
# Needs root, debootstrap and the Debian mirror. Ends only what it started:
# the benchmark ends its own relays; the mounts are undone on exit.
set -eu
cd "$(dirname "$0")/.."

bench=${1:?usage: scripts/bench-in-trixie.sh chatmail-bench-auth|chatmail-bench-plugin|... [NAME=VALUE ...]}
shift
base=${CHATMAIL_BENCH_ROOT:-/var/tmp/chatmail-bench-trixie}
root=$base/root
mirror=$(sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)
mirror=${mirror:-http://deb.debian.org/debian}
log() { echo "bench-in-trixie: $*" >&2; }

if [ ! -f target/release/dovecot-2.4/libchatmail_settings.so ] || [ ! -x "target/release/$bench" ]; then
    log "building (packaging/build-debs.sh trixie)"
    packaging/build-debs.sh trixie >/dev/null
fi

if [ ! -d "$root" ]; then
    log "debootstrap trixie into $root"
    mkdir -p "$base"
    rm -rf "$root.new"
    debootstrap --variant=minbase trixie "$root.new" "$mirror" >"$base/debootstrap.log" 2>&1 \
        || { log "debootstrap failed (log: $base/debootstrap.log)"; exit 1; }
    printf '#!/bin/sh\nexit 101\n' > "$root.new/usr/sbin/policy-rc.d"
    chmod 755 "$root.new/usr/sbin/policy-rc.d"
    cp /etc/resolv.conf "$root.new/etc/resolv.conf"
    chroot "$root.new" sh -c 'apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        dovecot-imapd dovecot-lmtpd dovecot-auth-lua lua-socket postfix
        addgroup --system --quiet vmail
        adduser --system --quiet --no-create-home --home /nonexistent --ingroup vmail vmail' \
        >"$base/install.log" 2>&1 || { log "installing Dovecot and Postfix failed (log: $base/install.log)"; exit 1; }
    mv "$root.new" "$root"
fi

cleanup() {
    for m in run tmp dev proc; do
        mountpoint -q "$root/$m" && umount -l "$root/$m"
    done
    true
}
trap cleanup EXIT
mount -t proc proc "$root/proc"
mount --bind /dev "$root/dev"
mount -t tmpfs tmpfs "$root/run"
mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"

# This tree's programs, the plugin for Dovecot 2.4 and its settings module
# (Dovecot 2.4 reads that one from its own module directory only).
rm -rf "$root/opt/chatmail"
mkdir -p "$root/opt/chatmail"
for f in target/release/chatmail-*; do
    if [ -f "$f" ] && [ -x "$f" ]; then
        cp "$f" "$root/opt/chatmail/"
    fi
done
cp target/release/dovecot-2.4/libchatmail_dovecot_plugin.so packaging/dovecot/chatmail-auth.lua "$root/opt/chatmail/"
install -D -m 0644 target/release/dovecot-2.4/libchatmail_settings.so "$root/usr/lib/dovecot/modules/settings/libchatmail_settings.so"

log "$bench on $(chroot "$root" dovecot --version | cut -d' ' -f1) in $root"
chroot "$root" env CHATMAIL_DOVECOT_PLUGIN=/opt/chatmail/libchatmail_dovecot_plugin.so \
    CHATMAIL_AUTH_LUA=/opt/chatmail/chatmail-auth.lua "$@" "/opt/chatmail/$bench"
