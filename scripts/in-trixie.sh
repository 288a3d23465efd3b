#!/bin/sh
# scripts/in-trixie.sh PROGRAM [ARGS...]
# Runs a program of this tree against Debian 13's Dovecot 2.4 and Postfix
# 3.10: inside a debootstrap'd Debian 13 root (cached in $CHATMAIL_TRIXIE_ROOT,
# default /var/tmp/chatmail-trixie-run) with Dovecot, Postfix and Lua
# installed. PROGRAM is a benchmark or a test binary of target/release or
# target/debug, e.g.
#   scripts/in-trixie.sh target/release/chatmail-bench-auth
#   scripts/in-trixie.sh target/debug/deps/quota-0a6b4644a5b8b142
# The programs of the same profile and the plugin built for Dovecot 2.4
# (built here if missing, against trixie's dovecot-dev as
# packaging/build-debs.sh fetches it) go beside it; BENCH_* and RUST_*
# variables are passed on. Needs root, debootstrap and the Debian mirror.
# Ends only what it started (the programs end their own relays; the mounts
# are undone on exit).
set -eu
cd "$(dirname "$0")/.."

program=${1:?usage: scripts/in-trixie.sh PROGRAM [ARGS...]}
shift
case "$program" in
target/release/*) profile=release ;;
target/debug/*) profile=debug ;;
*) echo "in-trixie: PROGRAM must be in target/release or target/debug" >&2; exit 2 ;;
esac
base=${CHATMAIL_TRIXIE_ROOT:-/var/tmp/chatmail-trixie-run}
root=$base/root
mirror=$(sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)
mirror=${mirror:-http://deb.debian.org/debian}
log() { echo "in-trixie: $*" >&2; }

# The plugin for Dovecot 2.4, built against trixie's headers.
plugin_dir=target/dovecot-2.4/$profile
headers=${CHATMAIL_DEV_CACHE:-/var/tmp/chatmail-dovecot-dev}/trixie/root/usr/include/dovecot
if [ ! -f "$headers/config.h" ]; then
    log "fetching trixie's dovecot-dev (packaging/build-debs.sh trixie)"
    packaging/build-debs.sh trixie >/dev/null
fi
flag=""
[ "$profile" = release ] && flag=--release
# shellcheck disable=SC2086 # $flag is empty or one word
DOVECOT_INCLUDE=$headers cargo build $flag --locked -q -p chatmail-dovecot-plugin --target-dir target/dovecot-2.4

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
mkdir -p "$root/opt/chatmail/deps"
for f in target/$profile/chatmail-*; do
    if [ -f "$f" ] && [ -x "$f" ]; then
        cp "$f" "$root/opt/chatmail/"
    fi
done
cp "$program" "$root/opt/chatmail/deps/"
cp "$plugin_dir/libchatmail_dovecot_plugin.so" packaging/dovecot/chatmail-auth.lua "$root/opt/chatmail/"
install -D -m 0644 "$plugin_dir/libchatmail_settings.so" "$root/usr/lib/dovecot/modules/settings/libchatmail_settings.so"

passed=$(env | grep -E '^(BENCH|RUST)_[A-Z_]*=' || true)
log "$(basename "$program") on Dovecot $(chroot "$root" dovecot --version | cut -d' ' -f1) in $root"
# shellcheck disable=SC2086 # the NAME=VALUE words of $passed
chroot "$root" env $passed CHATMAIL_DOVECOT_PLUGIN=/opt/chatmail/libchatmail_dovecot_plugin.so \
    CHATMAIL_AUTH_LUA=/opt/chatmail/chatmail-auth.lua "/opt/chatmail/deps/$(basename "$program")" "$@"
