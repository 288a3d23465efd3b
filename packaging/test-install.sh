#!/bin/sh
# packaging/test-install.sh [bookworm|trixie]
# Installs the built packages (target/debs/bookworm/ for Debian 12, or
# target/debs/trixie/ for Debian 13, from packaging/build-debs.sh) into a
# clean root of that release made with debootstrap, the way an operator
# would: a local apt repository, `apt-get install chatmail-relay`. Then,
# without systemd, starts the daemons as their units would, sends encrypted
# messages A→B through the installed relay while B IDLEs (B hears of each
# at once) and sees cleartext refused, checks the bot daemon can reach its
# sockets, checks the host's kernel settings are untouched, reinstalls (an edit
# to chatmail.ini survives), removes (no milter left in main.cf, no chatmail
# service in master.cf, Postfix settings as before) and purges (no files left).
# Also runs lintian (no errors allowed).
#
# Needs root, debootstrap and lintian, and the Debian mirror. The root is
# kept in $CHATMAIL_DEB_ROOT (default /var/tmp/chatmail-deb-root, for trixie
# /var/tmp/chatmail-deb-root-trixie) as a clean copy, so a second run skips
# debootstrap.
set -eu
cd "$(dirname "$0")/.."

release=${1:-bookworm}
case "$release" in
bookworm) debs=target/debs/bookworm; default_base=/var/tmp/chatmail-deb-root ;;
trixie) debs=target/debs/trixie; default_base=/var/tmp/chatmail-deb-root-trixie ;;
*) echo "test-install: unknown release $release (bookworm or trixie)" >&2; exit 2 ;;
esac
base=${CHATMAIL_DEB_ROOT:-$default_base}
root=$base/run
domain=relay.test
mirror=$(sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)
mirror=${mirror:-http://deb.debian.org/debian}

log() { echo "test-install ($release): $*" >&2; }
fail() { log "FAILED: $*"; exit 1; }
in_root() { chroot "$root" sh -c "$1"; }

# Stops what start-relay.sh started, as systemd would before a removal: by
# the process ids it recorded, never by name (that would also end an
# operator's or another test's daemons on this machine).
stop_relay() {
    in_root 'postfix stop; doveadm stop' >/dev/null 2>&1 || true
    pids=""
    for name in chatmail-milter chatmail-auth chatmail-metadata turnserver; do
        pidfile="$root/run/test-install-$name.pid"
        [ -s "$pidfile" ] && pids="$pids $(cat "$pidfile")"
        rm -f "$pidfile"
    done
    [ -n "$pids" ] || return 0
    kill -TERM $pids 2>/dev/null || true
    for _ in $(seq 50); do
        alive=""
        for pid in $pids; do
            kill -0 "$pid" 2>/dev/null && alive="$alive $pid"
        done
        [ -z "$alive" ] && return 0
        sleep 0.2
    done
    kill -KILL $alive 2>/dev/null || true
}

# Stand-ins for another relay's daemons on this machine (a `make run`
# beside `make test`): processes with the daemons' names, outside the root.
# The test must leave them running (checked at the end).
decoys=""
start_decoys() {
    mkdir -p "$base/decoys"
    for name in chatmail-milter chatmail-auth chatmail-metadata chatmail-bots dovecot master; do
        cp /bin/sleep "$base/decoys/$name"
        "$base/decoys/$name" 3600 &
        decoys="$decoys $!"
    done
}
stop_decoys() {
    if [ -n "$decoys" ]; then
        kill $decoys 2>/dev/null || true
    fi
    decoys=""
}

cleanup() {
    stop_relay
    stop_decoys
    for m in run dev proc; do
        mountpoint -q "$root/$m" && umount -l "$root/$m"
    done
    true
}
trap cleanup EXIT
start_decoys

ls "$debs"/chatmail-relay_*.deb >/dev/null 2>&1 || fail "no packages in $debs: run packaging/build-debs.sh $release"

log "lintian"
lintian --fail-on error "$debs"/*.deb || fail "lintian reports errors"

if [ ! -d "$base/clean" ]; then
    log "debootstrap $release from $mirror into $base/clean"
    mkdir -p "$base"
    rm -rf "$base/clean.new"
    debootstrap --variant=minbase "$release" "$base/clean.new" "$mirror" >"$base/debootstrap.log" 2>&1 \
        || fail "debootstrap (log: $base/debootstrap.log)"
    mv "$base/clean.new" "$base/clean"
fi
rm -rf "$root"
cp -a "$base/clean" "$root"
mount -t proc proc "$root/proc"
mount --bind /dev "$root/dev"
mount -t tmpfs tmpfs "$root/run"
cp /etc/resolv.conf "$root/etc/resolv.conf"
# As in a container build: services are started by this script, not by dpkg.
printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"

mkdir -p "$root/srv/repo"
cp "$debs"/*.deb "$root/srv/repo/"
(cd "$root/srv/repo" && dpkg-scanpackages . > Packages 2>/dev/null)
echo 'deb [trusted=yes] file:/srv/repo ./' > "$root/etc/apt/sources.list.d/chatmail.list"

log "apt-get install chatmail-relay"
in_root "apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postfix >/dev/null" || fail "installing postfix"
in_root 'postconf -n' > "$base/main.cf.before"
in_root "echo 'chatmail-relay chatmail-relay/mail_domain string $domain' | debconf-set-selections"
# The chroot shares this machine's kernel: the package must not change its settings.
host_inotify=$(cat /proc/sys/fs/inotify/max_user_instances /proc/sys/fs/inotify/max_user_watches)
in_root 'DEBIAN_FRONTEND=noninteractive apt-get install -y -q chatmail-relay' > "$base/install.log" 2>&1 \
    || fail "apt-get install chatmail-relay (log: $base/install.log)"
in_root 'chatmail-milter dkim-record' | grep -q "opendkim._domainkey.$domain. 3600 IN TXT" || fail "no DKIM record"
# The conf.d snippet must reach both protocols (a global mail_plugins after
# a protocol block would not).
if [ "$release" = bookworm ]; then
    for protocol in imap lmtp; do
        in_root "doveconf -h -f protocol=$protocol mail_plugins 2>/dev/null" | grep -qw chatmail \
            || fail "the chatmail plugin is not in Dovecot's mail_plugins for $protocol"
    done
else
    # Dovecot 2.4: a boolean list, which protocol blocks add to.
    in_root 'doveconf mail_plugins' | grep -qx '  chatmail = yes' || fail "the chatmail plugin is not in Dovecot's mail_plugins"
fi

# chatmail-auth's passdb comes before Debian's PAM one (auth-system.conf.ext):
# PAM fails an address it does not know only after a two-second delay.
first=$(in_root 'doveconf -n 2>/dev/null' | grep -E '^ +driver = (dict|lua|pam)$' | head -n 1 | tr -d ' ')
[ "$first" = driver=dict ] || [ "$first" = driver=lua ] || fail "Dovecot asks $first before chatmail-auth"

# IDLE-ing sessions hibernate (as on chatmail relays), and the inotify
# limits leave room for thousands of them.
in_root 'doveconf -f protocol=imap imap_hibernate_timeout' | grep -qxE 'imap_hibernate_timeout = (30 secs|30s)' \
    || fail "imap_hibernate_timeout is not 30 s"
grep -qx 'fs.inotify.max_user_instances = 65535' "$root/usr/lib/sysctl.d/60-chatmail-relay.conf" \
    || fail "no sysctl.d file raising the inotify limits"
[ "$(cat /proc/sys/fs/inotify/max_user_instances /proc/sys/fs/inotify/max_user_watches)" = "$host_inotify" ] \
    || fail "installing in a chroot changed the host's inotify limits"

# Notifications go to a port where nothing listens (not to Delta Chat's
# real service): each must then wait for its retry, logged.
in_root 'echo "push_notification_url = https://127.0.0.1:9/notify" >> /etc/chatmail/chatmail.ini'

log "TURN: coturn wired to the relay when chatmail.ini sets turn_server"
in_root 'DEBIAN_FRONTEND=noninteractive apt-get install -y -q coturn' >>"$base/install.log" 2>&1 || fail "apt-get install coturn"
# Sizes as chatmail.ini means them (a plain max_mailbox_size is megabytes):
# send-encrypted.py checks that Postfix and Dovecot enforce them.
in_root 'printf "turn_server = 127.0.0.1:3478\nmax_mailbox_size = 5\nmax_message_size = 2M\n" >> /etc/chatmail/chatmail.ini
    DEBIAN_FRONTEND=noninteractive dpkg-reconfigure chatmail-relay' >>"$base/install.log" 2>&1 || fail "dpkg-reconfigure with turn_server and sizes"
[ "$(in_root 'postconf -h message_size_limit')" = 2097152 ] || fail "message_size_limit is not max_message_size in bytes"
if [ "$release" = bookworm ]; then
    in_root 'doveconf -h plugin/quota_rule' | grep -qx '\*:storage=5242880B' || fail "quota_rule is not max_mailbox_size in bytes"
else
    in_root 'doveconf quota_storage_size' | grep -qx 'quota_storage_size = 5242880B' || fail "quota_storage_size is not max_mailbox_size in bytes"
fi
[ "$(in_root 'stat -c "%U:%G %a" /etc/chatmail/turn-secret')" = "root:vmail 640" ] || fail "no TURN secret readable by vmail only"
in_root 'grep -qx "static-auth-secret=$(head -n 1 /etc/chatmail/turn-secret)" /etc/chatmail/turnserver.conf
    grep -qx use-auth-secret /etc/chatmail/turnserver.conf
    grep -qx "listening-port=3478" /etc/chatmail/turnserver.conf' || fail "coturn's settings do not carry the relay's secret and port"
[ "$(in_root 'stat -c "%U:%G %a" /etc/chatmail/turnserver.conf')" = "root:turnserver 640" ] || fail "turnserver.conf not readable by coturn only"
in_root 'grep -q "^ExecStart=/usr/bin/turnserver -c /etc/chatmail/turnserver.conf" /etc/systemd/system/coturn.service.d/chatmail.conf' \
    || fail "coturn's unit does not run with the relay's settings"

log "starting the daemons as their units would"
cat > "$root/root/start-relay.sh" <<'EOF'
#!/bin/sh
set -e
INI=/etc/chatmail/chatmail.ini
install -d -o vmail -g vmail -m 0755 /run/chatmail-auth
/usr/sbin/chatmail-auth --config $INI --socket /run/chatmail-auth/auth.sock --socket-group dovecot \
    --mail-user vmail >/var/log/chatmail-auth.log 2>&1 </dev/null &
echo $! > /run/test-install-chatmail-auth.pid
install -d -o vmail -g vmail -m 0755 /run/chatmail-metadata
setpriv --reuid vmail --regid vmail --clear-groups --no-new-privs \
    /usr/sbin/chatmail-metadata --config $INI --socket /run/chatmail-metadata/metadata.sock \
    --mail-user vmail >/var/log/chatmail-metadata.log 2>&1 </dev/null &
echo $! > /run/test-install-chatmail-metadata.pid
install -d -o chatmail-milter -g postfix -m 0750 /var/spool/postfix/chatmail-milter
setpriv --reuid chatmail-milter --regid chatmail-milter --groups postfix,vmail --no-new-privs \
    /usr/sbin/chatmail-milter --config $INI \
    --socket unix:/var/spool/postfix/chatmail-milter/milter.sock \
    --local-socket unix:/var/spool/postfix/chatmail-milter/local.sock >/var/log/chatmail-milter.log 2>&1 </dev/null &
# setpriv execs the milter: the same process.
echo $! > /run/test-install-chatmail-milter.pid
for i in $(seq 50); do
    [ -S /run/chatmail-auth/auth.sock ] && [ -S /var/spool/postfix/chatmail-milter/milter.sock ] \
        && [ -S /run/chatmail-metadata/metadata.sock ] && break
    sleep 0.1
done
# coturn as its unit (with the relay's drop-in) would run it.
setpriv --reuid turnserver --regid turnserver --clear-groups --no-new-privs \
    /usr/bin/turnserver -c /etc/chatmail/turnserver.conf --pidfile= >/var/log/turnserver.log 2>&1 </dev/null &
echo $! > /run/test-install-turnserver.pid
dovecot
postfix start >/dev/null 2>&1
EOF
chmod 755 "$root/root/start-relay.sh"
in_root /root/start-relay.sh >/dev/null 2>&1 || fail "starting the daemons"
sleep 1

log "encrypted messages A→B through the installed relay, B waiting in IDLE"
python3 packaging/send-encrypted.py "$domain" --turn --limits "$root/var/spool/postfix/private/dovecot-lmtp" || {
    in_root 'doveadm log errors; cat /var/log/chatmail-milter.log /var/log/chatmail-auth.log /var/log/chatmail-metadata.log' >&2 || true
    fail "message A→B"
}

log "push: B's device token stored in chatmail's form, a notification queued for A's messages"
in_root 'cat /home/vmail/mail/*/*/metadata.json' | grep -q '"openpgp:package-test"' || fail "no device token in metadata.json"
for i in $(seq 50); do
    grep -q 'op=push .*result=retry' "$root/var/log/chatmail-metadata.log" && break
    sleep 0.1
done
grep -q 'op=push .*result=retry' "$root/var/log/chatmail-metadata.log" || {
    cat "$root/var/log/chatmail-metadata.log" >&2
    fail "no push notification tried"
}
[ "$(ls "$root/var/spool/chatmail-push/queue" | wc -l)" = 1 ] || fail "not one queued notification for B's device"

log "metrics: each daemon's file in metrics_dir (the milter's through the vmail group), shown by chatmail-relay metrics"
in_root 'test "$(stat -c %U:%G:%a /var/lib/chatmail-relay/metrics)" = vmail:vmail:2775' || fail "metrics_dir not made by postinst"
metrics_seen() {
    in_root 'chatmail-relay metrics' > "$base/metrics.txt" 2>&1 || return 1
    grep -q '^chatmail_milter_messages_total{direction="outgoing",decision="accept",reason="encrypted"} [1-9]' "$base/metrics.txt" \
        && grep -q '^chatmail_accounts_created_total [1-9]' "$base/metrics.txt" \
        && grep -q '^chatmail_push_notifications_total{result="retry"} [1-9]' "$base/metrics.txt"
}
for i in $(seq 150); do
    metrics_seen && break
    sleep 0.1
done
metrics_seen || { cat "$base/metrics.txt" >&2; fail "chatmail-relay metrics lacks the messages, accounts or push tries"; }

log "chatmail-relay check --only wiring: the milter in Postfix, the plugin in Dovecot, the daemons answering"
in_root 'chatmail-relay check --only wiring' > "$base/check.txt" 2>&1 || { cat "$base/check.txt" >&2; fail "chatmail-relay check --only wiring"; }
grep -q '^ok   Dovecot mail_plugins: loads chatmail' "$base/check.txt" || { cat "$base/check.txt" >&2; fail "check did not see the plugin"; }
grep -q '^ok   chatmail-milter /var/spool/postfix/chatmail-milter/milter.sock: answers' "$base/check.txt" || { cat "$base/check.txt" >&2; fail "check did not reach the milter"; }

# The bot daemon's unit runs as vmail with the group postdrop (for the
# submission service chatmail-postfix-wiring adds to master.cf); its state
# directory is the unit's StateDirectory.
log "chatmail-bots check, as its unit would run (vmail, group postdrop)"
in_root 'install -d -o vmail -g vmail -m 0700 /var/lib/chatmail-bots
    setpriv --reuid vmail --regid vmail --groups postdrop --no-new-privs \
        /usr/sbin/chatmail-bots --config /etc/chatmail/chatmail.ini check' > "$base/bots-check.log" 2>&1 || {
    cat "$base/bots-check.log" >&2
    fail "chatmail-bots check"
}
in_root 'postconf -M chatmail-bots/unix' | grep -q 'syslog_name=postfix/chatmail-bots' || fail "no chatmail-bots service in master.cf"

log "reinstall keeps an edit to chatmail.ini"
in_root 'echo "max_user_send_per_minute = 30" >> /etc/chatmail/chatmail.ini'
in_root 'DEBIAN_FRONTEND=noninteractive apt-get install -y -q --reinstall chatmail-relay' >>"$base/install.log" 2>&1 \
    || fail "reinstall (log: $base/install.log)"
in_root 'grep -qx "max_user_send_per_minute = 30" /etc/chatmail/chatmail.ini' || fail "the edit to chatmail.ini was lost"

stop_relay

log "remove: no milter left in main.cf, Postfix's settings as before"
in_root 'DEBIAN_FRONTEND=noninteractive apt-get remove -y -q chatmail-relay' >>"$base/install.log" 2>&1 || fail "remove"
in_root 'postconf -n' > "$base/main.cf.after"
in_root 'postconf -M' | grep -q chatmail- && fail "chatmail services left in master.cf"
diff -u "$base/main.cf.before" "$base/main.cf.after" || fail "main.cf differs from before the install"
for f in 90-chatmail.conf 05-chatmail-auth.conf; do [ -e "$root/etc/dovecot/conf.d/$f" ] && fail "Dovecot snippet $f left after remove"; done
for path in /etc/chatmail/turnserver.conf /etc/systemd/system/coturn.service.d; do
    [ -e "$root$path" ] && fail "$path left after remove"
done

log "purge: no files left"
in_root 'DEBIAN_FRONTEND=noninteractive apt-get purge -y -q chatmail-relay chatmail-bots dovecot-chatmail chatmail-milter' \
    >>"$base/install.log" 2>&1 || fail "purge"
for path in /etc/chatmail /etc/chatmail/turn-secret /var/lib/chatmail-relay /etc/dkimkeys/opendkim.private /etc/dovecot/chatmail-auth.conf.ext \
    /usr/lib/dovecot/modules/lib90_chatmail_plugin.so /usr/lib/dovecot/modules/settings/libchatmail_settings.so \
    /usr/share/dovecot-chatmail /etc/dovecot/conf.d/05-chatmail-auth.conf /var/spool/postfix/chatmail-milter \
    /var/lib/chatmail-bots /var/spool/chatmail-bots /var/spool/chatmail-push /usr/lib/sysctl.d/60-chatmail-relay.conf; do
    [ -e "$root$path" ] && fail "$path left after purge"
done
in_root 'getent passwd chatmail-milter' >/dev/null && fail "user chatmail-milter left after purge"
for pid in $decoys; do
    kill -0 "$pid" 2>/dev/null || fail "a process outside the test root named like a relay daemon (pid $pid) was ended"
done
stop_decoys
log "ok"
